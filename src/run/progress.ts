import type { ResolvedExperiment } from '../config/resolved.ts';
import type { Callback } from '../train/engine.ts';

/**
 * What a run shows a person while it works: a run-level line (phase, epoch x of y, elapsed,
 * ETA) and the engine's per-batch bar, and a line for long steps outside epochs. The
 * terminal implementation is run/terminal-progress.ts; runs without a terminal pass none.
 */
export interface RunProgress {
  /** The engine callback that draws batch and epoch progress. */
  callback(): Callback;
  /** A long step outside epochs (decoding, exporting) starts; undefined ends it. */
  stage(label: string | undefined): void;
  /** Removes every bar (the run ended). */
  close(): void;
}

export type RunProgressFactory = (config: ResolvedExperiment) => RunProgress;
