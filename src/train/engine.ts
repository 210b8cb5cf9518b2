import type { LayersModel, Optimizer as TfOptimizer, Scalar, Tensor, Tensor1D, Tensor4D } from '@tensorflow/tfjs-node';
import { Random } from '../core/random.ts';
import type { ImageSplit } from '../data/images.ts';
import type { ImageVariants } from '../data/augment.ts';
import { FoldedInference, StagedModel, type Layer } from '../engine/graph.ts';
import { cheapestPrefix } from '../engine/recompute.ts';
import {
  cacheFrozenOutputs,
  computedFrozenOutputs,
  planFrozenOutputsCache,
  type FrozenOutputsCache,
  type FrozenOutputsSource,
  type FrozenPrefixStore,
} from '../engine/frozen-outputs.ts';
import { formatBytes } from '../core/bytes.ts';
import { diskRoom } from '../core/files.ts';
import { cacheMemoryBytes } from '../core/memory.ts';
import { tf } from '../tfjs/tf.ts';
import { batchLoss, classProbabilities, predictedClasses, type Objective } from './objective.ts';
import { setLearningRate } from './optimizers.ts';

/**
 * The training engine: the epochs of one phase over batches, for any Keras-like model and
 * head. It knows nothing of MobileNetV2 or of files. Everything that reacts to training
 * (checkpoints, early stopping, live tracking, progress, Ctrl-C) is a callback, as in
 * Keras's callbacks/: the engine emits onPhaseBegin, onBatchEnd, onEpochEnd and onPhaseEnd,
 * and a callback stops the phase through `control`.
 */

interface EpochMetrics {
  loss: number;
  accuracy: number;
  val_loss: number;
  val_accuracy: number;
}

export interface EpochRecord extends EpochMetrics {
  /** Continuous across phases: feature extraction 1..N, fine-tuning N+1..; 0 is before training. */
  epoch: number;
  phase: string;
  learning_rate: number;
  seconds: number;
  /** When the epoch ended (ms since 1970): the timestamp of its metric points everywhere. */
  time: number;
}

export interface Evaluation {
  loss: number;
  accuracy: number;
  /** Predicted class per sample, in split order. */
  predictions: Int32Array;
  /** Class probabilities per sample, row-major [n, classCount]. */
  probabilities: Float32Array;
}

/** The epochs of a phase: numbered `first..last`, continuing after epoch `resumeAfter`. */
export interface PhaseSpan {
  phase: string;
  first: number;
  last: number;
  /** The last epoch already trained: first - 1 for a fresh phase, later when resuming. */
  resumeAfter: number;
}

export interface PhaseSettings extends PhaseSpan {
  optimizer: TfOptimizer;
  /** Learning rate of an epoch, 0-based within the phase. */
  learningRateAt: (epochInPhase: number) => number;
}

export interface FitInputs {
  model: LayersModel;
  objective: Objective;
  train: ImageSplit;
  validation: ImageSplit;
  batchSize: number;
  seed: number;
  /** Augments a training batch (returns a new tensor); identity when there is no augmentation. */
  augment: (images: Tensor4D, random: Random) => Tensor4D;
  /**
   * The augmentation as a few fixed variants of each image (none, or a random flip), when it
   * is one: the frozen stage's outputs are then computed once per phase for every variant
   * and the rest trains on them (when the epochs left would compute at least as much).
   * Undefined: recomputed from augmented pixels.
   */
  variants?: ImageVariants;
  /**
   * Where those outputs are kept: up to `memoryBytes` in memory (default cacheMemoryBytes()),
   * beyond that in files under `dir`; without `dir`, a cache too large for memory is not
   * made and the frozen layers run every epoch.
   */
  cacheStorage?: { dir?: string; memoryBytes?: number };
  /**
   * The base's first layers (in order) that every trial of a sweep shares (below its smallest
   * fine_tune_at), or that fine-tuning shares with feature extraction: the outputs of the
   * cheapest cut through them (recompute.ts) are computed once and kept in `store` for the
   * next phase or trial.
   */
  sharedPrefix?: { layers: readonly Layer[]; store: FrozenPrefixStore };
  /**
   * Called once before the first epoch with the model on the validation split (Keras's
   * `evaluate` before `fit`), through the phase's frozen layers' outputs: a cached phase answers from the
   * outputs it has just computed instead of running the frozen layers again.
   */
  beforeTraining?: (validation: Evaluation) => void | Promise<void>;
  log: (message: string, fields?: Record<string, unknown>) => void;
}

/** How a callback stops the phase (Keras's model.stop_training). */
export interface TrainingControl {
  stop(reason: 'early_stopping' | 'interrupted'): void;
  readonly stopReason?: 'early_stopping' | 'interrupted';
}

