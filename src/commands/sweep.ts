import path from 'node:path';
import { UserError } from '../core/errors.ts';
import { listenForInterrupt } from '../core/interrupt.ts';
import type { Logger } from '../core/log.ts';
import { TerminalRunProgress } from '../run/terminal-progress.ts';
import { SweepFolder } from '../run-folder/sweep-folder.ts';
import { describeAssignments, type GridValue } from '../sweep/plan.ts';
import { enqueueSweep, sweepStatus, waitForSweep, writeQueuedResults } from '../sweep/queue.ts';
import { bestTrial, resultsTable, type SweepMetric, type TrialRow } from '../sweep/report.ts';
import { planFor, runSweep } from '../sweep/sweep.ts';
import type { Terminal } from '../ui/terminal.ts';

export interface SweepCommandOptions {
  file?: string;
  set: string[];
  grid: string[];
  resume?: string;
  maxTrials?: number;
  parallel: number;
  cacheDir?: string;
  queue?: string;
  artifacts?: string;
  wait?: boolean;
  runsDir: string;
  log: Logger;
  terminal: Terminal;
  jsonFlag: boolean;
  progress: boolean;
}

function printResults(options: SweepCommandOptions, id: string, dir: string, metric: SweepMetric, rows: TrialRow[], best: TrialRow | undefined): void {
  const { terminal } = options;
  if (options.jsonFlag) {
    terminal.print(JSON.stringify({ sweep_id: id, dir, metric, best_trial: best?.trial ?? null, best_run: best?.run_id ?? null, trials: rows }));
    return;
  }
  terminal.print(resultsTable(rows, best));
  terminal.print(best ? `best: trial ${best.trial} (${describeAssignments(best.assignments)}) ${metric} ${(best[metric] as number).toFixed(4)} -> ${best.run_dir}` : `best: none (no trial has ${metric})`);
  terminal.print(`sweep ${id}: ${dir}`);
}

/** `tlx sweep`: the table of trials with the best marked, the best trial, the sweep folder; exit 1 when a trial failed. */
export async function sweepCommand(options: SweepCommandOptions): Promise<void> {
  if (options.queue) return queuedSweep(options);
  const interrupt = listenForInterrupt(options.log, 'stopping the current trial after its batch');
  const { terminal } = options;
  try {
    const result = await runSweep({ ...options, overrides: options.set, interrupt, progress: options.progress ? (config) => new TerminalRunProgress(terminal, config) : undefined });
    printResults(options, result.id, result.dir, result.metric, result.rows, result.best);
    if (result.rows.some((r) => r.status === 'failed')) process.exitCode = 1;
  } finally {
    interrupt.release();
  }
}

/** `tlx sweep x.yaml --queue redis://…`: enqueue (or attach), and with --wait follow it to the end. */
async function queuedSweep(options: SweepCommandOptions): Promise<void> {
  const artifactsDir = path.resolve(options.artifacts ?? options.runsDir);
  const planned = planFor({ ...options, overrides: options.set, runsDir: artifactsDir });
  const queue = { queueUrl: options.queue!, artifactsDir, log: options.log };
  await enqueueSweep(planned, queue);
  const dir = SweepFolder.at(artifactsDir, planned.id).dir;
  if (!options.wait) {
    options.terminal.print(options.jsonFlag ? JSON.stringify({ sweep_id: planned.id, dir, queued: planned.jobs.length }) : `sweep ${planned.id}: ${planned.jobs.length} trial(s) on the queue; follow with: tlx sweep status ${planned.id} --queue ${options.queue}`);
    return;
  }
  const rows = await waitForSweep(planned, queue);
  const best = await writeQueuedResults(planned, rows, queue);
  printResults(options, planned.id, dir, planned.metric as SweepMetric, rows, best);
  if (rows.some((r) => r.status === 'failed')) process.exitCode = 1;
}

/** `tlx sweep status <id> --queue …`: the table at any time, from the queue and the stored plan. */
export async function sweepStatusCommand(options: { sweepId: string; queue?: string; artifacts?: string; runsDir: string; log: Logger; terminal: Terminal; jsonFlag: boolean }): Promise<void> {
  if (!options.queue) throw new UserError('sweep status: expected --queue redis://host:port (a local sweep has its status in runs/sweeps/<id>/status.json)');
  const folder = SweepFolder.open(path.resolve(options.artifacts ?? options.runsDir), options.sweepId);
  const plan = folder.readPlan();
  const rows = await sweepStatus(plan.sweep_id, plan.trials.map((t) => ({ trial: t.trial, assignments: t.assignments as Record<string, GridValue> })), options.queue);
  const best = bestTrial(rows, plan.metric as SweepMetric, plan.goal);
  if (options.jsonFlag) options.terminal.print(JSON.stringify({ sweep_id: plan.sweep_id, trials: rows }));
  else options.terminal.print(resultsTable(rows, best));
}
