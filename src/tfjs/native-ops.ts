import fs from 'node:fs';
import path from 'node:path';
import type { Tensor } from '@tensorflow/tfjs-node';
import { projectRoot } from '../core/project.ts';
import { nativeBackend } from './internals.ts';
import { tf } from './tf.ts';

/**
 * TensorFlow ops that tfjs has no kernel for (or whose tfjs gradient or wrapper is slow), run
 * by name on the native backend: the same kernels Keras uses. List attributes need the
 * binding patch in patches/ (applied at install).
 */
type DType = 'float32' | 'int32' | 'bool' | 'uint8';

/** An op attribute; lists (list(string), list(int), list(type)) take arrays. */
export type OpAttr =
  | { name: string; kind: 'string'; value: string | string[] }
  | { name: string; kind: 'int'; value: number | number[] }
  | { name: string; kind: 'float'; value: number }
  | { name: string; kind: 'bool'; value: boolean }
  | { name: string; kind: 'type'; value: DType | DType[] }
  | { name: string; kind: 'shape'; value: number[] };

function toBindingAttrs(attrs: readonly OpAttr[]): unknown[] {
  const b = nativeBackend().binding;
  const dtypes = { float32: b.TF_FLOAT, int32: b.TF_INT32, bool: b.TF_BOOL, uint8: b.TF_UINT8 };
  return attrs.map((attr) => {
    switch (attr.kind) {
      case 'string':
        return { name: attr.name, type: b.TF_ATTR_STRING, value: attr.value };
      case 'int':
        return { name: attr.name, type: b.TF_ATTR_INT, value: attr.value };
      case 'float':
        return { name: attr.name, type: b.TF_ATTR_FLOAT, value: attr.value };
      case 'bool':
        return { name: attr.name, type: b.TF_ATTR_BOOL, value: attr.value };
      case 'type':
        return {
          name: attr.name,
          type: b.TF_ATTR_TYPE,
          value: Array.isArray(attr.value) ? attr.value.map((t) => dtypes[t]) : dtypes[attr.value],
        };
      case 'shape':
        return { name: attr.name, type: b.TF_ATTR_SHAPE, value: attr.value };
    }
  });
}

export function runOp(name: string, attrs: readonly OpAttr[], inputs: Tensor[]): Tensor {
  return nativeBackend().executeSingleOutput(name, toBindingAttrs(attrs), inputs);
}

export function runOpMulti(name: string, attrs: readonly OpAttr[], inputs: Tensor[], outputs: number): Tensor[] {
  return nativeBackend().executeMultipleOutputs(name, toBindingAttrs(attrs), inputs, outputs);
}

/** tlx's own kernels (native/tlx_ops.cc), compiled for this machine by scripts/setup.mjs. */
const tlxOpLibrary = path.join(projectRoot, 'native', 'build', 'tlx_ops.so');

let tlxOpsLoaded: boolean | undefined;

/**
 * Whether tlx's own kernels (TlxHardSwish, TlxSwish and their gradients) can run: the library
 * is loaded on the first call. Without it (an install that skipped the compile) the same
 * functions run as several TensorFlow ops; a library that exists but does not load is an
 * install to repair, so that fails loudly.
 */
export function tlxOpsAvailable(): boolean {
  if (tlxOpsLoaded !== undefined) return tlxOpsLoaded;
  const load = nativeBackend().binding.loadOpLibrary;
  tlxOpsLoaded = false;
  if (!load || !fs.existsSync(tlxOpLibrary)) return false;
  try {
    load(tlxOpLibrary);
  } catch (error) {
    throw new Error(
      `${tlxOpLibrary} does not load (${error instanceof Error ? error.message : String(error)}); rebuild it with \`node scripts/setup.mjs\``,
    );
  }
  tlxOpsLoaded = true;
  return true;
}

/**
 * A kernel with a fallback: oneDNN's kernels are asked for by their registration label and
 * may be missing from a build. Whether the preferred one exists is learnt from its first call;
 * once it has run, an error from it is a real error, not a missing kernel.
 */
