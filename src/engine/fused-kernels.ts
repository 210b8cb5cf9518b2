import type { Tensor1D, Tensor2D, Tensor4D } from '@tensorflow/tfjs-node';
import { PreferredKernel, runOp, runOpMulti, tlxOpsAvailable, type OpAttr } from '../tfjs/native-ops.ts';
import { tf } from '../tfjs/tf.ts';

/**
 * Convolution + bias (+ ReLU, ReLU6, hard-swish or swish) as one native kernel, the way TensorFlow's graph optimizer
 * (grappler's remapper) runs a Keras model once BatchNormalization is folded into the
 * weights: the bias and the clamp are applied as each output tile is written, instead of
 * two more passes over a large activation. Inference only (no gradient).
 */

/** The activation a fused kernel applies after the bias, if any. */
export type FusedActivation = 'Relu' | 'Relu6' | 'HardSwish' | 'Swish';

/** oneDNN's names for the activations only its fused kernels take (MobileNetV3's and EfficientNet's). */
const oneDnnActivation: Partial<Record<FusedActivation, string>> = { HardSwish: '_FusedHardSwish', Swish: '_MklSwish' };

/** The activation as a kernel of its own (for kernels that cannot fuse it): tlx's one-pass kernel, else TensorFlow's ops. */
function activate(y: Tensor4D, activation: FusedActivation | undefined): Tensor4D {
  if (!activation) return y;
  if ((activation === 'HardSwish' || activation === 'Swish') && tlxOpsAvailable())
    return runOp(activation === 'HardSwish' ? 'TlxHardSwish' : 'TlxSwish', [], [y]) as Tensor4D;
  if (activation === 'HardSwish') return tf.tidy(() => y.mul(tf.clipByValue(y.add(3), 0, 6)).mul(1 / 6)) as Tensor4D;
  if (activation === 'Swish') return tf.tidy(() => y.mul(tf.sigmoid(y))) as Tensor4D;
  return runOp(activation, [{ name: 'T', kind: 'type', value: 'float32' }], [y]) as Tensor4D;
}

/** y with an activation its kernel could not fuse, as a kernel of its own (y disposed); y itself without one. */
function activateUnfused(y: Tensor4D, activation: FusedActivation | undefined): Tensor4D {
  if (!activation) return y;
  const activated = activate(y, activation);
  y.dispose();
  return activated;
}

export interface FusedConvOptions {
  strides: [number, number];
  padding: 'SAME' | 'VALID';
  activation?: FusedActivation;
}

function commonAttrs(
  options: FusedConvOptions,
  fusedOps = options.activation ? ['BiasAdd', oneDnnActivation[options.activation] ?? options.activation] : ['BiasAdd'],
): OpAttr[] {
  return [
    { name: 'T', kind: 'type', value: 'float32' },
    { name: 'num_args', kind: 'int', value: fusedOps.includes('Add') ? 2 : 1 },
    { name: 'strides', kind: 'int', value: [1, options.strides[0], options.strides[1], 1] },
    { name: 'padding', kind: 'string', value: options.padding },
    { name: 'data_format', kind: 'string', value: 'NHWC' },
    { name: 'dilations', kind: 'int', value: [1, 1, 1, 1] },
    { name: 'fused_ops', kind: 'string', value: fusedOps },
    { name: 'epsilon', kind: 'float', value: 1e-4 },
    { name: 'leakyrelu_alpha', kind: 'float', value: 0.2 },
  ];
}

/** A fused conv's attributes beyond commonAttrs', for `args` arguments after the filter (the bias, a residual). */
function conv2dAttrs(args: number): OpAttr[] {
  return [
    { name: 'TArgs', kind: 'type', value: Array.from({ length: args }, () => 'float32' as const) },
    { name: 'num_host_args', kind: 'int', value: 0 },
    { name: 'filter_format', kind: 'string', value: 'HWIO' },
    { name: 'explicit_paddings', kind: 'int', value: [] },
    { name: 'use_cudnn_on_gpu', kind: 'bool', value: true },
  ];
}

/** oneDNN's conv kernel: the one grappler gives a Keras model, and the only one that fuses hard-swish and swish. */
const oneDnnConv = new PreferredKernel('oneDNN fused conv');

/** TensorFlow's own _FusedConv2D (ReLU and ReLU6 fused, hard-swish and swish as kernels of their own): for a build without oneDNN. */
export function eigenFusedConv2d(x: Tensor4D, filter: Tensor4D, bias: Tensor1D, options: FusedConvOptions): Tensor4D {
  const fusable = !options.activation || !oneDnnActivation[options.activation];
  const y = runOp(
    '_FusedConv2D',
    [...commonAttrs(options, fusable ? undefined : ['BiasAdd']), ...conv2dAttrs(1)],
    [x, filter, bias],
  ) as Tensor4D;
  return activateUnfused(y, fusable ? undefined : options.activation);
}

