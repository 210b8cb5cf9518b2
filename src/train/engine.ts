import type { LayersModel, Optimizer as TfOptimizer, Scalar, Tensor, Tensor1D, Tensor4D, Variable } from '@tensorflow/tfjs-node';
import cliProgress from 'cli-progress';
import type { EarlyStopping } from '../config/resolved.ts';
import type { ImageSplit } from '../data/images.ts';
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
   * When the model's first part is frozen for the phase: run it outside the gradient tape
   * (no backward work, no kept activations), and with `cacheOutputs` (no augmentation)
   * compute its outputs once per phase instead of once per epoch.
   */
  frozenPrefix?: { prefix: LayersModel; suffix: LayersModel; cacheOutputs: boolean };
  log: (message: string, fields?: Record<string, unknown>) => void;
}

export interface PhaseOutcome {
  stoppedEarly: boolean;
  interrupted: boolean;
  /** The epoch whose weights the model holds at the end (best one when restored). */
  epochs: EpochRecord[];
  restoredEpoch?: number;
}

/** Batches of a split as the model should see them: pixels, or cached frozen-prefix outputs. */
interface BatchSource {
  length: number;
  labels: Int32Array;
  batches(batchSize: number, order?: readonly number[]): Generator<{ images: Tensor; labels: Tensor1D; indices: number[] }>;
}

/** A split's frozen-prefix outputs, computed once (inference: the prefix has no trainable part). */
export function cacheOutputs(prefix: LayersModel, split: ImageSplit, batchSize: number): { source: BatchSource; dispose: () => void } {
  const parts: Tensor[] = [];
  for (const batch of split.batches(batchSize)) {
    parts.push(tf.tidy(() => prefix.apply(batch.images, { training: false }) as Tensor));
    tf.dispose([batch.images, batch.labels]);
  }
  const all = parts.length === 1 ? parts[0] : tf.concat(parts);
  if (parts.length > 1) tf.dispose(parts);
  const source: BatchSource = {
    length: split.length,
    labels: split.labels,
    *batches(size: number, order?: readonly number[]) {
      const sequence = order ?? Array.from({ length: split.length }, (_, i) => i);
      for (let start = 0; start < sequence.length; start += size) {
        const indices = sequence.slice(start, start + size);
        yield { images: tf.tidy(() => tf.gather(all, tf.tensor1d(indices, 'int32'))), labels: tf.tensor1d(indices.map((i) => split.labels[i]), 'int32'), indices };
      }
    },
  };
  return { source, dispose: () => all.dispose() };
}

export function evaluate(model: LayersModel, objective: Objective, split: BatchSource, batchSize: number): Evaluation {
  const predictions = new Int32Array(split.length);
  const probabilities = new Float32Array(split.length * objective.classCount);
  let lossSum = 0;
  let correct = 0;
  let offset = 0;
  for (const batch of split.batches(batchSize)) {
    const [loss, predicted, probs] = tf.tidy(() => {
      const logits = model.apply(batch.images, { training: false }) as Tensor;
      return [batchLoss({ ...objective, classWeights: undefined }, logits, batch.labels), predictedClasses(objective.head, logits), classProbabilities(objective.head, logits)];
    });
    const n = batch.indices.length;
    lossSum += (loss.dataSync()[0] as number) * n;
    const predictedValues = predicted.dataSync() as Int32Array;
    predictions.set(predictedValues, offset);
    probabilities.set(probs.dataSync() as Float32Array, offset * objective.classCount);
    for (let i = 0; i < n; i++) if (predictedValues[i] === split.labels[batch.indices[i]]) correct++;
    offset += n;
    tf.dispose([loss, predicted, probs, batch.images, batch.labels]);
  }
  return { loss: lossSum / Math.max(1, split.length), accuracy: correct / Math.max(1, split.length), predictions, probabilities };
}

/** The order of the training set in an epoch: a permutation fixed by seed and epoch. */
export function epochOrder(seed: number, epoch: number, length: number): number[] {
  return new Random(seed, 'shuffle', epoch).permutation(length);
}

