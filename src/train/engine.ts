import type { LayersModel, Optimizer as TfOptimizer, Scalar, Tensor, Tensor4D, Variable } from '@tensorflow/tfjs-node';
import cliProgress from 'cli-progress';
import type { EarlyStopping } from '../config/resolved.ts';
import type { ImageSplit } from '../data/images.ts';
import { Random, setStepSeed } from '../random.ts';
import { tf } from '../tf.ts';
import { batchLoss, classProbabilities, predictedClasses, type Objective } from './objective.ts';

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
  log: (message: string, fields?: Record<string, unknown>) => void;
}

export interface PhaseOutcome {
  stoppedEarly: boolean;
  interrupted: boolean;
  /** The epoch whose weights the model holds at the end (best one when restored). */
  epochs: EpochRecord[];
  restoredEpoch?: number;
}

export function evaluate(model: LayersModel, objective: Objective, split: ImageSplit, batchSize: number): Evaluation {
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

async function trainEpoch(inputs: TrainInputs, optimizer: TfOptimizer, epoch: number): Promise<{ loss: number; accuracy: number; batches: number; interrupted: boolean }> {
  const { model, objective, train, batchSize } = inputs;
  const variables = trainableVariables(model);
  const bar = inputs.progress
    ? new cliProgress.SingleBar({ format: `epoch ${epoch} [{bar}] {value}/{total} batches | loss {loss} | acc {acc} | ETA {eta_formatted}`, stream: process.stderr, hideCursor: true, clearOnComplete: false }, cliProgress.Presets.shades_classic)
    : undefined;
  bar?.start(train.batchCount(batchSize), 0, { loss: '-', acc: '-' });
  let lossSum = 0;
  let correct = 0;
  let seen = 0;
  let batchIndex = 0;
  let interrupted = false;
  for (const batch of train.batches(batchSize, epochOrder(inputs.seed, epoch, train.length))) {
    const augmented = inputs.augment(batch.images, new Random(inputs.seed, 'augment', epoch, batchIndex));
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

/** Runs the epochs of one phase; the model's trainable flags must already be set. */
export async function runPhase(inputs: TrainInputs, phase: PhaseRun): Promise<PhaseOutcome> {
  const outcome: PhaseOutcome = { stoppedEarly: false, interrupted: false, epochs: [] };
  const stopping = phase.earlyStopping;
  let best: { value: number; epoch: number; weights?: Tensor[] } | undefined;
  let sinceBest = 0;
  for (let epoch = phase.startEpoch + 1; epoch <= phase.endEpoch; epoch++) {
    const started = performance.now();
    const learningRate = phase.learningRateAt(epoch - phase.phaseStartEpoch - 1);
    (phase.optimizer as unknown as { learningRate: number }).learningRate = learningRate;
    const trained = await trainEpoch(inputs, phase.optimizer, epoch);
    if (trained.interrupted) {
      outcome.interrupted = true;
      break;
    }
    const validation = evaluate(inputs.model, inputs.objective, inputs.validation, inputs.batchSize);
    const record: EpochRecord = {
      epoch,
      phase: phase.phase,
      loss: trained.loss,
      accuracy: trained.accuracy,
      val_loss: validation.loss,
      val_accuracy: validation.accuracy,
      learning_rate: learningRate,
      seconds: (performance.now() - started) / 1000,
      time: Date.now(),
    };
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
  if (best?.weights) {
    if (outcome.stoppedEarly && best.epoch !== outcome.epochs.at(-1)?.epoch) {
      restore(inputs.model, best.weights);
      outcome.restoredEpoch = best.epoch;
    }
    tf.dispose(best.weights);
  }
  return outcome;
}
