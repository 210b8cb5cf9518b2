#!/usr/bin/env node
// Entry point: the TypeScript sources, from a bundle of them when it is up to date (made by
// esbuild on the first command after an edit; it starts ~0.5 s sooner), else through tsx.
// Either way there is no build step to forget (scripts/bundle.mjs).
// TensorFlow's C++ start-up chatter (oneDNN, CPU feature notes) is silenced unless asked for:
// TF_CPP_MIN_LOG_LEVEL for what TensorFlow logs itself, and src/tfjs/tf.ts for the lines
// abseil writes while the library loads; --verbose shows both.
const verbose = process.argv.slice(2).some((arg) => arg === '--verbose' || /^-[a-z]*v[a-z]*$/.test(arg));
process.env.TF_CPP_MIN_LOG_LEVEL ??= verbose ? '0' : '2';
if (verbose) process.env.TLX_TENSORFLOW_STARTUP_LOG ??= 'show';
const { freshBundle } = await import('../scripts/bundle.mjs');
const bundle = await freshBundle();
// A stack trace (--verbose) points into the sources, through the bundle's source map.
if (bundle && verbose) process.setSourceMapsEnabled(true);
let main;
if (bundle) ({ main } = await import(bundle));
else {
  const { register } = await import('tsx/esm/api');
  register();
  ({ main } = await import('../src/cli.ts'));
}
process.exitCode = await main(process.argv.slice(2));
