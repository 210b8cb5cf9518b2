import type { SymbolicTensor } from '@tensorflow/tfjs-node';
import { tf } from '../tfjs/tf.ts';
import { BaseBuilder, makeDivisible } from './builder.ts';
import type { BaseOptions } from './base-builders.ts';

/**
 * MobileNetV3 Small and Large without their top, layer for layer as
 * keras/src/applications/mobilenet_v3.py builds them (include_preprocessing=True): the
 * input is raw pixels in [0, 255], rescaled to [-1, 1] by the base's own first layer.
 * Layers Keras leaves unnamed get the names a fresh Keras session gives them (re_lu_3,
 * activation_7), so `model.summary()` and this model list the same names by index.
 */

type Activate = (b: BaseBuilder, x: SymbolicTensor) => SymbolicTensor;

const relu: Activate = (b, x) => b.relu(x);
const hardSwish: Activate = (b, x) => b.activation(x, 'hard_silu');

function squeezeExcite(
  b: BaseBuilder,
  inputs: SymbolicTensor,
  filters: number,
  seRatio: number,
  prefix: string,
): SymbolicTensor {
  let x = b.globalAveragePooling(inputs, `${prefix}squeeze_excite_avg_pool`, true);
  x = b.conv(x, {
    filters: makeDivisible(filters * seRatio),
    kernelSize: 1,
    useBias: true,
    name: `${prefix}squeeze_excite_conv`,
  });
  x = b.relu(x, `${prefix}squeeze_excite_relu`);
  x = b.conv(x, { filters, kernelSize: 1, useBias: true, name: `${prefix}squeeze_excite_conv_1` });
  x = b.hardSigmoid(x);
  return b.multiply([inputs, x], `${prefix}squeeze_excite_mul`);
}

function invertedResidualBlock(
  b: BaseBuilder,
  x: SymbolicTensor,
  expansion: number,
  filters: number,
  kernelSize: number,
  stride: 1 | 2,
  seRatio: number | undefined,
  activate: Activate,
  blockId: number,
): SymbolicTensor {
  const shortcut = x;
  const inFilters = x.shape[3] as number;
  const prefix = blockId === 0 ? 'expanded_conv_' : `expanded_conv_${blockId}_`;
  if (blockId !== 0) {
    x = b.conv(x, { filters: makeDivisible(inFilters * expansion), kernelSize: 1, name: `${prefix}expand` });
    x = b.batchNorm(x, `${prefix}expand_bn`);
    x = activate(b, x);
  }
  if (stride === 2) x = b.correctPadFor(x, kernelSize, `${prefix}depthwise_pad`);
  x = b.depthwise(x, { kernelSize, strides: stride, name: `${prefix}depthwise` });
  x = b.batchNorm(x, `${prefix}depthwise_bn`);
  x = activate(b, x);
  if (seRatio) x = squeezeExcite(b, x, makeDivisible(inFilters * expansion), seRatio, prefix);
  x = b.conv(x, { filters, kernelSize: 1, name: `${prefix}project` });
  x = b.batchNorm(x, `${prefix}project_bn`);
  if (stride === 1 && inFilters === filters) x = b.add([shortcut, x], `${prefix}add`);
  return x;
}

type Stack = (
  b: BaseBuilder,
  x: SymbolicTensor,
  kernel: number,
  activate: Activate,
  seRatio: number | undefined,
  depth: (d: number) => number,
) => SymbolicTensor;

