// A decode thread's entry: worker threads do not inherit the main thread's tsx hooks, so
// each registers them before loading the TypeScript body.
const { register } = await import('tsx/esm/api');
register();
await import('./decode-thread.ts');
