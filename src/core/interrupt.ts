import type { Logger } from './log.ts';

/**
 * Ctrl-C (or SIGTERM) once: ask the work to stop at the next safe point (after the current
 * batch, or between trials), so the run is saved and resumable. Twice: exit at once.
 */
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
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    get requested() {
      return requested;
    },
    release() {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}