export interface BatchProgress {
  phase: string;
  epoch: number;
  batch: number;
  batches: number;
  loss: number;
  accuracy: number;
}

/**
 * The last validation of a phase and the weights it saw. A tfjs variable gets new data on
 * every assign (an optimizer step, a restore), so the same data ids mean the same weights.
 */
export interface ValidatedWeights {
  evaluation: Evaluation;
  weights: readonly object[];
}

/** The identity of a model's current weights (see ValidatedWeights). */
function weightsIdentity(model: LayersModel): readonly object[] {
  return model.weights.map((weight) => weight.read().dataId);
}

/** The validation a phase ended with, if the model still has the weights it was made with. */
export function validationOfCurrentWeights(
  model: LayersModel,
  validated: ValidatedWeights | undefined,
): Evaluation | undefined {
  if (!validated) return undefined;
  const now = weightsIdentity(model);
  return now.length === validated.weights.length && now.every((id, i) => id === validated.weights[i])
    ? validated.evaluation
    : undefined;
}

export interface PhaseEnd extends PhaseSpan {
  /** The last epoch trained and recorded. */
  lastTrained: number;
  /** That epoch's validation, and the weights it was made with. */
  lastValidation?: ValidatedWeights;
  /** All epochs ran, or a callback ended the phase early on purpose; false when interrupted. */
  complete: boolean;
  stopReason?: 'early_stopping' | 'interrupted';
}

export interface Callback {
  onPhaseBegin?(span: PhaseSpan): void | Promise<void>;
  onBatchEnd?(progress: BatchProgress, control: TrainingControl): void;
  onEpochEnd?(record: EpochRecord, control: TrainingControl): void | Promise<void>;
  onPhaseEnd?(end: PhaseEnd): void | Promise<void>;
}

/** Loss, accuracy, predictions and probabilities over batches of logits (disposed here). */
function score(
  objective: Objective,
  split: { length: number; labels: Int32Array },
  batches: Iterable<{ logits: Tensor; labels: Tensor1D; indices: number[] }>,
): Evaluation {
  const predictions = new Int32Array(split.length);
  const probabilities = new Float32Array(split.length * objective.classCount);
  let lossSum = 0;
  let correct = 0;
  let offset = 0;
  for (const batch of batches) {
    const [loss, predicted, probs] = tf.tidy(() => [
      batchLoss({ ...objective, classWeights: undefined }, batch.logits, batch.labels),
      predictedClasses(objective.head, batch.logits),
      classProbabilities(objective.head, batch.logits),
    ]);
    const n = batch.indices.length;
    lossSum += (loss.dataSync()[0] as number) * n;
    const predictedValues = predicted.dataSync() as Int32Array;
    predictions.set(predictedValues, offset);
    probabilities.set(probs.dataSync() as Float32Array, offset * objective.classCount);
    for (let i = 0; i < n; i++) if (predictedValues[i] === split.labels[batch.indices[i]]) correct++;
    offset += n;
    tf.dispose([loss, predicted, probs, batch.logits, batch.labels]);
  }
  return {
    loss: lossSum / Math.max(1, split.length),
    accuracy: correct / Math.max(1, split.length),
    predictions,
    probabilities,
  };
}

/** The model on a split, with every Conv -> BatchNorm chain folded (the weights as they are now). */
export function evaluate(model: LayersModel, objective: Objective, split: ImageSplit, batchSize: number): Evaluation {
  const folded = new FoldedInference(model);
  try {
    return score(
      objective,
      split,
      (function* () {
        for (const batch of split.batches(batchSize)) {
          const logits = folded.logits(batch.images);
          batch.images.dispose();
          yield { logits, labels: batch.labels, indices: batch.indices };
        }
      })(),
    );
  } finally {
    folded.dispose();
  }
}

/** The trainable stage on cached frozen-stage outputs (validation during a cached phase). */
function evaluateCached(
  staged: StagedModel,
  objective: Objective,
  source: FrozenOutputsSource,
  batchSize: number,
): Evaluation {
  const inference = staged.trainableInference();
  try {
    return score(
      objective,
      source,
      (function* () {
        for (const batch of source.batches(batchSize, undefined, 0)) {
          const logits = inference.logits(batch.frozenOutputs);
          tf.dispose(batch.frozenOutputs);
          yield { logits, labels: batch.labels, indices: batch.indices };
        }
      })(),
    );
  } finally {
    inference.dispose();
  }
}

/** The order of the training set in an epoch: a permutation fixed by seed and epoch. */
export function epochOrder(seed: number, epoch: number, length: number): number[] {
  return new Random(seed, 'shuffle', epoch).permutation(length);
}

