import type { Tensor, Tensor1D } from '@tensorflow/tfjs-node';
import { runOp, runOpMulti, tlxOpsAvailable } from '../tfjs/native-ops.ts';
import { tf } from '../tfjs/tf.ts';
import { hardSigmoid, hardSilu, relu6, silu, single, spatialMean, type GradSave } from './activations.ts';

type Kwargs = Record<string, unknown>;
type LayerArgs = ConstructorParameters<typeof tf.layers.Layer>[0];
type LayerVariable = ReturnType<InstanceType<typeof tf.layers.Layer>['addWeight']>;
type Shape = (number | null)[];

/**
 * y = BN(x) with the moving statistics, as one native FusedBatchNormV3 (is_training=false),
 * and its gradient as one FusedBatchNormGradV3: the kernels Keras runs. tfjs-core's own
 * batchNorm gradient is a chain of element-wise ops several times slower.
 */
function fusedBatchNormInference(
  x: Tensor,
  gamma: Tensor1D,
  beta: Tensor1D,
  movingMean: Tensor1D,
  movingVariance: Tensor1D,
  epsilon: number,
): Tensor {
  const attrs = [
    { name: 'T', kind: 'type', value: 'float32' },
    { name: 'U', kind: 'type', value: 'float32' },
    { name: 'epsilon', kind: 'float', value: epsilon },
    { name: 'exponential_avg_factor', kind: 'float', value: 1 },
    { name: 'data_format', kind: 'string', value: 'NHWC' },
    { name: 'is_training', kind: 'bool', value: false },
  ] as const;
  const forward = tf.customGrad((...args: (Tensor | GradSave)[]) => {
    const [input, scale, offset] = args as Tensor[];
    const save = args[3] as GradSave;
    const outputs = runOpMulti('FusedBatchNormV3', attrs, [input, scale, offset, movingMean, movingVariance], 6);
    const [y, ...rest] = outputs;
    tf.dispose(rest.slice(0, 4));
    save([input, scale, rest[4]]);
    return {
      value: y,
      gradFunc: (dy: Tensor | Tensor[], saved: Tensor[]) => {
        const [savedInput, savedScale, reserve3] = saved;
        const grads = runOpMulti(
          'FusedBatchNormGradV3',
          [
            { name: 'T', kind: 'type', value: 'float32' },
            { name: 'U', kind: 'type', value: 'float32' },
            { name: 'epsilon', kind: 'float', value: epsilon },
            { name: 'data_format', kind: 'string', value: 'NHWC' },
            { name: 'is_training', kind: 'bool', value: false },
          ],
          [single(dy), savedInput, savedScale, movingMean, movingVariance, reserve3],
          5,
        );
        tf.dispose(grads.slice(3));
        return grads.slice(0, 3);
      },
    };
  });
  return forward(x, gamma, beta);
}

export interface BatchNormArgs extends NonNullable<LayerArgs> {
  epsilon?: number;
}

/**
 * BatchNormalization as Keras runs it inside a base called with training=False (the
 * tutorial's `base_model(x, training=False)`): always the moving statistics, which never
 * change; gamma and beta train when the layer is trainable. tfjs-layers' own
 * BatchNormalization uses batch statistics whenever fit() runs, frozen or not.
 */
export class InferenceBatchNormalization extends tf.layers.Layer {
  static className = 'TlxInferenceBatchNormalization';
  readonly epsilon: number;
  private gamma!: LayerVariable;
  private beta!: LayerVariable;
  private movingMean!: LayerVariable;
  private movingVariance!: LayerVariable;

  constructor(args: BatchNormArgs = {}) {
    super(args);
    this.epsilon = args.epsilon ?? 1e-3;
  }

  override build(inputShape: Shape | Shape[]): void {
    const shape = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as Shape;
    const channels = shape[shape.length - 1] as number;
    this.gamma = this.addWeight('gamma', [channels], 'float32', tf.initializers.ones(), undefined, true);
    this.beta = this.addWeight('beta', [channels], 'float32', tf.initializers.zeros(), undefined, true);
    this.movingMean = this.addWeight('moving_mean', [channels], 'float32', tf.initializers.zeros(), undefined, false);
    this.movingVariance = this.addWeight(
      'moving_variance',
      [channels],
      'float32',
      tf.initializers.ones(),
      undefined,
      false,
    );
    this.built = true;
  }

