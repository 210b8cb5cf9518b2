import type { Scalar, Tensor, Tensor1D } from '@tensorflow/tfjs-node';
import type { HeadKind } from '../models/classifier.ts';
import { tf } from '../tfjs/tf.ts';

/**
 * Loss and accuracy of a head, as Keras computes them: BinaryCrossentropy(from_logits)
 * or CategoricalCrossentropy(from_logits) with label smoothing, sample weights reduced
 * as sum(loss x weight) / batch size, accuracy at logit 0 (probability 0.5) or argmax.
 */
export interface Objective {
  head: HeadKind;
  classCount: number;
  labelSmoothing: number;
  /** Weight per class index, or undefined for none. */
  classWeights?: number[];
}

function perSampleLoss(objective: Objective, logits: Tensor, labels: Tensor1D): Tensor1D {
  return tf.tidy(() => {
    if (objective.head === 'binary_logit') {
      const targets = labels.toFloat().reshape([-1, 1]);
      return tf.losses
        .sigmoidCrossEntropy(targets, logits, undefined, objective.labelSmoothing, tf.Reduction.NONE)
        .reshape([-1]) as Tensor1D;
    }
    const targets = tf.oneHot(labels, objective.classCount).toFloat();
    return tf.losses
      .softmaxCrossEntropy(targets, logits, undefined, objective.labelSmoothing, tf.Reduction.NONE)
      .reshape([-1]) as Tensor1D;
  });
}

export function batchLoss(objective: Objective, logits: Tensor, labels: Tensor1D): Scalar {
  return tf.tidy(() => {
    const losses = perSampleLoss(objective, logits, labels);
    if (!objective.classWeights) return losses.mean() as Scalar;
    const weights = tf.gather(tf.tensor1d(objective.classWeights), labels);
    return losses.mul(weights).sum().div(labels.shape[0]) as Scalar;
  });
}

/** Predicted class index per sample. */
export function predictedClasses(head: HeadKind, logits: Tensor): Tensor1D {
  return tf.tidy(
    () => (head === 'binary_logit' ? logits.reshape([-1]).greater(0).toInt() : logits.argMax(-1).toInt()) as Tensor1D,
  );
}

/** Probability per class, [batch, classCount], for two classes too. */
export function classProbabilities(head: HeadKind, logits: Tensor): Tensor {
  return tf.tidy(() => {
    if (head === 'softmax_logits') return tf.softmax(logits);
    const positive = tf.sigmoid(logits.reshape([-1, 1]));
    return tf.concat([tf.sub(1, positive), positive], 1);
  });
}

/** Class weights for `auto`: n_samples / (n_classes x count), as sklearn's "balanced". */
export function balancedClassWeights(labels: Int32Array, classCount: number): number[] {
  const counts = new Array<number>(classCount).fill(0);
  for (const label of labels) counts[label]++;
  return counts.map((count) => (count === 0 ? 0 : labels.length / (classCount * count)));
}