/** The dropout seed of one step: fixed by seed, epoch and batch. */
function stepSeed(seed: number, epoch: number, batchIndex: number): number {
  return new Random(seed, 'dropout', epoch, batchIndex).opSeed();
}

/** One optimizer step: the trainable stage on a batch's frozen layers' outputs, under the tape (bench/steps.ts times it alone). */
export function trainStep(
  staged: StagedModel,
  objective: Objective,
  frozenOutputs: Tensor[],
  labels: Tensor1D,
  optimizer: TfOptimizer,
  seed: number,
): { loss: Scalar; predicted: Tensor } {
  let predicted: Tensor | undefined;
  const loss = optimizer.minimize(
    () => {
      const logits = staged.trainable(frozenOutputs, true, seed);
      predicted = tf.keep(predictedClasses(objective.head, logits));
      return batchLoss(objective, logits, labels);
    },
    true,
    staged.variables,
  ) as Scalar;
  return { loss, predicted: predicted! };
}

class Control implements TrainingControl {
  stopReason?: 'early_stopping' | 'interrupted';
  stop(reason: 'early_stopping' | 'interrupted'): void {
    // An interrupt outranks early stopping: the phase did not finish as planned.
    if (this.stopReason !== 'interrupted') this.stopReason = reason;
  }
}

async function trainEpoch(
  inputs: FitInputs,
  staged: StagedModel,
  train: FrozenOutputsSource,
  phase: PhaseSettings,
  epoch: number,
  callbacks: readonly Callback[],
  control: Control,
): Promise<{ loss: number; accuracy: number; interrupted: boolean }> {
  const { objective, batchSize } = inputs;
  const batches = Math.ceil(train.length / batchSize);
  let lossSum = 0;
  let correct = 0;
  let seen = 0;
  let batchIndex = 0;
  for (const batch of train.batches(batchSize, epochOrder(inputs.seed, epoch, train.length), epoch)) {
    const { loss, predicted } = trainStep(
      staged,
      objective,
      batch.frozenOutputs,
      batch.labels,
      phase.optimizer,
      stepSeed(inputs.seed, epoch, batchIndex),
    );
    const n = batch.indices.length;
    lossSum += loss.dataSync()[0] * n;
    const predictedValues = predicted.dataSync();
    for (let i = 0; i < n; i++) if (predictedValues[i] === train.labels[batch.indices[i]]) correct++;
    seen += n;
    tf.dispose([loss, predicted, ...batch.frozenOutputs, batch.labels]);
    batchIndex++;
    const progress = {
      phase: phase.phase,
      epoch,
      batch: batchIndex,
      batches,
      loss: lossSum / seen,
      accuracy: correct / seen,
    };
    for (const callback of callbacks) callback.onBatchEnd?.(progress, control);
    // Let signal handlers (Ctrl-C) and timers run between batches.
    await new Promise((resolve) => setImmediate(resolve));
    if (control.stopReason === 'interrupted') return { loss: Number.NaN, accuracy: Number.NaN, interrupted: true };
  }
  return { loss: lossSum / Math.max(1, seen), accuracy: correct / Math.max(1, seen), interrupted: false };
}

/** The model on the validation split: from the phase's cache, or through the whole model. */
function validate(inputs: FitInputs, staged: StagedModel, caches: FrozenOutputsCache | undefined): Evaluation {
  return caches
    ? evaluateCached(staged, inputs.objective, caches.validation, inputs.batchSize)
    : evaluate(inputs.model, inputs.objective, inputs.validation, inputs.batchSize);
}

/**
 * What the phase may use for its cache: memory, and half the free space under the cache
 * folder (a cache is worth less than the room other programs on the machine may need).
 */
export function cacheRoom(storage: FitInputs['cacheStorage']): { memory: number; disk: number } {
  return {
    memory: storage?.memoryBytes ?? cacheMemoryBytes(),
    disk: storage?.dir ? diskRoom(storage.dir) / 2 : 0,
  };
}