  override call(inputs: Tensor | Tensor[], _kwargs: Kwargs): Tensor {
    return tf.tidy(() =>
      fusedBatchNormInference(
        single(inputs),
        this.gamma.read() as Tensor1D,
        this.beta.read() as Tensor1D,
        this.movingMean.read() as Tensor1D,
        this.movingVariance.read() as Tensor1D,
        this.epsilon,
      ),
    );
  }

  /**
   * The per-channel affine map this layer is, y = (x - mean) * gamma * inverseStd + beta, for
   * folding into a conv: gamma, beta and the moving mean as the layer's variables (gamma and
   * beta can be taped).
   */
  affineParts(): { gamma: Tensor1D; beta: Tensor1D; mean: Tensor1D } {
    return {
      gamma: this.gamma.read() as Tensor1D,
      beta: this.beta.read() as Tensor1D,
      mean: this.movingMean.read() as Tensor1D,
    };
  }

  /** 1 / sqrt(moving variance + epsilon), a new tensor: a constant while the layer runs in inference mode. */
  inverseStd(): Tensor1D {
    return tf.tidy(() => tf.rsqrt((this.movingVariance.read() as Tensor1D).add(this.epsilon)) as Tensor1D);
  }

  override getConfig() {
    return { ...super.getConfig(), epsilon: this.epsilon };
  }
}

/** Keras's ReLU(6.) layer, on the native kernels. */
export class ReLU6 extends tf.layers.Layer {
  static className = 'TlxReLU6';

  override call(inputs: Tensor | Tensor[], _kwargs: Kwargs): Tensor {
    return tf.tidy(() => relu6(single(inputs)));
  }
}

/** Keras's ReLU() layer (no upper bound). */
export class ReLU extends tf.layers.Layer {
  static className = 'TlxReLU';

  override call(inputs: Tensor | Tensor[], _kwargs: Kwargs): Tensor {
    return tf.tidy(() => tf.relu(single(inputs)));
  }
}

/**
 * MobileNetV3's hard sigmoid, relu6(x + 3) / 6. Keras builds it as `ReLU(6.)(x + 3.) * (1 / 6)`,
 * where the addition and the product are ops, not layers: this one layer stands where
 * Keras's ReLU layer stands (and takes its name), so layer indices stay Keras's.
 */
export class HardSigmoid extends tf.layers.Layer {
  static className = 'TlxHardSigmoid';

  override call(inputs: Tensor | Tensor[], _kwargs: Kwargs): Tensor {
    return tf.tidy(() => hardSigmoid(single(inputs)));
  }
}

export type ActivationKind = 'hard_silu' | 'silu';

export interface ActivationArgs extends NonNullable<LayerArgs> {
  activation: ActivationKind;
}

/** Keras's Activation layer for the activations tfjs-layers lacks or defines otherwise. */
export class Activation extends tf.layers.Layer {
  static className = 'TlxActivation';
  readonly activation: ActivationKind;

  constructor(args: ActivationArgs) {
    super(args);
    this.activation = args.activation;
  }

  override call(inputs: Tensor | Tensor[], _kwargs: Kwargs): Tensor {
    return tf.tidy(() => (this.activation === 'hard_silu' ? hardSilu(single(inputs)) : silu(single(inputs))));
  }

  override getConfig() {
    return { ...super.getConfig(), activation: this.activation };
  }
}

export interface GlobalAveragePoolingArgs extends NonNullable<LayerArgs> {
  keepdims: boolean;
}

/** Keras's GlobalAveragePooling2D with its keepdims option (tfjs-layers has no keepdims). */
export class GlobalAveragePooling2D extends tf.layers.Layer {
  static className = 'TlxGlobalAveragePooling2D';
  readonly keepdims: boolean;

  constructor(args: GlobalAveragePoolingArgs) {
    super(args);
    this.keepdims = args.keepdims;
  }

  override computeOutputShape(inputShape: Shape | Shape[]): Shape {
    const shape = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as Shape;
    return this.keepdims ? [shape[0], 1, 1, shape[3]] : [shape[0], shape[3]];
  }

  override call(inputs: Tensor | Tensor[], _kwargs: Kwargs): Tensor {
    return tf.tidy(() => spatialMean(single(inputs), this.keepdims));
  }

  override getConfig() {
    return { ...super.getConfig(), keepdims: this.keepdims };
  }
}

