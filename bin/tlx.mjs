#!/usr/bin/env node
// Entry point: runs the TypeScript sources through tsx (no build step to forget).
// TensorFlow's C++ start-up chatter (oneDNN, CPU feature notes) is silenced unless asked for.
process.env.TF_CPP_MIN_LOG_LEVEL ??= '2';
const { register } = await import('tsx/esm/api');
register();
const { main } = await import('../src/cli.ts');
process.exitCode = await main(process.argv.slice(2));
