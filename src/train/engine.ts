import type { LayersModel, Optimizer as TfOptimizer, Scalar, Tensor, Tensor1D, Tensor4D } from '@tensorflow/tfjs-node';
import cliProgress from 'cli-progress';
import type { EarlyStopping } from '../config/resolved.ts';
import type { ImageSplit } from '../data/images.ts';
import { FoldedInference, StagedModel } from '../models/graph.ts';
import { Random, setStepSeed } from '../random.ts';
import { tf } from '../tf.ts';
import { batchLoss, classProbabilities, predictedClasses, type Objective } from './objective.ts';
import { setLearningRate } from './optimizers.ts';

/**
 * The training engine: epochs over batches for any Keras-like model and head. It knows
 * nothing of MobileNetV2 or of files; the caller wires checkpoints and records through
 * onEpochEnd, and stops it through shouldStop.
 */

export interface EpochMetrics {
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
  /** When the epoch ended (ms since the epoch): the timestamp of its metric points everywhere. */
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

export interface PhaseRun {
  phase: string;
  /** Epoch numbers this phase covers: (firstEpoch .. lastEpoch], continuing a resumed run. */
  startEpoch: number;
  endEpoch: number;
  /** First epoch of the phase (for the schedule), before any resume. */
  phaseStartEpoch: number;
  optimizer: TfOptimizer;
  learningRateAt: (epochInPhase: number) => number;
  earlyStopping?: EarlyStopping;
}

export interface TrainInputs {
  model: LayersModel;
  objective: Objective;
  train: ImageSplit;
  validation: ImageSplit;
  batchSize: number;
  seed: number;
  /** Augments a training batch (returns a new tensor); identity when there is no augmentation. */
  augment: (images: Tensor4D, random: Random) => Tensor4D;
  /** Called after each epoch, after validation: checkpoint and record here. */
  onEpochEnd: (record: EpochRecord) => Promise<void>;
  /** Polled after every batch (Ctrl-C). */
  shouldStop: () => boolean;
  /** Show a bar per epoch on a terminal. */
  progress: boolean;
  /**
   * The input is the same every epoch (no augmentation): compute the frozen stage's outputs
   * once per phase and train the rest on them (within FROZEN_CACHE_BUDGET_BYTES).
   */
  cacheFrozenOutputs: boolean;
  log: (message: string, fields?: Record<string, unknown>) => void;
}

export interface PhaseOutcome {
  stoppedEarly: boolean;
  interrupted: boolean;
  /** The epoch whose weights the model holds at the end (best one when restored). */
  epochs: EpochRecord[];
  restoredEpoch?: number;
}

/**
 * Caching the frozen stage's outputs trades memory for time; above this many bytes for
 * the training and validation splits together, the frozen stage is recomputed instead.
 */
export const FROZEN_CACHE_BUDGET_BYTES = 1024 ** 3;

/** A batch as the trainable stage sees it: the frozen stage's outputs for some samples. */
interface FrontierBatch {
  frontier: Tensor[];
  labels: Tensor1D;
  indices: number[];
}

/** A split seen through the frozen stage: computed batch by batch, or cached once. */
interface FrontierSource {
  length: number;
  labels: Int32Array;
  batches(batchSize: number, order: readonly number[] | undefined, epoch: number): Generator<FrontierBatch>;
}

function computedFrontier(staged: StagedModel, split: ImageSplit, augment?: (images: Tensor4D, epoch: number, batchIndex: number) => Tensor4D): FrontierSource {
  return {
    length: split.length,
    labels: split.labels,
    *batches(batchSize, order, epoch) {
      let batchIndex = 0;
      for (const batch of split.batches(batchSize, order)) {
        const frontier = tf.tidy(() => staged.frozen(augment ? augment(batch.images as Tensor4D, epoch, batchIndex) : batch.images));
        batch.images.dispose();
        batchIndex++;
        yield { frontier, labels: batch.labels, indices: batch.indices };
      }
    },
  };
}

/** A split's frozen-stage outputs, computed once (inference: nothing in that stage trains). */
export function cacheFrozenOutputs(staged: StagedModel, split: ImageSplit, batchSize: number): { source: FrontierSource; dispose: () => void } {
  const parts: Tensor[][] = [];
  for (const batch of split.batches(batchSize)) {
    parts.push(staged.frozen(batch.images));
    tf.dispose([batch.images, batch.labels]);
  }
  const all = staged.split.frontier.map((_, k) => {
    const column = parts.map((part) => part[k]);
    const joined = column.length === 1 ? column[0] : tf.concat(column);
    if (column.length > 1) tf.dispose(column);
    return joined;
  });
  const source: FrontierSource = {
    length: split.length,
    labels: split.labels,
    *batches(size, order) {
      const sequence = order ?? Array.from({ length: split.length }, (_, i) => i);
      for (let start = 0; start < sequence.length; start += size) {
        const indices = sequence.slice(start, start + size);
        const frontier = tf.tidy(() => {
          const rows = tf.tensor1d(indices, 'int32');
          return all.map((tensor) => tf.gather(tensor, rows));
        });
        yield { frontier, labels: tf.tensor1d(indices.map((i) => split.labels[i]), 'int32'), indices };
      }
    },
  };
  return { source, dispose: () => tf.dispose(all) };
}

/** Loss, accuracy, predictions and probabilities over batches of logits (disposed here). */
function score(objective: Objective, split: { length: number; labels: Int32Array }, batches: Iterable<{ logits: Tensor; labels: Tensor1D; indices: number[] }>): Evaluation {
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
  return { loss: lossSum / Math.max(1, split.length), accuracy: correct / Math.max(1, split.length), predictions, probabilities };
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
function evaluateCached(staged: StagedModel, objective: Objective, source: FrontierSource, batchSize: number): Evaluation {
  return score(
    objective,
    source,
    (function* () {
      for (const batch of source.batches(batchSize, undefined, 0)) {
        const logits = staged.trainable(batch.frontier, false);
        tf.dispose(batch.frontier);
        yield { logits, labels: batch.labels, indices: batch.indices };
      }
    })(),
  );
}

/** The order of the training set in an epoch: a permutation fixed by seed and epoch. */
export function epochOrder(seed: number, epoch: number, length: number): number[] {
  return new Random(seed, 'shuffle', epoch).permutation(length);
}

function snapshot(model: LayersModel): Tensor[] {
  return model.weights.map((weight) => weight.read().clone());
}

function restore(model: LayersModel, values: Tensor[]): void {
  model.weights.forEach((weight, i) => weight.write(values[i]));
}

function improved(monitor: string, current: number, best: number, minDelta: number): boolean {
  return monitor.endsWith('loss') ? current < best - minDelta : current > best + minDelta;
}

/** One optimizer step: the trainable stage on a batch's frontier, under the tape. */
function trainStep(staged: StagedModel, objective: Objective, frontier: Tensor[], labels: Tensor1D, optimizer: TfOptimizer): { loss: Scalar; predicted: Tensor } {
  let predicted: Tensor | undefined;
  const loss = optimizer.minimize(
    () => {
      const logits = staged.trainable(frontier, true);
      predicted = tf.keep(predictedClasses(objective.head, logits));
      return batchLoss(objective, logits, labels);
    },
    true,
    staged.variables,
  ) as Scalar;
  return { loss, predicted: predicted! };
}

async function trainEpoch(inputs: TrainInputs, staged: StagedModel, train: FrontierSource, optimizer: TfOptimizer, epoch: number): Promise<{ loss: number; accuracy: number; batches: number; interrupted: boolean }> {
  const { objective, batchSize } = inputs;
  const bar = inputs.progress
    ? new cliProgress.SingleBar({ format: `epoch ${epoch} [{bar}] {value}/{total} batches | loss {loss} | acc {acc} | ETA {eta_formatted}`, stream: process.stderr, hideCursor: true, clearOnComplete: false }, cliProgress.Presets.shades_classic)
    : undefined;
  bar?.start(Math.ceil(train.length / batchSize), 0, { loss: '-', acc: '-' });
  let lossSum = 0;
  let correct = 0;
  let seen = 0;
  let batchIndex = 0;
  let interrupted = false;
  for (const batch of train.batches(batchSize, epochOrder(inputs.seed, epoch, train.length), epoch)) {
    setStepSeed(Math.floor(new Random(inputs.seed, 'dropout', epoch, batchIndex).next() * 2147483646) + 1);
    const { loss, predicted } = trainStep(staged, objective, batch.frontier, batch.labels, optimizer);
    const n = batch.indices.length;
    lossSum += loss.dataSync()[0] * n;
    const predictedValues = predicted.dataSync();
    for (let i = 0; i < n; i++) if (predictedValues[i] === train.labels[batch.indices[i]]) correct++;
    seen += n;
    tf.dispose([loss, predicted, ...batch.frontier, batch.labels]);
    batchIndex++;
    bar?.update(batchIndex, { loss: (lossSum / seen).toFixed(4), acc: (correct / seen).toFixed(4) });
    // Let signal handlers (Ctrl-C) and timers run between batches.
    await new Promise((resolve) => setImmediate(resolve));
    if (inputs.shouldStop()) {
      interrupted = true;
      break;
    }
  }
  bar?.stop();
  setStepSeed(undefined);
  return { loss: lossSum / Math.max(1, seen), accuracy: correct / Math.max(1, seen), batches: batchIndex, interrupted };
}

/** One optimizer step on one batch, as trainEpoch does it (for the benchmarks). */
export function trainStepForBench(staged: StagedModel, objective: Objective, images: Tensor4D, labels: Tensor1D, optimizer: TfOptimizer): number {
  const frontier = staged.frozen(images);
  const { loss, predicted } = trainStep(staged, objective, frontier, labels, optimizer);
  const value = loss.dataSync()[0];
  tf.dispose([loss, predicted, ...frontier]);
  return value;
}

/** Runs the epochs of one phase; the model's trainable flags must already be set. */
export async function runPhase(inputs: TrainInputs, phase: PhaseRun): Promise<PhaseOutcome> {
  const outcome: PhaseOutcome = { stoppedEarly: false, interrupted: false, epochs: [] };
  const stopping = phase.earlyStopping;
  let best: { value: number; epoch: number; weights?: Tensor[] } | undefined;
  let sinceBest = 0;
  const staged = new StagedModel(inputs.model);
  const cacheStarted = performance.now();
  const cacheBytes = staged.frontierBytesPerSample() * (inputs.train.length + inputs.validation.length);
  const caching = inputs.cacheFrozenOutputs && phase.endEpoch > phase.startEpoch && cacheBytes <= FROZEN_CACHE_BUDGET_BYTES;
  if (inputs.cacheFrozenOutputs && !caching && phase.endEpoch > phase.startEpoch) {
    inputs.log(`${phase.phase}: not caching the frozen layers' outputs (${(cacheBytes / 1024 ** 2).toFixed(0)} MB over the ${(FROZEN_CACHE_BUDGET_BYTES / 1024 ** 2).toFixed(0)} MB budget); recomputing them every epoch`);
  }
  const caches = caching ? [cacheFrozenOutputs(staged, inputs.train, inputs.batchSize), cacheFrozenOutputs(staged, inputs.validation, inputs.batchSize)] : undefined;
  const trainSource = caches?.[0].source ?? computedFrontier(staged, inputs.train, (images, epoch, batchIndex) => inputs.augment(images, new Random(inputs.seed, 'augment', epoch, batchIndex)));
  // Computing the cache is part of the first epoch's cost.
  let carrySeconds = caches ? (performance.now() - cacheStarted) / 1000 : 0;
  try {
  for (let epoch = phase.startEpoch + 1; epoch <= phase.endEpoch; epoch++) {
    const started = performance.now();
    const learningRate = phase.learningRateAt(epoch - phase.phaseStartEpoch - 1);
    setLearningRate(phase.optimizer, learningRate);
    const trained = await trainEpoch(inputs, staged, trainSource, phase.optimizer, epoch);
    if (trained.interrupted) {
      outcome.interrupted = true;
      break;
    }
    const validation = caches ? evaluateCached(staged, inputs.objective, caches[1].source, inputs.batchSize) : evaluate(inputs.model, inputs.objective, inputs.validation, inputs.batchSize);
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
    outcome.epochs.push(record);
    inputs.log(`epoch ${epoch} (${phase.phase}): loss ${record.loss.toFixed(4)} acc ${record.accuracy.toFixed(4)} val_loss ${record.val_loss.toFixed(4)} val_acc ${record.val_accuracy.toFixed(4)} (${record.seconds.toFixed(1)} s)`, { ...record });
    await inputs.onEpochEnd(record);
    if (stopping) {
      const value = record[stopping.monitor];
      if (!best || improved(stopping.monitor, value, best.value, stopping.min_delta)) {
        if (best?.weights) tf.dispose(best.weights);
        best = { value, epoch, weights: stopping.restore_best_weights ? snapshot(inputs.model) : undefined };
        sinceBest = 0;
      } else if (++sinceBest > stopping.patience) {
        outcome.stoppedEarly = true;
        inputs.log(`early stopping in ${phase.phase} at epoch ${epoch}: ${stopping.monitor} has not improved since epoch ${best.epoch}`);
        break;
      }
    }
  }
  } finally {
    caches?.forEach((cache) => cache.dispose());
    staged.dispose();
  }
  if (best?.weights) {
    if (outcome.stoppedEarly && best.epoch !== outcome.epochs.at(-1)?.epoch) {
      restore(inputs.model, best.weights);
      outcome.restoredEpoch = best.epoch;
    }
    tf.dispose(best.weights);
  }
  return outcome;
}
