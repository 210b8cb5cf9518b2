import type { SymbolicTensor } from '@tensorflow/tfjs-node';
import { tf } from '../tfjs/tf.ts';
import { BaseBuilder, makeDivisible } from './builder.ts';
import type { BaseOptions } from './base-builders.ts';

/**
 * MobileNetV2 without its top, layer for layer as keras.applications.MobileNetV2 builds
 * it (keras/src/applications/mobilenet_v2.py): the same layer names, order and
 * hyper-parameters, so a layer index means what it means in Keras (fine_tune_at: 100)
 * and Keras weight files load by name. Reads top to bottom like the paper's table.
 * Its input is pixels already scaled to [-1, 1] (the classifier does that).
 */

/** The one place where layer names are made: block_{id}_expand, ..., expanded_conv_ for block 0. */
function blockPrefix(blockId: number): string {
  return blockId === 0 ? 'expanded_conv_' : `block_${blockId}_`;
}

function invertedResidualBlock(
  b: BaseBuilder,
  inputs: SymbolicTensor,
  expansion: number,
  stride: 1 | 2,
  alpha: number,
  filters: number,
  blockId: number,
): SymbolicTensor {
  const inChannels = inputs.shape[inputs.shape.length - 1] as number;
  const pointwiseFilters = makeDivisible(Math.trunc(filters * alpha));
  const prefix = blockPrefix(blockId);
  let x = inputs;
  if (blockId !== 0) {
    x = b.conv(x, { filters: expansion * inChannels, kernelSize: 1, name: `${prefix}expand` });
    x = b.batchNorm(x, `${prefix}expand_BN`);
    x = b.relu6(x, `${prefix}expand_relu`);
  }
  if (stride === 2) x = b.correctPadFor(x, 3, `${prefix}pad`);
  x = b.depthwise(x, { kernelSize: 3, strides: stride, name: `${prefix}depthwise` });
  x = b.batchNorm(x, `${prefix}depthwise_BN`);
  x = b.relu6(x, `${prefix}depthwise_relu`);
  x = b.conv(x, { filters: pointwiseFilters, kernelSize: 1, name: `${prefix}project` });
  x = b.batchNorm(x, `${prefix}project_BN`);
  if (inChannels === pointwiseFilters && stride === 1) return b.add([inputs, x], `${prefix}add`);
  return x;
}

export function mobileNetV2(options: BaseOptions) {
  const { alpha, inputShape } = options;
  const b = new BaseBuilder({ seed: options.seed, kernelInitializer: 'glorot_uniform' });
  const inputs = tf.input({ shape: inputShape, name: 'input_layer' });

  let x = b.conv(inputs, { filters: makeDivisible(32 * alpha), kernelSize: 3, strides: 2, name: 'Conv1' });
  x = b.batchNorm(x, 'bn_Conv1');
  x = b.relu6(x, 'Conv1_relu');

  x = invertedResidualBlock(b, x, 1, 1, alpha, 16, 0);

  x = invertedResidualBlock(b, x, 6, 2, alpha, 24, 1);
  x = invertedResidualBlock(b, x, 6, 1, alpha, 24, 2);

  x = invertedResidualBlock(b, x, 6, 2, alpha, 32, 3);
  x = invertedResidualBlock(b, x, 6, 1, alpha, 32, 4);
  x = invertedResidualBlock(b, x, 6, 1, alpha, 32, 5);

  x = invertedResidualBlock(b, x, 6, 2, alpha, 64, 6);
  x = invertedResidualBlock(b, x, 6, 1, alpha, 64, 7);
  x = invertedResidualBlock(b, x, 6, 1, alpha, 64, 8);
  x = invertedResidualBlock(b, x, 6, 1, alpha, 64, 9);

  x = invertedResidualBlock(b, x, 6, 1, alpha, 96, 10);
  x = invertedResidualBlock(b, x, 6, 1, alpha, 96, 11);
  x = invertedResidualBlock(b, x, 6, 1, alpha, 96, 12);

  x = invertedResidualBlock(b, x, 6, 2, alpha, 160, 13);
  x = invertedResidualBlock(b, x, 6, 1, alpha, 160, 14);
  x = invertedResidualBlock(b, x, 6, 1, alpha, 160, 15);

  x = invertedResidualBlock(b, x, 6, 1, alpha, 320, 16);

  // No alpha applied to the last conv below 1.0, as in the paper and in Keras.
  const lastBlockFilters = alpha > 1.0 ? makeDivisible(1280 * alpha) : 1280;
  x = b.conv(x, { filters: lastBlockFilters, kernelSize: 1, padding: 'valid', name: 'Conv_1' });
  x = b.batchNorm(x, 'Conv_1_bn');
  x = b.relu6(x, 'out_relu');

  return tf.model({ inputs, outputs: x, name: `mobilenetv2_${alpha.toFixed(2)}_${inputShape[0]}` });
}