const smallStack: Stack = (b, x, kernel, activate, se, depth) => {
  x = invertedResidualBlock(b, x, 1, depth(16), 3, 2, se, relu, 0);
  x = invertedResidualBlock(b, x, 72 / 16, depth(24), 3, 2, undefined, relu, 1);
  x = invertedResidualBlock(b, x, 88 / 24, depth(24), 3, 1, undefined, relu, 2);
  x = invertedResidualBlock(b, x, 4, depth(40), kernel, 2, se, activate, 3);
  x = invertedResidualBlock(b, x, 6, depth(40), kernel, 1, se, activate, 4);
  x = invertedResidualBlock(b, x, 6, depth(40), kernel, 1, se, activate, 5);
  x = invertedResidualBlock(b, x, 3, depth(48), kernel, 1, se, activate, 6);
  x = invertedResidualBlock(b, x, 3, depth(48), kernel, 1, se, activate, 7);
  x = invertedResidualBlock(b, x, 6, depth(96), kernel, 2, se, activate, 8);
  x = invertedResidualBlock(b, x, 6, depth(96), kernel, 1, se, activate, 9);
  return invertedResidualBlock(b, x, 6, depth(96), kernel, 1, se, activate, 10);
};

const largeStack: Stack = (b, x, kernel, activate, se, depth) => {
  x = invertedResidualBlock(b, x, 1, depth(16), 3, 1, undefined, relu, 0);
  x = invertedResidualBlock(b, x, 4, depth(24), 3, 2, undefined, relu, 1);
  x = invertedResidualBlock(b, x, 3, depth(24), 3, 1, undefined, relu, 2);
  x = invertedResidualBlock(b, x, 3, depth(40), kernel, 2, se, relu, 3);
  x = invertedResidualBlock(b, x, 3, depth(40), kernel, 1, se, relu, 4);
  x = invertedResidualBlock(b, x, 3, depth(40), kernel, 1, se, relu, 5);
  x = invertedResidualBlock(b, x, 6, depth(80), 3, 2, undefined, activate, 6);
  x = invertedResidualBlock(b, x, 2.5, depth(80), 3, 1, undefined, activate, 7);
  x = invertedResidualBlock(b, x, 2.3, depth(80), 3, 1, undefined, activate, 8);
  x = invertedResidualBlock(b, x, 2.3, depth(80), 3, 1, undefined, activate, 9);
  x = invertedResidualBlock(b, x, 6, depth(112), 3, 1, se, activate, 10);
  x = invertedResidualBlock(b, x, 6, depth(112), 3, 1, se, activate, 11);
  x = invertedResidualBlock(b, x, 6, depth(160), kernel, 2, se, activate, 12);
  x = invertedResidualBlock(b, x, 6, depth(160), kernel, 1, se, activate, 13);
  return invertedResidualBlock(b, x, 6, depth(160), kernel, 1, se, activate, 14);
};

function mobileNetV3(options: BaseOptions, stack: Stack, name: string) {
  const { alpha, inputShape, minimalistic = false } = options;
  const b = new BaseBuilder({ seed: options.seed, kernelInitializer: 'glorot_uniform' });
  // Minimalistic: 3x3 kernels, ReLU everywhere, no squeeze-and-excite.
  const kernel = minimalistic ? 3 : 5;
  const activate = minimalistic ? relu : hardSwish;
  const seRatio = minimalistic ? undefined : 0.25;
  const inputs = tf.input({ shape: inputShape, name: 'input_layer' });
  let x = b.rescaling(inputs, 1 / 127.5, -1);
  x = b.conv(x, { filters: 16, kernelSize: 3, strides: 2, name: 'conv' });
  x = b.batchNorm(x, 'conv_bn');
  x = activate(b, x);
  x = stack(b, x, kernel, activate, seRatio, (d) => makeDivisible(d * alpha));
  x = b.conv(x, { filters: makeDivisible((x.shape[3] as number) * 6), kernelSize: 1, name: 'conv_1' });
  x = b.batchNorm(x, 'conv_1_bn');
  x = activate(b, x);
  return tf.model({ inputs, outputs: x, name });
}

export function mobileNetV3Small(options: BaseOptions) {
  return mobileNetV3(options, smallStack, 'MobileNetV3Small');
}

export function mobileNetV3Large(options: BaseOptions) {
  return mobileNetV3(options, largeStack, 'MobileNetV3Large');
}
