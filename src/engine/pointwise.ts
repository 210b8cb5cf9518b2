import type { Tensor, Tensor4D } from '@tensorflow/tfjs-node';
import { single, type GradSave } from '../models/activations.ts';
import { matMul2d } from '../tfjs/native-ops.ts';
import { tf } from '../tfjs/tf.ts';
import type { Layer } from './graph.ts';

/**
 * A 1x1, stride-1 Conv2D is a matrix product over the pixels: [N*H*W, in] x [in, out].
 * Taped as one, its gradients are two more matrix products. TensorFlow's CPU kernels run
 * those about twice as fast as Conv2DBackpropInput / Conv2DBackpropFilter run the same
 * shapes, and 1x1 convs carry most of a MobileNet's or EfficientNet's weights (measured by
 * the steps case of bench/compare.ts). The result is the convolution's, up to the order of
 * float sums.
 */

const pointwise = new WeakMap<Layer, boolean>();

/** A Conv2D with a 1x1 kernel, stride 1, no dilation, channels last and no activation of its own. */
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
        (config.activation === 'linear' || config.activation === undefined);
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

/** The layer's output for x, as a matrix product on its own kernel (and bias) variables: taped like the layer. */
export function applyPointwiseConv(layer: Layer, x: Tensor4D): Tensor4D {
  const [kernel, bias] = layer.weights.map((weight) => weight.read());
  const [batch, height, width, channels] = x.shape;
  const filters = kernel.shape[3]!;
  return tf.tidy(() => {
    const product = tapedMatMul(x.reshape([batch * height * width, channels]), kernel.reshape([channels, filters]));
    const biased: Tensor = bias ? product.add(bias) : product;
    return biased.reshape([batch, height, width, filters]) as Tensor4D;
  });
}
