import { nativeBackend } from '../../src/tfjs/internals.ts';

/** The names of the native TensorFlow ops `run` executes, each once, in first-run order. */
export function nativeOpsOf(run: () => void): string[] {
  const backend = nativeBackend();
  const executed = new Set<string>();
  const [single, multiple] = [backend.executeSingleOutput, backend.executeMultipleOutputs];
  backend.executeSingleOutput = (name, ...rest) => (executed.add(name), single.call(backend, name, ...rest));
  backend.executeMultipleOutputs = (name, ...rest) => (executed.add(name), multiple.call(backend, name, ...rest));
  try {
    run();
  } finally {
    [backend.executeSingleOutput, backend.executeMultipleOutputs] = [single, multiple];
  }
  return [...executed];
}
