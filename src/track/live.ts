import { errorMessage } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { redactText } from '../core/redact.ts';
import type { RunFolder } from '../run-folder/run-folder.ts';
import { markNotSynced, syncRun, type SyncOptions } from './sync.ts';

/**
 * Live logging of a run in progress. Training never waits on a server for long: each
 * update during training is one sync bounded to a second, and after a failure the tracker
 * backs off across epochs (no probe until the backoff has passed, doubling up to a minute)
 * instead of timing out on every request. The run carries on and is marked not synced;
 * the final update (artifacts, model, status) gets the full retry policy, and `tlx sync`
 * completes whatever is left. Neither update ever throws.
 */
export class LiveTracker {
  private failures = 0;
  private nextAttemptAt = 0;
  private verified = false;
  private warned = false;

  constructor(
    private readonly folder: RunFolder,
    private readonly options: SyncOptions & { log: Logger },
    private readonly epochBudgetMs = 1000,
  ) {}

  /** A bounded update during training (after an epoch, after the data). */
  async update(): Promise<void> {
    if (Date.now() < this.nextAttemptAt) return;
    await this.sync({
      deadline: Date.now() + this.epochBudgetMs,
      retries: 0,
      artifacts: false,
      verifyRun: !this.verified,
    });
  }

  /** The last update when the run ends: everything, with retries. */
  async finish(): Promise<void> {
    await this.sync({ retries: this.options.retries ?? 2, verifyRun: !this.verified });
  }

  private async sync(overrides: Partial<SyncOptions>): Promise<void> {
    try {
      const result = await syncRun(this.folder, { ...this.options, ...overrides });
      this.verified = true;
      this.failures = 0;
      this.nextAttemptAt = 0;
      for (const refusal of result.newlyRefused)
        this.options.log.warn(
          { kind: refusal.kind, item: refusal.item, status: refusal.status },
          `MLflow refused ${refusal.kind} ${refusal.item}: ${refusal.message}`,
        );
    } catch (error) {
      this.failures++;
      this.nextAttemptAt = Date.now() + Math.min(60_000, 2000 * 2 ** (this.failures - 1));
      markNotSynced(this.folder, this.options.trackingUri, errorMessage(error), this.options.log);
      if (!this.warned) {
        this.warned = true;
        this.options.log.warn(
          { error: redactText(errorMessage(error)) },
          `MLflow logging failed; the run carries on and is marked not synced (run \`tlx sync ${this.folder.dir}\` later)`,
        );
      }
    }
  }
}
