import { LiveTracker } from '../track/live.ts';
import { trackingUriFor } from '../track/sync.ts';
import type { RunContext } from './run.ts';

/** A run's MLflow mirror, when a tracking server is configured: bounded updates, a full final sync. */
export interface RunTracking {
  update(): Promise<void>;
  finish(): Promise<void>;
}

export function startTracking(context: RunContext): RunTracking | undefined {
  const trackingUri = trackingUriFor(context.config);
  if (!trackingUri) return undefined;
  return new LiveTracker(context.folder, { trackingUri, log: context.log, parentRunId: context.options.parentRunId, register: context.options.register });
}
