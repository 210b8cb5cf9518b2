import type { ResolvedExperiment } from '../config/resolved.ts';
import type { BatchProgress, Callback, EpochRecord, PhaseSpan } from '../train/engine.ts';
import { duration, fixed } from '../ui/format.ts';
import type { Bar, Terminal } from '../ui/terminal.ts';
import type { RunProgress } from './progress.ts';
import { phaseSpans } from './train-stage.ts';

/**
 * Keras's fit on a terminal, plus the whole run above it: one line for the run (phase,
 * epoch x of y, elapsed, ETA from the epochs measured so far), one bar for the epoch
 * (batches, running loss and accuracy, ETA), and one line for long steps outside epochs.
 */
export class TerminalRunProgress implements RunProgress {
  private runBar?: Bar;
  private epochBar?: Bar;
  private stageBar?: Bar;
  private stageTimer?: NodeJS.Timeout;
  private readonly spans: PhaseSpan[];
  private readonly totalEpochs: number;
  private readonly secondsPerEpoch = new Map<string, number[]>();
  private done = 0;
  private phase = '';
  private readonly started = performance.now();

  constructor(
    private readonly terminal: Terminal,
    config: ResolvedExperiment,
  ) {
    this.spans = phaseSpans(config).filter((span) => span.last >= span.first);
    this.totalEpochs = this.spans.reduce((sum, span) => sum + span.last - span.first + 1, 0);
  }

  private elapsed(): number {
    return (performance.now() - this.started) / 1000;
  }

  /** Remaining epochs of each phase times that phase's measured seconds per epoch (else the latest measured). */
  private eta(): number | undefined {
    const measured = [...this.secondsPerEpoch.values()].flat();
    if (measured.length === 0) return undefined;
    const fallback = measured.at(-1)!;
    let seconds = 0;
    for (const span of this.spans) {
      const times = this.secondsPerEpoch.get(span.phase) ?? [];
      const perEpoch = times.length ? times.reduce((a, b) => a + b, 0) / times.length : fallback;
      const remaining = span.last - Math.max(span.first - 1, Math.min(span.last, this.done));
      seconds += Math.max(0, remaining) * perEpoch;
    }
    return seconds;
  }

  private refreshRun(): void {
    // Payload names of our own: cli-progress fills {eta} and {duration} itself.
    if (!this.runBar)
      this.runBar = this.terminal.bar(
        '{phase} epoch {epoch}/{epochs} [{bar}] {run_elapsed} elapsed, ETA {run_eta}',
        this.totalEpochs,
        {},
      );
    const eta = this.eta();
    this.runBar.update(this.done, {
      phase: this.phase,
      epoch: Math.min(this.totalEpochs, this.done + 1),
      epochs: this.totalEpochs,
      run_elapsed: duration(this.elapsed()),
      run_eta: eta === undefined ? '…' : duration(eta),
    });
  }

  callback(): Callback {
    return {
      onPhaseBegin: (span) => {
        this.phase = span.phase;
        this.done = span.resumeAfter;
        this.refreshRun();
      },
      onBatchEnd: (progress: BatchProgress) => {
        this.epochBar ??= this.terminal.bar(
          `  epoch ${progress.epoch} [{bar}] {value}/{total} | loss {loss} | acc {acc} | ETA {eta_formatted}`,
          progress.batches,
          {},
        );
        this.epochBar.update(progress.batch, { loss: fixed(progress.loss), acc: fixed(progress.accuracy) });
      },
      onEpochEnd: (record: EpochRecord) => {
        this.epochBar?.stop();
        this.epochBar = undefined;
        this.secondsPerEpoch.set(record.phase, [...(this.secondsPerEpoch.get(record.phase) ?? []), record.seconds]);
        this.done = record.epoch;
        this.refreshRun();
      },
      onPhaseEnd: () => {
        this.epochBar?.stop();
        this.epochBar = undefined;
      },
    };
  }

  stage(label: string | undefined): void {
    clearInterval(this.stageTimer);
    this.stageBar?.stop();
    this.stageBar = undefined;
    if (!label) return;
    const started = performance.now();
    this.stageBar = this.terminal.bar('{label} {spinner} {stage_elapsed}', 1, {
      label,
      spinner: '|',
      stage_elapsed: '0.0 s',
    });
    const frames = ['|', '/', '-', '\\'];
    let frame = 0;
    this.stageTimer = setInterval(
      () =>
        this.stageBar?.update(0, {
          label,
          spinner: frames[++frame % frames.length],
          stage_elapsed: duration((performance.now() - started) / 1000),
        }),
      200,
    );
    this.stageTimer.unref();
  }

  close(): void {
    this.stage(undefined);
    this.epochBar?.stop();
    this.runBar?.stop();
    this.epochBar = undefined;
    this.runBar = undefined;
  }
}
