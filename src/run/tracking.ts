import { errorMessage } from '../core/errors.ts';
import { redactText } from '../core/redact.ts';
import { LiveTracker } from '../track/live.ts';
import { trackingUriFor } from '../track/sync.ts';
import type { RunContext } from './run.ts';

/**
 * What a run keeps up to date beside its folder: its MLflow mirror, when a tracking server is
 * configured (bounded updates, a full final sync), and its backup copy, when it has one (a
 * queued trial). After an epoch the backup goes first, and MLflow hears of the epoch only when
 * the backup was saved: an epoch MLflow has is always in the backup too, so a run continued
 * from the backup never sends an epoch twice.
 */
export interface RunTracking {
  update(): Promise<void>;
  finish(): Promise<void>;
}

export function startTracking(context: RunContext): RunTracking | undefined {
  const trackingUri = trackingUriFor(context.config);
  const live = trackingUri
    ? new LiveTracker(context.folder, {
        trackingUri,
        log: context.log,
        parentRunId: context.options.sweep?.parentRunId,
        register: context.options.register,
      })
    : undefined;
  const backup = context.options.services?.backup;
  if (!live && !backup) return undefined;
  const backedUp = async (final: boolean): Promise<boolean> => {
    if (!backup) return true;
    try {
      return await backup.save(context.folder, final);
    } catch (error) {
      context.log.warn(
        { error: redactText(errorMessage(error)) },
        "could not save the run's backup copy; MLflow hears of this epoch with the next one that is saved",
      );
      return false;
    }
  };
  return {
    async update() {
      if (await backedUp(false)) await live?.update();
    },
    async finish() {
      await backedUp(true);
      await live?.finish();
    },
  };
}
