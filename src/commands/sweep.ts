import { LockedError } from '../core/lock.ts';
import { UserError } from '../core/errors.ts';
import { listenForInterrupt } from '../core/interrupt.ts';
import type { Logger } from '../core/log.ts';
import { TerminalRunProgress } from '../run/terminal-progress.ts';
import { describeAssignments } from '../sweep/plan.ts';
import { queueUrlOf } from '../sweep/queue.ts';
import { resultsTable } from '../sweep/report.ts';
import { runSweep, type SweepResult } from '../sweep/sweep.ts';
import type { Terminal } from '../ui/terminal.ts';

export interface SweepCommandOptions {
  file?: string;
  set: string[];
  grid: string[];
  resume?: string;
  maxTrials?: number;
  parallel: number;
  cacheDir?: string;
  queue?: string | boolean;
  wait?: boolean;
  runsDir: string;
  log: Logger;
  terminal: Terminal;
  jsonFlag: boolean;
  progress: boolean;
}

function budgetText(constraints: NonNullable<SweepResult['constraints']>): string {
  return Object.entries(constraints)
    .filter(([key]) => key.startsWith('max_'))
    .map(([key, value]) => `${key} ${value}`)
    .join(', ');
}

function printResults(options: Pick<SweepCommandOptions, 'terminal' | 'jsonFlag'>, result: SweepResult): void {
  const { terminal } = options;
  const { id, dir, metric, rows, best } = result;
  if (options.jsonFlag) {
    terminal.print(
      JSON.stringify({
        sweep_id: id,
        dir,
        metric,
        complete: result.complete,
        best_trial: best?.trial ?? null,
        best_run: best?.run_id ?? null,
        best_run_dir: best?.run_dir ?? null,
        ...(result.constraints ? { constraints: result.constraints } : {}),
        trials: rows,
      }),
    );
    return;
  }
  terminal.print(resultsTable(rows, best));
  if (result.complete)
    terminal.print(
      best
        ? `best${result.constraints ? ' within the budget' : ''}: trial ${best.trial} (${describeAssignments(best.assignments)}) ${metric} ${(best[metric] as number).toFixed(4)} -> ${best.run_dir}`
        : result.constraints
          ? `best: none: no trial is within the budget (sweep.constraints ${budgetText(result.constraints)}); see the budget column`
          : `best: none (no trial has ${metric})`,
    );
  else
    terminal.print(
      `${rows.filter((r) => r.status === 'finished' || r.status === 'failed').length} of ${rows.length} trial(s) ended; follow with: tlx sweep status ${id} --queue`,
    );
  terminal.print(`sweep ${id}: ${dir}`);
}

/**
 * `tlx sweep`: the table of trials with the best marked, the best trial, the sweep folder;
 * exit 1 when a trial failed. With --queue the trials run on workers: without --wait the
 * sweep is enqueued (or attached to) and its table so far printed.
 */
export async function sweepCommand(options: SweepCommandOptions): Promise<void> {
  const queue = options.queue
    ? { url: queueUrlOf(options.queue), wait: Boolean(options.wait), enqueue: true }
    : undefined;
  const interrupt = listenForInterrupt(
    options.log,
    queue
      ? 'no longer following the sweep (its trials go on on the workers)'
      : 'stopping the current trial after its batch',
  );
  const { terminal } = options;
  try {
    const result = await runSweep({
      ...options,
      overrides: options.set,
      queue,
      signal: interrupt.signal,
      progress: options.progress ? (config) => new TerminalRunProgress(terminal, config) : undefined,
    });
    printResults(options, result);
    if (result.rows.some((r) => r.status === 'failed')) process.exitCode = 1;
  } finally {
    interrupt.release();
  }
}

/**
 * `tlx sweep status <id> --queue`: a queued sweep's table from its trials' jobs. When every
 * trial has ended it also writes the results and brings the best trial's run here (as
 * --wait would); while another process follows the sweep, only the table.
 */
export async function sweepStatusCommand(options: {
  sweepId: string;
  queue?: string | boolean;
  cacheDir?: string;
  runsDir: string;
  log: Logger;
  terminal: Terminal;
  jsonFlag: boolean;
}): Promise<void> {
  if (!options.queue && !process.env.TLX_QUEUE_URL)
    throw new UserError(
      'sweep status: expected --queue redis://host:port (or $TLX_QUEUE_URL); a local sweep has its status in runs/sweeps/<id>/status.json',
    );
  const sweep = {
    overrides: [],
    grid: [],
    parallel: 1,
    resume: options.sweepId,
    runsDir: options.runsDir,
    cacheDir: options.cacheDir,
    log: options.log,
  };
  const queue = { url: queueUrlOf(options.queue), wait: false, enqueue: false };
  let result: SweepResult;
  try {
    result = await runSweep({ ...sweep, queue });
  } catch (error) {
    if (!(error instanceof LockedError)) throw error;
    options.log.info(`${error.message}; showing the table without writing the results`);
    result = await runSweep({ ...sweep, queue, readOnly: true });
  }
  printResults(options, result);
  if (result.rows.some((r) => r.status === 'failed')) process.exitCode = 1;
}
