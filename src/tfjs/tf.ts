import { createRequire } from 'node:module';
import { withStderrCaptured } from './quiet-stderr.ts';

type TensorFlow = typeof import('@tensorflow/tfjs-node');

const repair =
  'The native TensorFlow binding (@tensorflow/tfjs-node) could not be loaded. tlx never falls back to the ' +
  'pure-JS or WASM backends. Repair the install with `node scripts/setup.mjs` (or `npm install`), which ' +
  'builds the binding against the TensorFlow wheel in .venv.';

class NativeBackendError extends Error {
  override name = 'NativeBackendError';
}

function loadNative(): TensorFlow {
  let tf: TensorFlow;
  try {
    // require, not import: a failure here must become a clear message, not a crash at module load.
    const load = () => createRequire(import.meta.url)('@tensorflow/tfjs-node') as TensorFlow;
    // TensorFlow's start-up lines stay off the terminal unless asked for (tlx --verbose).
    if (process.env.TLX_TENSORFLOW_STARTUP_LOG === 'show') tf = load();
    else tf = withStderrCaptured(load).value;
  } catch (error) {
    throw new NativeBackendError(
      `${repair}\nCause: ${error instanceof Error ? error.message.split('\n').slice(0, 12).join('\n') : String(error)}`,
    );
  }
  if (tf.getBackend() !== 'tensorflow') {
    throw new NativeBackendError(
      `${repair}\nCause: the active backend is '${tf.getBackend()}', expected 'tensorflow'.`,
    );
  }
  return tf;
}

/** TensorFlow.js on the native TensorFlow backend; importing this module fails loudly otherwise. */
export const tf: TensorFlow = loadNative();
