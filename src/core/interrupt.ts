import type { Logger } from './log.ts';

/**
 * Ctrl-C (or SIGTERM, or SIGHUP: a closed terminal, a dropped SSH session) once: ask the work
 * to stop at the next safe point (after the current batch, or between trials), so the run is
 * saved, KILLED and resumable, and tlx exits 130 whichever signal it was (one code for
 * "stopped, resume it"). Twice: exit at once.
 */
export const stopSignals = ['SIGINT', 'SIGTERM', 'SIGHUP'] as const;
export interface Interrupt {
  readonly requested: boolean;
  release(): void;
}

export function listenForInterrupt(log: Logger, what = 'stopping after the current batch'): Interrupt {
  let requested = false;
  const onSignal = () => {
    if (requested) process.exit(130);
    requested = true;
    log.warn(`interrupt: ${what} (Ctrl-C again to quit at once)`);
  };
  for (const signal of stopSignals) process.on(signal, onSignal);
  return {
    get requested() {
      return requested;
    },
    release() {
      for (const signal of stopSignals) process.off(signal, onSignal);
    },
  };
}
