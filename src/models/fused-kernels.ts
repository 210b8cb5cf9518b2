import type { Tensor1D, Tensor4D } from '@tensorflow/tfjs-node';
import { runOp, type OpAttr } from '../tfjs/native-ops.ts';
import { tf } from '../tfjs/tf.ts';

/**
 * Convolution + bias (+ ReLU or ReLU6) as one native kernel, the way TensorFlow's graph optimizer
 * (grappler's remapper) runs a Keras model once BatchNormalization is folded into the
 * weights: the bias and the clamp are applied as each output tile is written, instead of
 * two more passes over a large activation. Inference only (no gradient).
 */

/** The activation a fused kernel applies after the bias, if any. */
export type FusedActivation = 'Relu' | 'Relu6';

export interface FusedConvOptions {
  strides: [number, number];
  padding: 'SAME' | 'VALID';
  activation?: FusedActivation;
}

function commonAttrs(options: FusedConvOptions): OpAttr[] {
  return [
    { name: 'T', kind: 'type', value: 'float32' },
    { name: 'num_args', kind: 'int', value: 1 },
    { name: 'strides', kind: 'int', value: [1, options.strides[0], options.strides[1], 1] },
    { name: 'padding', kind: 'string', value: options.padding },
    { name: 'data_format', kind: 'string', value: 'NHWC' },
    { name: 'dilations', kind: 'int', value: [1, 1, 1, 1] },
    { name: 'fused_ops', kind: 'string', value: options.activation ? ['BiasAdd', options.activation] : ['BiasAdd'] },
    { name: 'epsilon', kind: 'float', value: 1e-4 },
    { name: 'leakyrelu_alpha', kind: 'float', value: 0.2 },
  ];
}

/** _FusedConv2D: filter [h, w, in, out], bias [out]. */
export function fusedConv2d(x: Tensor4D, filter: Tensor4D, bias: Tensor1D, options: FusedConvOptions): Tensor4D {
  return runOp(
    '_FusedConv2D',
    [
      ...commonAttrs(options),
      { name: 'TArgs', kind: 'type', value: ['float32'] },
      { name: 'num_host_args', kind: 'int', value: 0 },
      { name: 'filter_format', kind: 'string', value: 'HWIO' },
      { name: 'explicit_paddings', kind: 'int', value: [] },
      { name: 'use_cudnn_on_gpu', kind: 'bool', value: true },
    ],
    [x, filter, bias],
  ) as Tensor4D;
}

/**
 * The fused depthwise kernel exists on CPU only as oneDNN's; its registration carries the
 * label MklNameChangeOp, so the op is asked for by that label. It is there in the x86 wheels
 * (even with TF_ENABLE_ONEDNN_OPTS=0); on a build without it, depthwise + BiasAdd + Relu6
 * run instead.
 */
let fusedDepthwiseAvailable: boolean | undefined;

function nativeFusedDepthwise(x: Tensor4D, filter: Tensor4D, bias: Tensor1D, options: FusedConvOptions): Tensor4D {
  return runOp(
    '_MklNativeFusedDepthwiseConv2dNative',
    [...commonAttrs(options), { name: 'is_filter_const', kind: 'bool', value: false }, { name: '_kernel', kind: 'string', value: 'MklNameChangeOp' }],
    [x, filter, bias],
  ) as Tensor4D;
}

export function unfusedDepthwise(x: Tensor4D, filter: Tensor4D, bias: Tensor1D, options: FusedConvOptions): Tensor4D {
  return tf.tidy(() => {
    const y = tf.depthwiseConv2d(x, filter, options.strides, options.padding === 'SAME' ? 'same' : 'valid').add(bias) as Tensor4D;
    return options.activation ? (runOp(options.activation, [{ name: 'T', kind: 'type', value: 'float32' }], [y]) as Tensor4D) : y;
  });
}

/** Whether depthwise convs run as one kernel (undefined until the first one ran). */
export function depthwiseRunsFused(): boolean | undefined {
  return fusedDepthwiseAvailable;
}

/** Depthwise conv, filter [h, w, in, multiplier], bias [in * multiplier]. */
export function fusedDepthwiseConv2d(x: Tensor4D, filter: Tensor4D, bias: Tensor1D, options: FusedConvOptions): Tensor4D {
  if (fusedDepthwiseAvailable !== false) {
    try {
      const y = nativeFusedDepthwise(x, filter, bias, options);
      fusedDepthwiseAvailable = true;
      return y;
    } catch (error) {
      if (fusedDepthwiseAvailable) throw error;
      fusedDepthwiseAvailable = false;
    }
  }
  return unfusedDepthwise(x, filter, bias, options);
}
