import type { Logger } from '../core/log.ts';
import type { BatchProgress, Callback, EpochRecord, PhaseEnd, TrainingControl } from '../train/engine.ts';

/**
 * The callbacks a run attaches to the engine besides its record on disk (resume.ts's
 * RunRecorder): live tracking, Ctrl-C, and the epoch log line.
 */

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
