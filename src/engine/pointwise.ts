import type { Tensor, Tensor4D } from '@tensorflow/tfjs-node';
import { single, type GradSave } from '../models/activations.ts';
import { fusedMatMul2d, matMul2d, runOp, tlxOpsAvailable } from '../tfjs/native-ops.ts';
import { tf } from '../tfjs/tf.ts';
import type { Layer } from './graph.ts';

/**
 * A 1x1, stride-1 Conv2D is a matrix product over the pixels: [N*H*W, in] x [in, out].
 * Taped as one, its gradients are two more matrix products. TensorFlow's CPU kernels run
 * those about twice as fast as Conv2DBackpropInput / Conv2DBackpropFilter run the same
 * shapes, and 1x1 convs carry most of a MobileNet's or EfficientNet's weights (measured by
 * the steps case of bench/compare.ts). The result is the convolution's, up to the order of
 * float sums.
 *
 * Off the tape (inference, the frozen stage) the bias and a ReLU or sigmoid join the product in
 * one _FusedMatMul: a squeeze-excite's convs (EfficientNet's carry swish and sigmoid) on
 * [images, 1, 1, channels] were Conv2D + BiasAdd + activation ops of a few microseconds' work each.
 * A Dense layer on [batch, features] (the classifier's head) is the same product.
 */

const pointwise = new WeakMap<Layer, boolean>();

/** The activations a pointwise conv may carry; _FusedMatMul fuses ReLU and sigmoid (to the last bit). */
const activations = new Set(['linear', 'relu', 'sigmoid', 'swish']);
const matMulActivation: Record<string, 'Relu' | 'Sigmoid'> = { relu: 'Relu', sigmoid: 'Sigmoid' };

function activationOf(layer: Layer): string {
  return (layer.getConfig().activation as string | undefined) ?? 'linear';
}

/** A Conv2D with a 1x1 kernel, stride 1, no dilation, channels last, and no activation or ReLU, sigmoid or swish. */
export function isPointwiseConv(layer: Layer): boolean {
  let known = pointwise.get(layer);
  if (known === undefined) {
    known = false;
    if (layer.getClassName() === 'Conv2D') {
      const config = layer.getConfig();
      const ones = (value: unknown) => [value].flat().every((v) => v === 1);
      known =
        config.dataFormat === 'channelsLast' &&
        ones(config.kernelSize) &&
        ones(config.strides) &&
        ones(config.dilationRate) &&
        activations.has(activationOf(layer));
    }
    pointwise.set(layer, known);
  }
  return known;
}

/** a [m, k] x b [k, n] on TensorFlow's MatMul kernel, taped: its gradients are two more. */
const tapedMatMul = tf.customGrad((...args: (Tensor | GradSave)[]) => {
  const [a, b] = args as [Tensor, Tensor];
  (args[2] as GradSave)([a, b]);
  return {
    value: matMul2d(a, b),
    gradFunc: (dy: Tensor | Tensor[], [savedA, savedB]: Tensor[]) => {
      const d = single(dy);
      return [matMul2d(d, savedB, false, true), matMul2d(savedA, d, true, false)];
    },
  };
}) as (a: Tensor, b: Tensor) => Tensor;

/** The layer's own activation function (tfjs-layers' for its config): differentiable ops. */
function layerActivation(layer: Layer, x: Tensor): Tensor {
  return (layer as unknown as { activation: { apply(x: Tensor): Tensor } }).activation.apply(x);
}

/** bias + x [m, k] x kernel [k, n], with the layer's activation, off the tape: one _FusedMatMul (+ swish's own kernel). */
function fusedProduct(layer: Layer, x: Tensor, kernel: Tensor, bias: Tensor): Tensor {
  const activation = activationOf(layer);
  const y = fusedMatMul2d(x, kernel, bias, matMulActivation[activation]);
  if (activation !== 'swish') return y;
  return tlxOpsAvailable() ? runOp('TlxSwish', [], [y]) : layerActivation(layer, y);
}

/**
 * bias + x [m, k] x kernel [k, n] with the layer's activation: taped like the layer, or
 * (`onTape` false, with a bias) as one fused kernel.
 */
function layerProduct(layer: Layer, x: Tensor, kernel: Tensor, bias: Tensor | undefined, onTape: boolean): Tensor {
  if (!onTape && bias) return fusedProduct(layer, x, kernel, bias);
  const product = tapedMatMul(x, kernel);
  const biased = bias ? product.add(bias) : product;
  return activationOf(layer) === 'linear' ? biased : layerActivation(layer, biased);
}

/** The layer's output for x, as a matrix product on its own kernel (and bias) variables. */
export function applyPointwiseConv(layer: Layer, x: Tensor4D, onTape: boolean): Tensor4D {
  const [kernel, bias] = layer.weights.map((weight) => weight.read());
  const [batch, height, width, channels] = x.shape;
  const filters = kernel.shape[3]!;
  return tf.tidy(() => {
    const x2d = x.reshape([batch * height * width, channels]);
    const y = layerProduct(layer, x2d, kernel.reshape([channels, filters]), bias, onTape);
    return y.reshape([batch, height, width, filters]) as Tensor4D;
  });
}

/** A Dense layer on [batch, features] with no activation or ReLU, sigmoid or swish (the classifier's head). */
export function isMatrixDense(layer: Layer, input: Tensor): boolean {
  return layer.getClassName() === 'Dense' && input.rank === 2 && activations.has(activationOf(layer));
}

/**
 * A Dense layer's output on [batch, features] as the same matrix product: tfjs-layers runs it
 * as BatchMatMulV2 (about half a millisecond on the head's [32, 1280] x [1280, 2], three times
 * a step with its gradients) and a separate bias Add; TensorFlow's MatMul (and off the tape one
 * _FusedMatMul with the bias) takes microseconds.
 */
export function applyDense(layer: Layer, x: Tensor, onTape: boolean): Tensor {
  const [kernel, bias] = layer.weights.map((weight) => weight.read());
  return tf.tidy(() => layerProduct(layer, x, kernel, bias, onTape));
}