/**
 * Conv2D, filter [h, w, in, out], bias [out]: oneDNN's fused kernel, as grappler runs a Keras
 * model. Eager execution rewrites a plain Conv2D to oneDNN but not _FusedConv2D, whose own CPU
 * kernel took 2.5x as long on MobileNetV2's stem (3 input channels, stride 2) and 5-30% longer
 * on most of its pointwise convs (Intel AVX-512, stop 47).
 *
 * With `residual` (a linear conv only), the result is conv + bias + residual: oneDNN adds a
 * residual connection's shortcut as it writes the output (fused_ops BiasAdd, Add, as grappler
 * fuses a Keras model's), the same float sums as a separate Add, one pass over the activation
 * fewer. The residual tensor is read, not overwritten.
 */
export function fusedConv2d(
  x: Tensor4D,
  filter: Tensor4D,
  bias: Tensor1D,
  options: FusedConvOptions,
  residual?: Tensor4D,
): Tensor4D {
  if (residual && options.activation)
    throw new Error(`fusedConv2d: a residual joins a linear conv only, not one with ${options.activation}`);
  return oneDnnConv.run(
    () =>
      runOp(
        '_MklNativeFusedConv2D',
        [
          ...commonAttrs(options, residual ? ['BiasAdd', 'Add'] : undefined),
          ...conv2dAttrs(residual ? 2 : 1),
          { name: 'is_filter_const', kind: 'bool', value: false },
          { name: '_kernel', kind: 'string', value: 'MklNameChangeOp' },
        ],
        residual ? [x, filter, bias, residual] : [x, filter, bias],
      ) as Tensor4D,
    () => {
      const y = eigenFusedConv2d(x, filter, bias, options);
      if (!residual) return y;
      const sum = tf.add(y, residual) as Tensor4D;
      y.dispose();
      return sum;
    },
  );
}

/**
 * The fused depthwise kernel exists on CPU only as oneDNN's; its registration carries the
 * label MklNameChangeOp, so the op is asked for by that label. It is there in the x86 wheels
 * (even with TF_ENABLE_ONEDNN_OPTS=0); on a build without it, depthwise + BiasAdd + Relu6
 * run instead.
 */
const oneDnnDepthwise = new PreferredKernel('oneDNN fused depthwise conv');

function nativeFusedDepthwise(x: Tensor4D, filter: Tensor4D, bias: Tensor1D, options: FusedConvOptions): Tensor4D {
  // oneDNN's depthwise kernel fuses hard-swish but not swish: swish then runs as its own ops.
  const fusable = options.activation !== 'Swish';
  const y = runOp(
    '_MklNativeFusedDepthwiseConv2dNative',
    [
      ...commonAttrs(fusable ? options : { ...options, activation: undefined }),
      { name: 'is_filter_const', kind: 'bool', value: false },
      { name: '_kernel', kind: 'string', value: 'MklNameChangeOp' },
    ],
    [x, filter, bias],
  ) as Tensor4D;
  return activateUnfused(y, fusable ? undefined : options.activation);
}

export function unfusedDepthwise(x: Tensor4D, filter: Tensor4D, bias: Tensor1D, options: FusedConvOptions): Tensor4D {
  return tf.tidy(() => {
    const y = tf
      .depthwiseConv2d(x, filter, options.strides, options.padding === 'SAME' ? 'same' : 'valid')
      .add(bias) as Tensor4D;
    return activate(y, options.activation);
  });
}

/** Depthwise conv, filter [h, w, in, multiplier], bias [in * multiplier]. */
export function fusedDepthwiseConv2d(
  x: Tensor4D,
  filter: Tensor4D,
  bias: Tensor1D,
  options: FusedConvOptions,
): Tensor4D {
  return oneDnnDepthwise.run(
    () => nativeFusedDepthwise(x, filter, bias, options),
    () => unfusedDepthwise(x, filter, bias, options),
  );
}

/**
 * Depthwise conv + bias + swish, and each image's mean of the result per channel ([images,
 * channels]): EfficientNet's squeeze-excite pools the swish output right after, and tlx's
 * kernel takes the means in the same pass as swish instead of another read of it.
 */
export function fusedDepthwiseSwishMean(
  x: Tensor4D,
  filter: Tensor4D,
  bias: Tensor1D,
  options: FusedConvOptions,
): [Tensor4D, Tensor2D] {
  if (!tlxOpsAvailable()) {
    const y = fusedDepthwiseConv2d(x, filter, bias, { ...options, activation: 'Swish' });
    return [y, tf.mean(y, [1, 2]) as Tensor2D];
  }
  const linear = fusedDepthwiseConv2d(x, filter, bias, { ...options, activation: undefined });
  const [y, mean] = runOpMulti('TlxSwishMean', [], [linear], 2);
  linear.dispose();
  return [y as Tensor4D, mean as Tensor2D];
}