/**
 * An image batch's per-channel preprocessing, y = ((x * scale + offset - shift) / divisor) * factor
 * in that order, a missing term left out: Rescaling is scale and offset, Normalization shift and
 * divisor, a per-channel Rescaling factor. Consecutive such layers are one affine when each fills
 * later terms than the ones before it (extendsAffineChain).
 */
export interface ChannelAffineTerms {
  scale?: Tensor1D;
  offset?: Tensor1D;
  shift?: Tensor1D;
  divisor?: Tensor1D;
  factor?: Tensor1D;
}

const affineOrder = ['scale', 'offset', 'shift', 'divisor', 'factor'] as const;

type AnyLayer = InstanceType<typeof tf.layers.Layer>;

/** The terms a Rescaling, a Normalization or a per-channel Rescaling fills; undefined for any other layer. */
export function affineTermNames(layer: AnyLayer): (keyof ChannelAffineTerms)[] | undefined {
  if (layer instanceof Normalization) return ['shift', 'divisor'];
  if (layer instanceof ChannelRescaling) return ['factor'];
  return layer.getClassName() === 'Rescaling' ? ['scale', 'offset'] : undefined;
}

/** Whether `next` after `chain` is still one affine: each of its terms comes after every term the chain filled. */
export function extendsAffineChain(chain: readonly AnyLayer[], next: AnyLayer): boolean {
  const position = (term: keyof ChannelAffineTerms) => affineOrder.indexOf(term);
  const last = Math.max(...chain.flatMap((layer) => affineTermNames(layer) ?? []).map(position));
  const terms = affineTermNames(next);
  return terms !== undefined && terms.every((term) => position(term) > last);
}

/** The terms of a chain that extendsAffineChain accepted, for an input of `channels` channels. */
export function affineChainTerms(chain: readonly AnyLayer[], channels: number): ChannelAffineTerms {
  return Object.assign(
    {},
    ...chain.map((layer) => {
      if (layer instanceof Normalization || layer instanceof ChannelRescaling) return layer.affineTerms();
      const { scale, offset } = layer.getConfig() as { scale: number; offset: number };
      return { scale: tf.fill([channels], scale), offset: tf.fill([channels], offset) };
    }),
  ) as ChannelAffineTerms;
}

/** Runs the terms on tlx's one-pass kernel (bit-equal to the layers' own ops), else as those ops. */
export function channelAffine(x: Tensor, terms: ChannelAffineTerms): Tensor {
  return tf.tidy(() => {
    if (!tlxOpsAvailable()) {
      const { scale, offset, shift, divisor, factor } = terms;
      let y = x;
      if (scale) y = y.mul(scale);
      if (offset) y = y.add(offset);
      if (shift) y = y.sub(shift);
      if (divisor) y = y.div(divisor);
      return factor ? y.mul(factor) : y;
    }
    const channels = x.shape[x.shape.length - 1] ?? 0;
    const [zeros, ones] = [tf.zeros([channels]), tf.ones([channels])];
    const { scale = ones, offset = zeros, shift = zeros, divisor = ones, factor = ones } = terms;
    return runOp('TlxChannelAffine', [], [x, scale, offset, shift, divisor, factor]);
  });
}

export interface ChannelRescalingArgs extends NonNullable<LayerArgs> {
  scale: number[];
}

/** Keras's Rescaling with one scale per channel (tfjs-layers' Rescaling takes one number); one pass on tlx's kernel, bit-equal to the broadcasting Mul. */
export class ChannelRescaling extends tf.layers.Layer {
  static className = 'TlxChannelRescaling';
  readonly scale: number[];

  constructor(args: ChannelRescalingArgs) {
    super(args);
    this.scale = args.scale;
  }

  override call(inputs: Tensor | Tensor[], _kwargs: Kwargs): Tensor {
    return tf.tidy(() => channelAffine(single(inputs), this.affineTerms()));
  }

  affineTerms(): ChannelAffineTerms {
    return { factor: tf.tensor1d(this.scale) };
  }

  override getConfig() {
    return { ...super.getConfig(), scale: this.scale };
  }
}

/**
 * Keras's Normalization layer as the pretrained bases use it: (x - mean) / max(sqrt(variance),
 * 1e-7) per channel, with mean, variance and count as non-trainable weights (Keras stores
 * them in its weight files; count only records how many samples adapt() saw).
 */