export class PreferredKernel {
  private static readonly all: PreferredKernel[] = [];
  private available: boolean | undefined;

  constructor(readonly name: string) {
    PreferredKernel.all.push(this);
  }

  /** Each preferred kernel by name (and tlx's own, native/build/tlx_ops.so): true when it runs here, false when its fallback does, undefined before its first call. */
  static report(): Record<string, boolean | undefined> {
    return {
      ...Object.fromEntries(PreferredKernel.all.map((kernel) => [kernel.name, kernel.available])),
      "tlx's kernels (native/build/tlx_ops.so; node scripts/setup.mjs builds them)": tlxOpsLoaded,
    };
  }

  run<T>(preferred: () => T, fallback: () => T): T {
    if (this.available !== false) {
      try {
        const result = preferred();
        this.available = true;
        return result;
      } catch (error) {
        if (this.available) throw error;
        this.available = false;
      }
    }
    return fallback();
  }
}

/** The DecodeJpeg attributes tfjs's `tf.node.decodeImage(bytes, 3)` passes. */
const decodeJpegAttrs: readonly OpAttr[] = [
  { name: 'channels', kind: 'int', value: 3 },
  { name: 'ratio', kind: 'int', value: 1 },
  { name: 'fancy_upscaling', kind: 'bool', value: true },
  { name: 'try_recover_truncated', kind: 'bool', value: false },
  { name: 'acceptable_fraction', kind: 'float', value: 1 },
  { name: 'dct_method', kind: 'string', value: '' },
];

/**
 * JPEG bytes decoded to RGB as tfjs's `tf.node.decodeImage(bytes, 3)` decodes them, but
 * without its cast to int32 (a full copy of the pixels: a quarter of the decode time at
 * 320x320). The tensor holds TensorFlow uint8, which tfjs labels int32: ops take it as it
 * is, but tfjs cannot read it (`dataSync` fails).
 */
export function decodeJpegUint8(bytes: Uint8Array): Tensor {
  const contents = tf.scalar(bytes, 'string');
  try {
    return runOp('DecodeJpeg', decodeJpegAttrs, [contents]);
  } finally {
    contents.dispose();
  }
}

/**
 * TensorFlow's MatMul kernel on 2-D operands. tf.matMul runs BatchMatMulV2 (batched, any rank)
 * between reshapes: 2-6x slower on the small products of squeeze-excite convs and the head
 * (32 x 576 x 144: 0.24 against 0.11 ms), and the largest kernel of a whole-model step when
 * the 1x1 convs' gradients ran through it.
 */
export function matMul2d(a: Tensor, b: Tensor, transposeA = false, transposeB = false): Tensor {
  return runOp(
    'MatMul',
    [
      { name: 'T', kind: 'type', value: 'float32' },
      { name: 'transpose_a', kind: 'bool', value: transposeA },
      { name: 'transpose_b', kind: 'bool', value: transposeB },
    ],
    [a, b],
  );
}

/**
 * a [m, k] x b [k, n] + bias [n], then an activation TensorFlow's _FusedMatMul applies as it
 * writes (Relu, Relu6, Sigmoid, ...): one kernel, equal to the last bit to MatMul, BiasAdd and
 * the activation's op. No gradient: off the tape, or inside an op that defines its own.
 */
export function fusedMatMul2d(a: Tensor, b: Tensor, bias: Tensor, activation?: 'Relu' | 'Relu6' | 'Sigmoid'): Tensor {
  return runOp(
    '_FusedMatMul',
    [
      { name: 'T', kind: 'type', value: 'float32' },
      { name: 'transpose_a', kind: 'bool', value: false },
      { name: 'transpose_b', kind: 'bool', value: false },
      { name: 'num_args', kind: 'int', value: 1 },
      { name: 'fused_ops', kind: 'string', value: activation ? ['BiasAdd', activation] : ['BiasAdd'] },
      { name: 'epsilon', kind: 'float', value: 1e-4 },
      { name: 'leakyrelu_alpha', kind: 'float', value: 0.2 },
    ],
    [a, b, bias],
  );
}
