#!/usr/bin/env node
// Entry point: runs the TypeScript sources through tsx (no build step to forget).
// TensorFlow's C++ start-up chatter (oneDNN, CPU feature notes) is silenced unless asked for:
// TF_CPP_MIN_LOG_LEVEL for what TensorFlow logs itself, and src/tfjs/tf.ts for the lines
// abseil writes while the library loads; --verbose shows both.
const verbose = process.argv.slice(2).some((arg) => arg === '--verbose' || /^-[a-z]*v[a-z]*$/.test(arg));
process.env.TF_CPP_MIN_LOG_LEVEL ??= verbose ? '0' : '2';
if (verbose) process.env.TLX_TENSORFLOW_STARTUP_LOG ??= 'show';
const { register } = await import('tsx/esm/api');
register();
const { main } = await import('../src/cli.ts');
process.exitCode = await main(process.argv.slice(2));
