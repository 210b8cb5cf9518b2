import type { Logger } from '../log.ts';
import { runSweep } from '../sweep/sweep.ts';

export interface SweepCommandOptions {
  file?: string;
  set: string[];
  grid: string[];
  resume?: string;
  maxTrials?: number;
  parallel: number;
  cacheDir?: string;
  runsDir: string;
  log: Logger;
}

export async function sweepCommand(options: SweepCommandOptions): Promise<void> {
  const result = await runSweep({ ...options, overrides: options.set });
  if (result.rows.some((r) => r.status === 'failed')) process.exitCode = 1;
}