export class Normalization extends tf.layers.Layer {
  static className = 'TlxNormalization';
  private mean!: LayerVariable;
  private variance!: LayerVariable;

  override build(inputShape: Shape | Shape[]): void {
    const shape = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as Shape;
    const channels = shape[shape.length - 1] as number;
    this.mean = this.addWeight('mean', [channels], 'float32', tf.initializers.zeros(), undefined, false);
    this.variance = this.addWeight('variance', [channels], 'float32', tf.initializers.ones(), undefined, false);
    this.addWeight('count', [], 'float32', tf.initializers.zeros(), undefined, false);
    this.built = true;
  }

  override call(inputs: Tensor | Tensor[], _kwargs: Kwargs): Tensor {
    // One pass on tlx's kernel (bit-equal): TensorFlow's broadcasting Sub and RealDiv take two slow ones.
    return tf.tidy(() => channelAffine(single(inputs), this.affineTerms()));
  }

  affineTerms(): ChannelAffineTerms {
    return {
      shift: this.mean.read() as Tensor1D,
      divisor: tf.maximum(tf.sqrt(this.variance.read()), 1e-7) as Tensor1D,
    };
  }
}

export interface InferenceDropoutArgs extends NonNullable<LayerArgs> {
  rate: number;
}

/**
 * A Dropout inside a pretrained base (EfficientNet's stochastic depth). The tutorial calls
 * the base with training=False, so Keras never drops there, in either phase; neither does
 * tlx. The layer keeps Keras's index, name and rate; the graph runner skips it.
 */
export class InferenceDropout extends tf.layers.Layer {
  static className = 'TlxInferenceDropout';
  readonly rate: number;

  constructor(args: InferenceDropoutArgs) {
    super(args);
    this.rate = args.rate;
  }

  override call(inputs: Tensor | Tensor[], _kwargs: Kwargs): Tensor {
    return single(inputs).clone();
  }

  override getConfig() {
    return { ...super.getConfig(), rate: this.rate };
  }
}

export interface SeededDropoutArgs extends NonNullable<LayerArgs> {
  rate: number;
}

/**
 * Keras's Dropout (inverted: kept units scaled by 1 / (1 - rate)). The mask is drawn from
 * the seed the training loop passes with each step (`seed` in the call's kwargs), so a
 * resumed or shared run draws exactly the masks an uninterrupted run draws.
 */
export class SeededDropout extends tf.layers.Layer {
  static className = 'TlxSeededDropout';
  readonly rate: number;

  constructor(args: SeededDropoutArgs) {
    super(args);
    this.rate = args.rate;
  }

  override call(inputs: Tensor | Tensor[], kwargs: Kwargs): Tensor {
    const x = single(inputs);
    if (!kwargs.training || this.rate === 0) return x;
    return tf.tidy(() => {
      const seed = typeof kwargs.seed === 'number' ? kwargs.seed : undefined;
      const keep = tf.randomUniform(x.shape, 0, 1, 'float32', seed).greaterEqual(this.rate);
      return x.mul(keep.toFloat()).div(1 - this.rate);
    });
  }

  override getConfig() {
    return { ...super.getConfig(), rate: this.rate };
  }
}

tf.serialization.registerClass(SeededDropout);
tf.serialization.registerClass(InferenceBatchNormalization);
tf.serialization.registerClass(ReLU6);
for (const layer of [
  ReLU,
  HardSigmoid,
  Activation,
  GlobalAveragePooling2D,
  ChannelRescaling,
  Normalization,
  InferenceDropout,
])
  tf.serialization.registerClass(layer);

/** The Keras class each tlx layer stands for (what `model.summary()` prints). */
const kerasClassNames: Record<string, string> = {
  [InferenceBatchNormalization.className]: 'BatchNormalization',
  [ReLU6.className]: 'ReLU',
  [ReLU.className]: 'ReLU',
  [HardSigmoid.className]: 'ReLU',
  [Activation.className]: 'Activation',
  [GlobalAveragePooling2D.className]: 'GlobalAveragePooling2D',
  [ChannelRescaling.className]: 'Rescaling',
  [Normalization.className]: 'Normalization',
  [InferenceDropout.className]: 'Dropout',
  [SeededDropout.className]: 'Dropout',
};

export function kerasClassName(layer: { getClassName(): string }): string {
  const name = layer.getClassName();
  return kerasClassNames[name] ?? name;
}
