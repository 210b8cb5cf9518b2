import type { SymbolicTensor } from '@tensorflow/tfjs-node';
import { tf } from '../tfjs/tf.ts';
import { InferenceBatchNormalization, ReLU6 } from './layers.ts';

/**
 * MobileNetV2 without its top, layer for layer as keras.applications.MobileNetV2 builds
 * it (keras/src/applications/mobilenet_v2.py): the same layer names, order and
 * hyper-parameters, so a layer index means what it means in Keras (fine_tune_at: 100)
 * and Keras weight files load by name. Reads top to bottom like the paper's table.
 */

export interface MobileNetV2Options {
  alpha: number;
  inputShape: [height: number, width: number, channels: 3];
  /** Name of the input layer (Keras names it input_layer). */
  inputName?: string;
  /** Seeds the (Keras default) glorot-uniform kernels, for `weights: none` runs that repeat. */
  seed?: number;
}

/** One seeded initializer per kernel: the same seed and architecture give the same weights. */
function kernelInitializers(seed: number | undefined) {
  let layer = 0;
  return () => (seed === undefined ? 'glorotUniform' : tf.initializers.glorotUniform({ seed: seed * 1000 + layer++ }));
}

/** keras.applications' _make_divisible: channel counts rounded to multiples of 8. */
export function makeDivisible(value: number, divisor = 8): number {
  const rounded = Math.max(divisor, Math.floor((value + divisor / 2) / divisor) * divisor);
  return rounded < 0.9 * value ? rounded + divisor : rounded;
}

/** Keras's correct_pad for a 3x3 stride-2 conv: ((0,1),(0,1)) on even sizes, ((1,1),(1,1)) on odd. */
export function correctPad(height: number, width: number): [[number, number], [number, number]] {
  const adjustH = 1 - (height % 2);
  const adjustW = 1 - (width % 2);
  return [
    [1 - adjustH, 1],
    [1 - adjustW, 1],
  ];
}

const bnArgs = { epsilon: 1e-3 };

/** The one place where layer names are made: block_{id}_expand, ..., expanded_conv_ for block 0. */
function blockPrefix(blockId: number): string {
  return blockId === 0 ? 'expanded_conv_' : `block_${blockId}_`;
}

type Init = ReturnType<typeof kernelInitializers>;

function invertedResidualBlock(inputs: SymbolicTensor, expansion: number, stride: 1 | 2, alpha: number, filters: number, blockId: number, init: Init): SymbolicTensor {
  const inChannels = inputs.shape[inputs.shape.length - 1] as number;
  const pointwiseFilters = makeDivisible(Math.trunc(filters * alpha));
  const prefix = blockPrefix(blockId);
  let x = inputs;
  if (blockId !== 0) {
    x = tf.layers.conv2d({ filters: expansion * inChannels, kernelSize: 1, padding: 'same', useBias: false, name: `${prefix}expand`, kernelInitializer: init() }).apply(x) as SymbolicTensor;
    x = new InferenceBatchNormalization({ ...bnArgs, name: `${prefix}expand_BN` }).apply(x) as SymbolicTensor;
    x = new ReLU6({ name: `${prefix}expand_relu` }).apply(x) as SymbolicTensor;
  }
  if (stride === 2) {
    const [height, width] = x.shape.slice(1, 3) as number[];
    x = tf.layers.zeroPadding2d({ padding: correctPad(height, width), name: `${prefix}pad` }).apply(x) as SymbolicTensor;
  }
  x = tf.layers
    .depthwiseConv2d({ kernelSize: 3, strides: stride, useBias: false, padding: stride === 1 ? 'same' : 'valid', name: `${prefix}depthwise`, depthwiseInitializer: init() })
    .apply(x) as SymbolicTensor;
  x = new InferenceBatchNormalization({ ...bnArgs, name: `${prefix}depthwise_BN` }).apply(x) as SymbolicTensor;
  x = new ReLU6({ name: `${prefix}depthwise_relu` }).apply(x) as SymbolicTensor;
  x = tf.layers.conv2d({ filters: pointwiseFilters, kernelSize: 1, padding: 'same', useBias: false, name: `${prefix}project`, kernelInitializer: init() }).apply(x) as SymbolicTensor;
  x = new InferenceBatchNormalization({ ...bnArgs, name: `${prefix}project_BN` }).apply(x) as SymbolicTensor;
  if (inChannels === pointwiseFilters && stride === 1) {
    return tf.layers.add({ name: `${prefix}add` }).apply([inputs, x]) as SymbolicTensor;
  }
  return x;
}

/** The base network: input pixels already scaled to [-1, 1]; output the last feature map. */
export function mobileNetV2(options: MobileNetV2Options) {
  const { alpha, inputShape } = options;
  const inputs = tf.input({ shape: inputShape, name: options.inputName ?? 'input_layer' });
  const init = kernelInitializers(options.seed);

  const firstBlockFilters = makeDivisible(32 * alpha);
  let x = tf.layers.conv2d({ filters: firstBlockFilters, kernelSize: 3, strides: 2, padding: 'same', useBias: false, name: 'Conv1', kernelInitializer: init() }).apply(inputs) as SymbolicTensor;
  x = new InferenceBatchNormalization({ ...bnArgs, name: 'bn_Conv1' }).apply(x) as SymbolicTensor;
  x = new ReLU6({ name: 'Conv1_relu' }).apply(x) as SymbolicTensor;

  x = invertedResidualBlock(x, 1, 1, alpha, 16, 0, init);

  x = invertedResidualBlock(x, 6, 2, alpha, 24, 1, init);
  x = invertedResidualBlock(x, 6, 1, alpha, 24, 2, init);

  x = invertedResidualBlock(x, 6, 2, alpha, 32, 3, init);
  x = invertedResidualBlock(x, 6, 1, alpha, 32, 4, init);
  x = invertedResidualBlock(x, 6, 1, alpha, 32, 5, init);

  x = invertedResidualBlock(x, 6, 2, alpha, 64, 6, init);
  x = invertedResidualBlock(x, 6, 1, alpha, 64, 7, init);
  x = invertedResidualBlock(x, 6, 1, alpha, 64, 8, init);
  x = invertedResidualBlock(x, 6, 1, alpha, 64, 9, init);

  x = invertedResidualBlock(x, 6, 1, alpha, 96, 10, init);
  x = invertedResidualBlock(x, 6, 1, alpha, 96, 11, init);
  x = invertedResidualBlock(x, 6, 1, alpha, 96, 12, init);

  x = invertedResidualBlock(x, 6, 2, alpha, 160, 13, init);
  x = invertedResidualBlock(x, 6, 1, alpha, 160, 14, init);
  x = invertedResidualBlock(x, 6, 1, alpha, 160, 15, init);

  x = invertedResidualBlock(x, 6, 1, alpha, 320, 16, init);

  // No alpha applied to the last conv below 1.0, as in the paper and in Keras.
  const lastBlockFilters = alpha > 1.0 ? makeDivisible(1280 * alpha) : 1280;
  x = tf.layers.conv2d({ filters: lastBlockFilters, kernelSize: 1, useBias: false, name: 'Conv_1', kernelInitializer: init() }).apply(x) as SymbolicTensor;
  x = new InferenceBatchNormalization({ ...bnArgs, name: 'Conv_1_bn' }).apply(x) as SymbolicTensor;
  x = new ReLU6({ name: 'out_relu' }).apply(x) as SymbolicTensor;

  return tf.model({ inputs, outputs: x, name: `mobilenetv2_${alpha.toFixed(2)}_${inputShape[0]}` });
}