/** The phase's frozen layers' outputs cache, when planFrozenOutputsCache makes one. */
function phaseCache(
  inputs: FitInputs,
  staged: StagedModel,
  phase: string,
  remaining: number,
): FrozenOutputsCache | undefined {
  const { variants, sharedPrefix } = inputs;
  if (!variants) return undefined;
  const room = cacheRoom(inputs.cacheStorage);
  const plan = planFrozenOutputsCache(
    staged,
    {
      train: inputs.train,
      validation: inputs.validation,
      variants,
      prefix: sharedPrefix ? cheapestPrefix(staged.graph, sharedPrefix.layers) : undefined,
      remainingEpochs: remaining,
    },
    room,
  );
  if (plan.choice === 'recompute') return undefined;
  if (plan.choice === 'no room') {
    inputs.log(
      `${phase}: not caching the frozen layers' outputs (${formatBytes(plan.bytes)}: over the ${formatBytes(room.memory)} kept in memory, and ${inputs.cacheStorage?.dir ? `half the free disk under ${inputs.cacheStorage.dir} is ${formatBytes(room.disk)}` : 'no folder for a file'}); recomputing them every epoch`,
    );
    return undefined;
  }
  const cache = cacheFrozenOutputs(staged, { ...inputs, variants }, plan, {
    dir: inputs.cacheStorage?.dir,
    store: sharedPrefix?.store,
  });
  const what = variants.count > 1 ? `for ${variants.count} variants of each image (${variants.key})` : 'once';
  const where =
    plan.diskBytes > 0
      ? `; ${formatBytes(plan.diskBytes)} of it in files under ${inputs.cacheStorage?.dir}, beyond the ${formatBytes(room.memory)} a cache keeps in memory`
      : '';
  const shared = plan.prefix
    ? (cache.reusedPrefix
        ? '; the outputs of the shared frozen layers reused (computed earlier in this process)'
        : '; the outputs of the shared frozen layers kept for what follows (fine-tuning, later trials)') +
      (plan.own === 'per step'
        ? '; the few frozen layers above them run every step (cheaper than keeping their wider outputs)'
        : '')
    : '';
  inputs.log(`${phase}: frozen layers' outputs computed ${what} (${formatBytes(plan.bytes)}${where})${shared}`, {
    reused_prefix: cache.reusedPrefix,
    cache_memory_bytes: plan.memoryBytes,
    cache_disk_bytes: plan.diskBytes,
  });
  return cache;
}

/**
 * Trains epochs resumeAfter+1 .. last of a phase; the model's trainable flags must already
 * be set. Callbacks run in order at each event.
 */
export async function fitPhase(
  inputs: FitInputs,
  phase: PhaseSettings,
  callbacks: readonly Callback[],
): Promise<PhaseEnd> {
  const span: PhaseSpan = { phase: phase.phase, first: phase.first, last: phase.last, resumeAfter: phase.resumeAfter };
  const control = new Control();
  let lastTrained = phase.resumeAfter;
  for (const callback of callbacks) await callback.onPhaseBegin?.(span);
  const staged = new StagedModel(inputs.model);
  const remaining = phase.last - phase.resumeAfter;
  const cacheStarted = performance.now();
  const caches = remaining > 0 ? phaseCache(inputs, staged, phase.phase, remaining) : undefined;
  const trainSource =
    caches?.train ??
    computedFrozenOutputs(staged, inputs.train, (images, epoch, batchIndex) =>
      inputs.augment(images, new Random(inputs.seed, 'augment', epoch, batchIndex)),
    );
  // Computing the cache is part of the first epoch's cost.
  let carrySeconds = caches ? (performance.now() - cacheStarted) / 1000 : 0;
  let lastValidation: ValidatedWeights | undefined;
  try {
    if (inputs.beforeTraining) await inputs.beforeTraining(validate(inputs, staged, caches));
    for (let epoch = phase.resumeAfter + 1; epoch <= phase.last && !control.stopReason; epoch++) {
      const started = performance.now();
      const learningRate = phase.learningRateAt(epoch - phase.first);
      setLearningRate(phase.optimizer, learningRate);
      const trained = await trainEpoch(inputs, staged, trainSource, phase, epoch, callbacks, control);
      if (trained.interrupted) break;
      const validation = validate(inputs, staged, caches);
      lastValidation = { evaluation: validation, weights: weightsIdentity(inputs.model) };
      const record: EpochRecord = {
        epoch,
        phase: phase.phase,
        loss: trained.loss,
        accuracy: trained.accuracy,
        val_loss: validation.loss,
        val_accuracy: validation.accuracy,
        learning_rate: learningRate,
        seconds: (performance.now() - started) / 1000 + carrySeconds,
        time: Date.now(),
      };
      carrySeconds = 0;
      lastTrained = epoch;
      for (const callback of callbacks) await callback.onEpochEnd?.(record, control);
    }
  } finally {
    caches?.dispose();
    staged.dispose();
  }
  const end: PhaseEnd = {
    ...span,
    lastTrained,
    lastValidation,
    complete: control.stopReason !== 'interrupted',
    stopReason: control.stopReason,
  };
  for (const callback of callbacks) await callback.onPhaseEnd?.(end);
  return end;
}
