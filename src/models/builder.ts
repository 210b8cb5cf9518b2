import type { SymbolicTensor } from '@tensorflow/tfjs-node';
import { tf } from '../tfjs/tf.ts';
import {
  Activation,
  ChannelRescaling,
  GlobalAveragePooling2D,
  HardSigmoid,
  InferenceBatchNormalization,
  InferenceDropout,
  Normalization,
  ReLU,
  ReLU6,
  type ActivationKind,
} from './layers.ts';

/**
 * What the pretrained bases are built from: Keras's layers with Keras's names, one call per
 * layer, so each base reads like its Keras file (keras/src/applications/*.py) line for line.
 */

type Padding = [[number, number], [number, number]];
type Layer = InstanceType<typeof tf.layers.Layer>;

/** keras.applications' _make_divisible / _depth / round_filters: channels rounded to multiples of 8. */
export function makeDivisible(value: number, divisor = 8): number {
  const rounded = Math.max(divisor, Math.floor(Math.trunc(value + divisor / 2) / divisor) * divisor);
  return rounded < 0.9 * value ? rounded + divisor : rounded;
}

/**
 * Keras's imagenet_utils.correct_pad: the zero padding before a stride-2 'valid' conv that
 * keeps TensorFlow's 'same' alignment; one row and column less before on even sizes.
 */
function correctPad(height: number, width: number, kernelSize = 3): Padding {
  const half = Math.floor(kernelSize / 2);
  return [
    [half - (1 - (height % 2)), half],
    [half - (1 - (width % 2)), half],
  ];
}

/**
 * Kernel initializers for `weights: none`: Keras's kind per base, seeded per kernel in
 * build order, so the same seed and architecture give the same starting weights.
 */
type KernelInitializerKind = 'glorot_uniform' | 'efficientnet';

export interface BuilderOptions {
  seed?: number;
  kernelInitializer: KernelInitializerKind;
}

export class BaseBuilder {
  private kernelCount = 0;
  private readonly autoNames = new Map<string, number>();

  constructor(private readonly options: BuilderOptions) {}

  private kernelInitializer() {
    const seed = this.options.seed === undefined ? undefined : this.options.seed * 1000 + this.kernelCount++;
    // EfficientNet's CONV_KERNEL_INITIALIZER: VarianceScaling(2.0, fan_out, truncated normal).
    if (this.options.kernelInitializer === 'efficientnet')
      return tf.initializers.varianceScaling({ scale: 2.0, mode: 'fanOut', distribution: 'normal', seed });
    return seed === undefined ? 'glorotUniform' : tf.initializers.glorotUniform({ seed });
  }

  /** A name as a fresh Keras session gives an unnamed layer: re_lu, re_lu_1, ... */
  autoName(prefix: string): string {
    const count = this.autoNames.get(prefix) ?? 0;
    this.autoNames.set(prefix, count + 1);
    return count === 0 ? prefix : `${prefix}_${count}`;
  }

  private apply(layer: Layer, x: SymbolicTensor | SymbolicTensor[]): SymbolicTensor {
    return layer.apply(x) as SymbolicTensor;
  }

  conv(
    x: SymbolicTensor,
    args: {
      filters: number;
      kernelSize: number;
      strides?: number;
      padding?: 'same' | 'valid';
      useBias?: boolean;
      activation?: 'swish' | 'sigmoid';
      name: string;
    },
  ): SymbolicTensor {
    const { filters, kernelSize, strides = 1, padding = 'same', useBias = false, activation, name } = args;
    return this.apply(
      tf.layers.conv2d({
        filters,
        kernelSize,
        strides,
        padding,
        useBias,
        activation,
        name,
        kernelInitializer: this.kernelInitializer(),
      }),
      x,
    );
  }

  depthwise(x: SymbolicTensor, args: { kernelSize: number; strides: number; name: string }): SymbolicTensor {
    const padding = args.strides === 1 ? 'same' : 'valid';
    return this.apply(
      tf.layers.depthwiseConv2d({
        kernelSize: args.kernelSize,
        strides: args.strides,
        padding,
        useBias: false,
        name: args.name,
        depthwiseInitializer: this.kernelInitializer(),
      }),
      x,
    );
  }

  /** BatchNormalization, always on its moving statistics (the base runs with training=False). */
  batchNorm(x: SymbolicTensor, name: string, epsilon = 1e-3): SymbolicTensor {
    return this.apply(new InferenceBatchNormalization({ epsilon, name }), x);
  }

  relu(x: SymbolicTensor, name = this.autoName('re_lu')): SymbolicTensor {
    return this.apply(new ReLU({ name }), x);
  }

  relu6(x: SymbolicTensor, name = this.autoName('re_lu')): SymbolicTensor {
    return this.apply(new ReLU6({ name }), x);
  }

  hardSigmoid(x: SymbolicTensor): SymbolicTensor {
    return this.apply(new HardSigmoid({ name: this.autoName('re_lu') }), x);
  }

  activation(x: SymbolicTensor, activation: ActivationKind, name = this.autoName('activation')): SymbolicTensor {
    return this.apply(new Activation({ activation, name }), x);
  }

  zeroPad(x: SymbolicTensor, padding: Padding, name: string): SymbolicTensor {
    return this.apply(tf.layers.zeroPadding2d({ padding, name }), x);
  }

  /** correct_pad for x's own size, as Keras computes it from the tensor. */
  correctPadFor(x: SymbolicTensor, kernelSize: number, name: string): SymbolicTensor {
    const [height, width] = x.shape.slice(1, 3) as number[];
    return this.zeroPad(x, correctPad(height, width, kernelSize), name);
  }

  add(inputs: SymbolicTensor[], name: string): SymbolicTensor {
    return this.apply(tf.layers.add({ name }), inputs);
  }

  multiply(inputs: SymbolicTensor[], name: string): SymbolicTensor {
    return this.apply(tf.layers.multiply({ name }), inputs);
  }

  globalAveragePooling(x: SymbolicTensor, name: string, keepdims: boolean): SymbolicTensor {
    return this.apply(new GlobalAveragePooling2D({ keepdims, name }), x);
  }

  reshape(x: SymbolicTensor, targetShape: number[], name: string): SymbolicTensor {
    return this.apply(tf.layers.reshape({ targetShape, name }), x);
  }

  rescaling(x: SymbolicTensor, scale: number, offset: number, name = this.autoName('rescaling')): SymbolicTensor {
    return this.apply(tf.layers.rescaling({ scale, offset, name }), x);
  }

  channelRescaling(x: SymbolicTensor, scale: number[], name = this.autoName('rescaling')): SymbolicTensor {
    return this.apply(new ChannelRescaling({ scale, name }), x);
  }

  normalization(x: SymbolicTensor, name = this.autoName('normalization')): SymbolicTensor {
    return this.apply(new Normalization({ name }), x);
  }

  dropout(x: SymbolicTensor, rate: number, name: string): SymbolicTensor {
    return this.apply(new InferenceDropout({ rate, name }), x);
  }
}
