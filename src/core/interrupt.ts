import { InterruptedError } from './errors.ts';
import type { Logger } from './log.ts';

/**
 * Ctrl-C (or SIGTERM, or SIGHUP: a closed terminal, a dropped SSH session) once: ask the work
 * to stop at the next safe point (after the current batch, or between trials), so the run is
 * saved, KILLED and resumable, and tlx exits 130 whichever signal it was (one code for
 * "stopped, resume it"). Twice: exit at once.
 */
export const stopSignals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
export interface Interrupt {
  /** Aborted by the first stop signal; the work below checks it at its safe points or listens for it. */
  readonly signal: AbortSignal;
  release(): void;
}

export function listenForInterrupt(log: Logger, what = 'stopping after the current batch'): Interrupt {
  const controller = new AbortController();
  const onSignal = (name: NodeJS.Signals) => {
    if (controller.signal.aborted) process.exit(130);
    controller.abort(new InterruptedError(`interrupted by ${name}`));
    log.warn(`interrupt: ${what} (Ctrl-C again to quit at once)`);
  };
  for (const signal of stopSignals) process.on(signal, onSignal);
  return {
    signal: controller.signal,
    release() {
      for (const signal of stopSignals) process.off(signal, onSignal);
    },
  };
}