function trainableVariables(model: LayersModel): Variable[] {
  return model.trainableWeights.map((weight) => weight.read() as Variable);
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

async function trainEpoch(inputs: TrainInputs, optimizer: TfOptimizer, epoch: number, cachedTrain?: BatchSource): Promise<{ loss: number; accuracy: number; batches: number; interrupted: boolean }> {
  const { objective, batchSize } = inputs;
  const split = inputs.frozenPrefix;
  const model = split ? split.suffix : inputs.model;
  const train: BatchSource = cachedTrain ?? inputs.train;
  const variables = trainableVariables(model);
  const bar = inputs.progress
    ? new cliProgress.SingleBar({ format: `epoch ${epoch} [{bar}] {value}/{total} batches | loss {loss} | acc {acc} | ETA {eta_formatted}`, stream: process.stderr, hideCursor: true, clearOnComplete: false }, cliProgress.Presets.shades_classic)
    : undefined;
  bar?.start(Math.ceil(train.length / batchSize), 0, { loss: '-', acc: '-' });
  let lossSum = 0;
  let correct = 0;
  let seen = 0;
  let batchIndex = 0;
  let interrupted = false;
  for (const batch of train.batches(batchSize, epochOrder(inputs.seed, epoch, train.length))) {
    const augmented = cachedTrain
      ? batch.images.clone()
      : split
        ? tf.tidy(() => split.prefix.apply(inputs.augment(batch.images as Tensor4D, new Random(inputs.seed, 'augment', epoch, batchIndex)), { training: false }) as Tensor)
        : inputs.augment(batch.images as Tensor4D, new Random(inputs.seed, 'augment', epoch, batchIndex));
    setStepSeed(Math.floor(new Random(inputs.seed, 'dropout', epoch, batchIndex).next() * 2147483646) + 1);
    let predicted: Tensor | undefined;
    const loss = optimizer.minimize(
      () => {
        const logits = model.apply(augmented, { training: true }) as Tensor;
        predicted = tf.keep(predictedClasses(objective.head, logits));
        return batchLoss(objective, logits, batch.labels);
      },
      true,
      variables,
    ) as Scalar;
    const n = batch.indices.length;
    lossSum += loss.dataSync()[0] * n;
    const predictedValues = predicted!.dataSync();
    for (let i = 0; i < n; i++) if (predictedValues[i] === train.labels[batch.indices[i]]) correct++;
    seen += n;
    tf.dispose([loss, predicted!, augmented, batch.images, batch.labels]);
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
export function trainStepForBench(model: LayersModel, objective: Objective, images: Tensor4D, labels: Tensor1D, optimizer: TfOptimizer): number {
  const loss = optimizer.minimize(() => batchLoss(objective, model.apply(images, { training: true }) as Tensor, labels), true, trainableVariables(model)) as Scalar;
  const value = loss.dataSync()[0];
  loss.dispose();
  return value;
}

/** Runs the epochs of one phase; the model's trainable flags must already be set. */
export async function runPhase(inputs: TrainInputs, phase: PhaseRun): Promise<PhaseOutcome> {
  const outcome: PhaseOutcome = { stoppedEarly: false, interrupted: false, epochs: [] };
  const stopping = phase.earlyStopping;
  let best: { value: number; epoch: number; weights?: Tensor[] } | undefined;
  let sinceBest = 0;
  const split = inputs.frozenPrefix;
  const cacheStarted = performance.now();
  const caches = split?.cacheOutputs && phase.endEpoch > phase.startEpoch ? [cacheOutputs(split.prefix, inputs.train, inputs.batchSize), cacheOutputs(split.prefix, inputs.validation, inputs.batchSize)] : undefined;
  // Computing the cache is part of the first epoch's cost.
  let carrySeconds = caches ? (performance.now() - cacheStarted) / 1000 : 0;
  try {
  for (let epoch = phase.startEpoch + 1; epoch <= phase.endEpoch; epoch++) {
    const started = performance.now();
    const learningRate = phase.learningRateAt(epoch - phase.phaseStartEpoch - 1);
    setLearningRate(phase.optimizer, learningRate);
    const trained = await trainEpoch(inputs, phase.optimizer, epoch, caches?.[0].source);
    if (trained.interrupted) {
      outcome.interrupted = true;
      break;
    }
    const validation = caches && split ? evaluate(split.suffix, inputs.objective, caches[1].source, inputs.batchSize) : evaluate(inputs.model, inputs.objective, inputs.validation, inputs.batchSize);
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
