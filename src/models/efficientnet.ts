import type { SymbolicTensor } from '@tensorflow/tfjs-node';
import { tf } from '../tfjs/tf.ts';
import { BaseBuilder, makeDivisible } from './builder.ts';
import type { BaseOptions } from './base-builders.ts';

/**
 * EfficientNet-B0 without its top, layer for layer as keras/src/applications/efficientnet.py
 * builds it with weights="imagenet": raw pixels in [0, 255] -> Rescaling(1/255) ->
 * Normalization (ImageNet mean and variance, stored in the weights) -> Rescaling(1 /
 * sqrt(stddev)), the correction Keras adds for its pretrained weights (tensorflow#49930).
 * Keras leaves that last layer out for weights=None; tlx always has it, so a layer index
 * means the same whatever the weights (238 layers, as Keras's ImageNet model).
 *
 * The Dropout before each residual add (stochastic depth) never drops: the base runs with
 * training=False, as the transfer-learning tutorial calls it.
 */

const imagenetStddev = [0.229, 0.224, 0.225];

interface BlockArgs {
  kernelSize: number;
  repeats: number;
  filtersIn: number;
  filtersOut: number;
  expandRatio: number;
  strides: 1 | 2;
  seRatio: number;
}

/** Keras's DEFAULT_BLOCKS_ARGS (id_skip is true for all of them). */
const blocksArgs: BlockArgs[] = [
  { kernelSize: 3, repeats: 1, filtersIn: 32, filtersOut: 16, expandRatio: 1, strides: 1, seRatio: 0.25 },
  { kernelSize: 3, repeats: 2, filtersIn: 16, filtersOut: 24, expandRatio: 6, strides: 2, seRatio: 0.25 },
  { kernelSize: 5, repeats: 2, filtersIn: 24, filtersOut: 40, expandRatio: 6, strides: 2, seRatio: 0.25 },
  { kernelSize: 3, repeats: 3, filtersIn: 40, filtersOut: 80, expandRatio: 6, strides: 2, seRatio: 0.25 },
  { kernelSize: 5, repeats: 3, filtersIn: 80, filtersOut: 112, expandRatio: 6, strides: 1, seRatio: 0.25 },
  { kernelSize: 5, repeats: 4, filtersIn: 112, filtersOut: 192, expandRatio: 6, strides: 2, seRatio: 0.25 },
  { kernelSize: 3, repeats: 1, filtersIn: 192, filtersOut: 320, expandRatio: 6, strides: 1, seRatio: 0.25 },
];

const dropConnectRate = 0.2;

function block(
  b: BaseBuilder,
  inputs: SymbolicTensor,
  dropRate: number,
  name: string,
  args: Omit<BlockArgs, 'repeats'>,
): SymbolicTensor {
  const { filtersIn, filtersOut, kernelSize, strides, expandRatio, seRatio } = args;
  const filters = filtersIn * expandRatio;
  let x = inputs;
  if (expandRatio !== 1) {
    x = b.conv(x, { filters, kernelSize: 1, name: `${name}expand_conv` });
    x = b.batchNorm(x, `${name}expand_bn`);
    x = b.activation(x, 'silu', `${name}expand_activation`);
  }
  if (strides === 2) x = b.correctPadFor(x, kernelSize, `${name}dwconv_pad`);
  x = b.depthwise(x, { kernelSize, strides, name: `${name}dwconv` });
  x = b.batchNorm(x, `${name}bn`);
  x = b.activation(x, 'silu', `${name}activation`);

  let se = b.globalAveragePooling(x, `${name}se_squeeze`, false);
  se = b.reshape(se, [1, 1, filters], `${name}se_reshape`);
  se = b.conv(se, {
    filters: Math.max(1, Math.trunc(filtersIn * seRatio)),
    kernelSize: 1,
    useBias: true,
    activation: 'swish',
    name: `${name}se_reduce`,
  });
  se = b.conv(se, { filters, kernelSize: 1, useBias: true, activation: 'sigmoid', name: `${name}se_expand` });
  x = b.multiply([x, se], `${name}se_excite`);

  x = b.conv(x, { filters: filtersOut, kernelSize: 1, name: `${name}project_conv` });
  x = b.batchNorm(x, `${name}project_bn`);
  if (strides === 1 && filtersIn === filtersOut) {
    if (dropRate > 0) x = b.dropout(x, dropRate, `${name}drop`);
    x = b.add([x, inputs], `${name}add`);
  }
  return x;
}

export function efficientNetB0(options: BaseOptions) {
  const { inputShape } = options;
  // B0: width and depth coefficients 1.0, so filters and repeats are the table's.
  const b = new BaseBuilder({ seed: options.seed, kernelInitializer: 'efficientnet' });
  const inputs = tf.input({ shape: inputShape, name: 'input_layer' });
  let x = b.rescaling(inputs, 1 / 255, 0);
  x = b.normalization(x);
  x = b.channelRescaling(
    x,
    imagenetStddev.map((stddev) => 1 / Math.sqrt(stddev)),
  );
  x = b.correctPadFor(x, 3, 'stem_conv_pad');
  x = b.conv(x, { filters: makeDivisible(32), kernelSize: 3, strides: 2, padding: 'valid', name: 'stem_conv' });
  x = b.batchNorm(x, 'stem_bn');
  x = b.activation(x, 'silu', 'stem_activation');

  const total = blocksArgs.reduce((sum, args) => sum + args.repeats, 0);
  let blockIndex = 0;
  blocksArgs.forEach((args, stage) => {
    for (let repeat = 0; repeat < args.repeats; repeat++) {
      const name = `block${stage + 1}${String.fromCharCode(97 + repeat)}_`;
      const first = repeat === 0;
      x = block(b, x, (dropConnectRate * blockIndex) / total, name, {
        ...args,
        strides: first ? args.strides : 1,
        filtersIn: first ? args.filtersIn : args.filtersOut,
      });
      blockIndex++;
    }
  });

  x = b.conv(x, { filters: makeDivisible(1280), kernelSize: 1, name: 'top_conv' });
  x = b.batchNorm(x, 'top_bn');
  x = b.activation(x, 'silu', 'top_activation');
  return tf.model({ inputs, outputs: x, name: 'efficientnetb0' });
}
