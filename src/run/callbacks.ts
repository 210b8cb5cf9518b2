import type { LayersModel, Optimizer } from '@tensorflow/tfjs-node';
import { killPoint } from '../core/faults.ts';
import type { Logger } from '../core/log.ts';
import type { PhaseOutcome } from '../run-folder/records.ts';
import type { RunFolder } from '../run-folder/run-folder.ts';
import type { EarlyStopping } from '../train/callbacks.ts';
import type { BatchProgress, Callback, EpochRecord, PhaseEnd, TrainingControl } from '../train/engine.ts';

/**
 * The callbacks a run attaches to the engine: its record on disk (checkpoints first, then
 * the metrics line, so a kill between them loses nothing), live tracking, Ctrl-C, and
 * the epoch log line.
 */

export interface RecorderState {
  bestValAccuracy: number;
}

/**
 * After each epoch: the `last` checkpoint (model, optimizer, early-stopping state), then the
 * epoch's line in metrics.jsonl, then `best` when validation accuracy improved. When a
 * phase completes: `last` again, marked complete with how the phase ended (after early
 * stopping restored the best weights), and after feature extraction its own checkpoint,
 * the state every fine-tuning variant starts from (sweeps share it).
 */
export class RunRecorder implements Callback {
  private lastRecord?: EpochRecord;

  constructor(
    private readonly folder: RunFolder,
    private readonly model: LayersModel,
    private readonly optimizer: Optimizer,
    private readonly state: RecorderState,
    private readonly earlyStopping?: EarlyStopping,
    private readonly onOutcome?: (phase: string, outcome: PhaseOutcome) => void,
  ) {}

  private callbackState(): Record<string, unknown> {
    return this.earlyStopping ? { early_stopping: this.earlyStopping.state() } : {};
  }

  async onEpochEnd(record: EpochRecord): Promise<void> {
    await this.folder.saveCheckpoint('last', this.model, this.optimizer, {
      epoch: record.epoch,
      phase: record.phase,
      record,
      callbacks: this.callbackState(),
    });
    killPoint('epoch.checkpointed');
    this.folder.appendMetric(record);
    killPoint('epoch.recorded');
    this.lastRecord = record;
    if (record.val_accuracy > this.state.bestValAccuracy) {
      this.state.bestValAccuracy = record.val_accuracy;
      await this.folder.saveCheckpoint('best', this.model, undefined, {
        epoch: record.epoch,
        phase: record.phase,
        record,
      });
    }
  }

  async onPhaseEnd(end: PhaseEnd): Promise<void> {
    if (!end.complete || end.lastTrained < end.first) return;
    const outcome: PhaseOutcome = {
      stopped_early: end.stopReason === 'early_stopping',
      last_epoch: end.lastTrained,
      ...(this.earlyStopping?.restoredEpoch !== undefined
        ? { restored_best_epoch: this.earlyStopping.restoredEpoch }
        : {}),
    };
    // The weights as the phase leaves them (the best epoch's when early stopping restored them).
    await this.folder.saveCheckpoint('last', this.model, undefined, {
      epoch: end.lastTrained,
      phase: end.phase,
      record: this.lastRecord,
      phase_complete: true,
      outcome,
      callbacks: this.callbackState(),
    });
    killPoint('phase.complete');
    this.onOutcome?.(end.phase, outcome);
    if (end.phase === 'feature_extraction') this.folder.copyCheckpoint('last', 'feature_extraction');
  }
}

/** Ctrl-C: stop after the current batch (the engine then ends the phase as interrupted). */
export class InterruptCallback implements Callback {
  constructor(private readonly signal: AbortSignal) {}

  onBatchEnd(_progress: BatchProgress, control: TrainingControl): void {
    if (this.signal.aborted) control.stop('interrupted');
  }
}

/** Live tracking after each epoch (bounded: training never waits long on a server). */
export class TrackingCallback implements Callback {
  constructor(private readonly update: () => Promise<void>) {}

  async onEpochEnd(): Promise<void> {
    await this.update();
  }
}

function fixed(value: number, digits = 4): string {
  return Number.isFinite(value) ? value.toFixed(digits) : 'n/a';
}

/** One log line per epoch, and one when early stopping ends a phase. */
export class EpochLog implements Callback {
  constructor(private readonly log: Logger) {}

  onEpochEnd(record: EpochRecord): void {
    this.log.info(
      { ...record },
      `epoch ${record.epoch} (${record.phase}): loss ${fixed(record.loss)} acc ${fixed(record.accuracy)} val_loss ${fixed(record.val_loss)} val_acc ${fixed(record.val_accuracy)} (${record.seconds.toFixed(1)} s)`,
    );
  }

  onPhaseEnd(end: PhaseEnd): void {
    if (end.stopReason === 'early_stopping')
      this.log.info(
        { phase: end.phase, epoch: end.lastTrained },
        `early stopping ended ${end.phase} at epoch ${end.lastTrained}`,
      );
  }
}
