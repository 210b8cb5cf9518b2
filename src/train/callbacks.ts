import type { LayersModel, Tensor } from '@tensorflow/tfjs-node';
import type { EarlyStopping as EarlyStoppingConfig } from '../config/resolved.ts';
import { tf } from '../tfjs/tf.ts';
import type { Callback, EpochRecord, PhaseEnd, PhaseSpan, TrainingControl } from './engine.ts';

/** What EarlyStopping must carry across a resume (saved with the `last` checkpoint). */
export interface EarlyStoppingState {
  wait: number;
  best: number | null;
  best_epoch: number | null;
}

/**
 * keras.callbacks.EarlyStopping, step for step (keras/src/callbacks/early_stopping.py):
 * each epoch `wait` grows by one and resets on an improvement (beyond min_delta); the
 * phase stops when wait >= patience, never on its first epoch; with restore_best_weights
 * the best epoch's weights are restored when the phase ends, whether it stopped early or
 * not (Keras 3's on_train_end). Each phase is one `fit`, so epochs count from the phase's
 * first. The state survives a resume: `state()` goes into the checkpoint, and the best
 * weights into their own checkpoint (`onImproved` tells when).
 */
export class EarlyStopping implements Callback {
  private wait = 0;
  private best: number | null = null;
  private bestEpoch: number | null = null;
  private bestWeights?: Tensor[];
  private span?: PhaseSpan;
  stoppedAt?: number;
  restoredEpoch?: number;

  constructor(
    private readonly config: EarlyStoppingConfig,
    private readonly model: LayersModel,
    private readonly onImproved?: (epoch: number) => Promise<void>,
  ) {}

  /** Continues from a saved state; `bestWeights` are the weights saved when best_epoch improved. */
  restore(state: EarlyStoppingState, bestWeights?: Tensor[]): void {
    this.wait = state.wait;
    this.best = state.best;
    this.bestEpoch = state.best_epoch;
    this.replaceBestWeights(bestWeights);
  }

  state(): EarlyStoppingState {
    return { wait: this.wait, best: this.best, best_epoch: this.bestEpoch };
  }

  private improved(current: number): boolean {
    if (this.best === null) return true;
    const minimize = this.config.monitor.endsWith('loss');
    const delta = Math.abs(this.config.min_delta);
    return minimize ? current + delta < this.best : current - delta > this.best;
  }

  private replaceBestWeights(weights: Tensor[] | undefined): void {
    if (this.bestWeights) tf.dispose(this.bestWeights);
    this.bestWeights = weights;
  }

  private snapshot(): Tensor[] {
    return this.model.weights.map((weight) => weight.read().clone());
  }

  onPhaseBegin(span: PhaseSpan): void {
    this.span = span;
  }

  async onEpochEnd(record: EpochRecord, control: TrainingControl): Promise<void> {
    const current = record[this.config.monitor];
    if (!Number.isFinite(current)) return;
    const epochInPhase = record.epoch - (this.span?.first ?? record.epoch);
    if (this.config.restore_best_weights && !this.bestWeights) {
      // If best weights were never set, the current weights are the best (as Keras).
      this.replaceBestWeights(this.snapshot());
      this.bestEpoch = record.epoch;
    }
    this.wait += 1;
    if (this.improved(current)) {
      this.best = current;
      this.bestEpoch = record.epoch;
      this.wait = 0;
      if (this.config.restore_best_weights) {
        this.replaceBestWeights(this.snapshot());
        await this.onImproved?.(record.epoch);
      }
      return;
    }
    if (this.wait >= this.config.patience && epochInPhase > 0) {
      this.stoppedAt = record.epoch;
      control.stop('early_stopping');
    }
  }

  onPhaseEnd(end: PhaseEnd): void {
    if (end.complete && this.config.restore_best_weights && this.bestWeights && this.bestEpoch !== null) {
      if (this.bestEpoch !== end.lastTrained) {
        this.model.weights.forEach((weight, i) => weight.write(this.bestWeights![i]));
        this.restoredEpoch = this.bestEpoch;
      }
    }
    this.replaceBestWeights(undefined);
  }
}
