import type { LayersModel, SymbolicTensor } from '@tensorflow/tfjs-node';
import { baseRescalesInside, isBaseName, type BaseModelName } from '../config/bases.ts';
import { tf } from '../tfjs/tf.ts';
import { buildBase } from './base-builders.ts';
import { SeededDropout } from './layers.ts';

/** MobileNetV2 expects pixels in [-1, 1]: x / 127.5 - 1, applied by the classifier's first layer. */
const pixelScale = { scale: 1 / 127.5, offset: -1 };

/**
 * The tutorial's model: raw RGB pixels in [0, 255] -> the base's own preprocessing
 * (MobileNetV2: x / 127.5 - 1 in the classifier's first layer, as the tutorial's
 * preprocess_input; MobileNetV3 and EfficientNet do it inside the base, as in Keras) ->
 * the pretrained base (a nested model, so its layer indices stay Keras's) -> global
 * average pooling -> dropout -> dense.
 * Two classes: one logit (binary cross-entropy from logits, as the tutorial).
 * More: one logit per class (softmax cross-entropy).
 */

export type HeadKind = 'binary_logit' | 'softmax_logits';

export interface ClassifierSpec {
  base: BaseModelName;
  alpha: number;
  /** MobileNetV3's minimalistic variant (default false). */
  minimalistic?: boolean;
  imageSize: [height: number, width: number];
  classCount: number;
  dropout: number;
  /** Seeds the dense layer's initial weights. */
  seed: number;
}

export interface Classifier {
  model: LayersModel;
  base: LayersModel;
  head: HeadKind;
  /** Units of the final dense layer (1 for binary, else the class count). */
  units: number;
  spec: ClassifierSpec;
}

/** A ClassifierSpec read back from a run folder (model/classifier.json; older folders have no minimalistic). */
export function classifierSpecOf(json: {
  base: string;
  alpha: number;
  minimalistic?: boolean;
  imageSize: [number, number];
  classCount: number;
  dropout: number;
  seed: number;
}): ClassifierSpec {
  if (!isBaseName(json.base)) throw new Error(`model/classifier.json: unknown base ${json.base}`);
  return {
    base: json.base,
    alpha: json.alpha,
    minimalistic: json.minimalistic ?? false,
    imageSize: json.imageSize,
    classCount: json.classCount,
    dropout: json.dropout,
    seed: json.seed,
  };
}

function headKindFor(classCount: number): HeadKind {
  return classCount === 2 ? 'binary_logit' : 'softmax_logits';
}

export function buildClassifier(spec: ClassifierSpec): Classifier {
  const [height, width] = spec.imageSize;
  const base = buildBase(spec.base, {
    alpha: spec.alpha,
    minimalistic: spec.minimalistic,
    inputShape: [height, width, 3],
    seed: spec.seed,
  });
  const head = headKindFor(spec.classCount);
  const units = head === 'binary_logit' ? 1 : spec.classCount;
  const inputs = tf.input({ shape: [height, width, 3], name: 'image' });
  let x = inputs;
  if (!baseRescalesInside(spec.base))
    x = tf.layers.rescaling({ ...pixelScale, name: 'preprocess' }).apply(x) as SymbolicTensor;
  x = base.apply(x) as SymbolicTensor;
  x = tf.layers.globalAveragePooling2d({ name: 'global_average_pooling2d' }).apply(x) as SymbolicTensor;
  x = new SeededDropout({ rate: spec.dropout, name: 'dropout' }).apply(x) as SymbolicTensor;
  const outputs = tf.layers
    .dense({
      units,
      name: 'predictions',
      kernelInitializer: tf.initializers.glorotUniform({ seed: spec.seed }),
      biasInitializer: 'zeros',
    })
    .apply(x) as SymbolicTensor;
  const model = tf.model({ inputs, outputs, name: 'classifier' });
  return { model, base, head, units, spec };
}

export type Phase = 'feature_extraction' | 'fine_tune';

/**
 * Trainable flags of a phase, as the tutorial sets them: feature extraction freezes the
 * whole base; fine-tuning unfreezes base layers from `fineTuneAt` on. Returns the number
 * of trainable variables (the tutorial prints 2, then 56 for fine_tune_at 100).
 */
export function setPhaseTrainable(classifier: Classifier, phase: Phase, fineTuneAt: number): number {
  classifier.base.trainable = phase === 'fine_tune';
  if (phase === 'fine_tune') {
    classifier.base.layers.forEach((layer, index) => {
      layer.trainable = index >= fineTuneAt;
    });
  }
  return classifier.model.trainableWeights.length;
}

/** Trainable base layers (Keras's count of the base's layers with trainable=True and weights). */
export function trainableBaseLayerCount(classifier: Classifier): number {
  if (!classifier.base.trainable) return 0;
  return classifier.base.layers.filter((layer) => layer.trainable && layer.trainableWeights.length > 0).length;
}
