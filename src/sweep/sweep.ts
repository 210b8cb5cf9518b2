import path from 'node:path';
import { InterruptedError, errorMessage } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { chartPng } from '../plots/render.ts';
import { exportFinishedRun } from '../run/export-finished.ts';
import type { RunProgressFactory } from '../run/progress.ts';
import type { TrialState } from '../run-folder/records.ts';
import { RunFolder } from '../run-folder/run-folder.ts';
import { SweepFolder } from '../run-folder/sweep-folder.ts';
import { SweepParentRun } from '../track/sweep-parent.ts';
import { syncRun, trackingUriFor } from '../track/sync.ts';
import { LocalScheduler } from './local.ts';
import {
  parentRunOf,
  parseGridFlag,
  planRecordOf,
  planSweep,
  type Grid,
  type GridValue,
  type SweepPlanned,
  type TrialJob,
} from './plan.ts';
import { QueueScheduler } from './queued.ts';
import { paretoPlotSpec, type Constraints, type Footprint } from './budget.ts';
import { footprintKeys, measureFootprints, withFootprints } from './footprints.ts';
import { bestTrial, paretoRows, resultsCsv, sweepPlotSpec, type SweepMetric, type TrialRow } from './report.ts';
import type { TrialScheduler } from './schedule.ts';
import { trialRow } from './trial.ts';

/**
 * `tlx sweep` as plan -> schedule -> report, one engine whatever runs the trials. Every
 * trial is validated first; trials run as ordinary runs, in this process (LocalScheduler)
 * or on `tlx worker` processes (QueueScheduler); trials that differ only in keys used after
 * feature extraction share one feature-extraction phase (the first of a group trains it,
 * the others start from its checkpoint: exactly the state they would have reached); a rerun
 * (or --resume) skips finished trials and resumes an interrupted one from its checkpoint.
 * The report names the best trial, exports it (sweep.export: best) and registers it.
 */

export interface SweepOptions {
  file?: string;
  overrides: string[];
  grid: string[];
  resume?: string;
  maxTrials?: number;
  parallel: number;
  runsDir: string;
  cacheDir?: string;
  log: Logger;
  signal?: AbortSignal;
  progress?: RunProgressFactory;
  /**
   * Run the trials on `tlx worker` processes through this queue. `enqueue`: send the trials
   * (idempotent) before looking at them (`tlx sweep status` only looks); `wait`: follow the
   * sweep to its end rather than look once.
   */
  queue?: { url: string; wait: boolean; enqueue: boolean; pollMs?: number };
  /** Look without writing: no lock, no status, no results (a sweep another process follows). */
  readOnly?: boolean;
  /** Told each trial as it ends. */
  onTrialEnd?: (state: TrialState) => void;
}

export interface SweepResult {
  dir: string;
  id: string;
  metric: SweepMetric;
  rows: TrialRow[];
  best?: TrialRow;
  /** Every trial has ended and the results are written (a queued sweep followed without --wait may not be there yet). */
  complete: boolean;
  /** The budget the best trial had to fit (sweep.constraints). */
  constraints?: Constraints;
}

/** The plan of a new sweep (file, flags), or of a stored one (values as stored: never re-parsed). */
function planFor(
  options: Pick<SweepOptions, 'file' | 'overrides' | 'grid' | 'resume' | 'maxTrials' | 'runsDir'>,
): SweepPlanned {
  if (options.resume) {
    const stored = SweepFolder.open(options.runsDir, options.resume).readPlan();
    return {
      ...planSweep({
        file: stored.experiment_file,
        overrides: stored.overrides,
        grid: stored.grid as Grid,
        maxTrials: stored.max_trials ?? undefined,
      }),
      id: stored.sweep_id,
    };
  }
  if (!options.file) throw new Error('sweep: expected an experiment file, or --resume <sweep-id>');
  const grid: Grid = {};
  for (const flag of options.grid) {
    const [key, values] = parseGridFlag(flag);
    grid[key] = values;
  }
  return planSweep({
    file: path.resolve(options.file),
    overrides: options.overrides,
    grid,
    maxTrials: options.maxTrials,
  });
}

/** Trial states carried over from an earlier attempt at the same sweep, matched by config. */
function reconcile(previous: TrialState[], jobs: TrialJob[]): TrialState[] {
  return jobs.map((job) => {
    const before = previous.find((s) => s.config_sha256 === job.configSha256);
    const folder = before?.run_dir ? RunFolder.tryOpen(before.run_dir) : undefined;
    const finishedHere = folder?.hasSummary() && folder.readSummary().status === 'FINISHED';
    // A queued trial that finished on a worker is known by the row it reported.
    if (before?.status === 'finished' && (finishedHere || (!before.run_dir && before.result)))
      return { ...before, trial: job.plan.index };
    // An interrupted trial keeps its folder, to be resumed from its checkpoint.
    if ((before?.status === 'killed' || before?.status === 'running') && before.run_dir)
      return { ...before, trial: job.plan.index, status: 'pending' };
    return {
      trial: job.plan.index,
      assignments: job.plan.assignments,
      config_sha256: job.configSha256,
      status: 'pending',
    };
  });
}

function rowFor(state: TrialState): TrialRow {
  const folder = state.run_dir ? RunFolder.tryOpen(state.run_dir) : undefined;
  const extra: Partial<TrialRow> = { shared_feature_extraction: state.shared_feature_extraction, error: state.error };
  if (state.run_dir) Object.assign(extra, { run_id: path.basename(state.run_dir), run_dir: state.run_dir });
  if (state.minutes !== undefined) extra.minutes = state.minutes;
  const assignments = state.assignments as Record<string, GridValue>;
  // A queued trial reports its row; its folder is on the worker (until the best one is brought here).
  if (!folder && state.result)
    return {
      ...(state.result as Partial<TrialRow>),
      ...withoutUndefined(extra),
      trial: state.trial,
      assignments,
      status: state.status,
    };
  return trialRow(state.trial, assignments, folder, state.status, extra);
}

function withoutUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

export async function runSweep(options: SweepOptions): Promise<SweepResult> {
  const { log } = options;
  const planned = planFor(options);
  const folder = SweepFolder.at(options.runsDir, planned.id);
  const { queue, readOnly } = options;
  if (!readOnly)
    folder.lock({
      onTakeover: (owner, reason) =>
        log.warn({ sweep: planned.id, pid: owner?.pid }, `taking over the lock of sweep ${planned.id} (${reason})`),
    });
  const scheduler: TrialScheduler = queue
    ? new QueueScheduler({ ...queue, queueUrl: queue.url, runsDir: options.runsDir, log, signal: options.signal })
    : new LocalScheduler(options);
  try {
    const states = readOnly ? reconcile(folder.readStatus(), planned.jobs) : recordPlan(folder, planned, log);
    const trackingUri = trackingUriFor(planned.base.config);
    const parent =
      trackingUri && !readOnly
        ? await SweepParentRun.open(folder, { trackingUri, log, ...parentRunOf(planned) })
        : undefined;
    const save = () => (readOnly ? undefined : folder.writeStatus(states));
    const complete = await scheduler.run(planned, states, {
      parentRunId: parent?.runId,
      save,
      onTrialEnd: options.onTrialEnd,
    });
    if (options.signal?.aborted) throw new InterruptedError(interruptedMessage(planned.id, Boolean(queue)));
    if (!complete || readOnly)
      return {
        dir: folder.dir,
        id: planned.id,
        metric: planned.metric as SweepMetric,
        rows: states.map(rowFor),
        complete: false,
      };
    return await report(planned, folder, states, scheduler, { trackingUri, parent, options });
  } finally {
    await scheduler.close();
    if (!readOnly) folder.unlock();
  }
}

function interruptedMessage(id: string, queued: boolean): string {
  if (queued)
    return `stopped following sweep ${id}; its trials go on on the workers: rerun the same command (or tlx sweep status ${id} --queue) to follow it again`;
  return `sweep ${id} stopped; rerun the same command (or tlx sweep --resume ${id}) to continue`;
}

/** Writes the plan and the trial states carried over from an earlier attempt; returns the states. */
function recordPlan(folder: SweepFolder, planned: SweepPlanned, log: Logger): TrialState[] {
  folder.writePlan(planRecordOf(planned, path.resolve(planned.file)));
  const states = reconcile(folder.readStatus(), planned.jobs);
  folder.writeStatus(states);
  const skipped = states.filter((s) => s.status === 'finished').length;
  log.info(
    { sweep: planned.id, trials: planned.jobs.length, skipped, dir: folder.dir },
    `sweep ${planned.id}: ${planned.jobs.length} trial(s)${skipped ? `, ${skipped} already finished` : ''}`,
  );
  return states;
}

/** The results: the best trial (within the budget, when the sweep has one; here, exported when sweep.export is best, registered when asked), results.csv/json, the plots, the parent run closed. */
async function report(
  planned: SweepPlanned,
  folder: SweepFolder,
  states: TrialState[],
  scheduler: TrialScheduler,
  context: { trackingUri?: string; parent?: SweepParentRun; options: SweepOptions },
): Promise<SweepResult> {
  const { trackingUri, parent, options } = context;
  const { log } = options;
  const metric = planned.metric as SweepMetric;
  const exportOptions = { cacheDir: options.cacheDir, log, signal: options.signal, ...scheduler.exportServices() };
  const judged = await phoneCosts(planned, states, scheduler, (run) =>
    exportTrial(run, exportOptions, "to measure its architecture's costs against sweep.constraints"),
  );
  const best = bestTrial(judged.rows(), metric, planned.goal, planned.constraints ? 'within' : undefined);
  const bestState = states.find((s) => s.trial === best?.trial);
  const bestFolder = bestState ? await scheduler.folderOf(bestState) : undefined;
  folder.writeStatus(states);
  if (planned.exportPolicy === 'best' && bestFolder && planned.base.config.export.tflite)
    await exportTrial(bestFolder, exportOptions, 'the best trial (sweep.export: best)');
  if (bestFolder && trackingUri && planned.base.config.tracking.mlflow?.register_model)
    await registerBest(bestFolder, trackingUri, parent?.runId, log);
  const rows = judged.rows();
  const bestRow = rows.find((r) => r.trial === best?.trial);
  if (planned.constraints && !bestRow) log.warn(noneWithinBudget(rows));
  folder.writeResults(resultsCsv(rows), {
    sweep_id: planned.id,
    metric,
    goal: planned.goal,
    export: planned.exportPolicy,
    search: planned.search,
    ...(planned.constraints ? { constraints: planned.constraints } : {}),
    best_trial: bestRow?.trial ?? null,
    best_run: bestRow?.run_id ?? null,
    trials: rows,
  });
  await drawPlots(folder, rows, planned, log);
  await parent?.finish(
    { metric, value: bestRow ? (bestRow[metric] as number | undefined) : undefined, runId: bestRow?.run_id },
    rows.some((r) => r.status === 'failed'),
  );
  return {
    dir: folder.dir,
    id: planned.id,
    metric,
    rows,
    best: bestRow,
    complete: true,
    constraints: planned.constraints,
  };
}

/**
 * Each trial's row with what its .tflite costs and, with sweep.constraints, whether it fits.
 * With a budget, one trial per architecture is exported to measure it (the rest share it);
 * without one, the costs of the trials that exported are shown as they are.
 */
async function phoneCosts(
  planned: SweepPlanned,
  states: TrialState[],
  scheduler: TrialScheduler,
  exportRun: (folder: RunFolder) => Promise<void>,
): Promise<{ rows: () => TrialRow[] }> {
  const keys = footprintKeys(planned);
  const measured = planned.constraints
    ? await measureFootprints({
        planned,
        states,
        rows: states.map(rowFor),
        folderOf: (state) => scheduler.folderOf(state),
        exportRun,
      })
    : new Map<string, Footprint>();
  // Rows are read again after the best trial's export, so they say what was exported.
  return { rows: () => withFootprints(states.map(rowFor), keys, measured, planned.constraints) };
}

function noneWithinBudget(rows: TrialRow[]): string {
  const over = rows.filter((r) => r.budget === 'over').map((r) => `trial ${r.trial}: ${r.over_budget?.join('; ')}`);
  const unmeasured = rows.filter((r) => r.budget === 'unmeasured').map((r) => r.trial);
  return [
    'no trial is within the budget (sweep.constraints): nothing is exported or registered as the best',
    ...over,
    ...(unmeasured.length ? [`not measured (no .tflite): trial(s) ${unmeasured.join(', ')}`] : []),
  ].join('\n  ');
}

/** plot.png (the metric by trial) and, when the trials' host latencies are known, pareto.png. */
async function drawPlots(folder: SweepFolder, rows: TrialRow[], planned: SweepPlanned, log: Logger): Promise<void> {
  const metric = planned.metric as SweepMetric;
  try {
    folder.writePlot(await chartPng(sweepPlotSpec(rows, metric)));
    const threads = planned.constraints?.latency_threads ?? 1;
    const points = paretoRows(rows, metric, threads);
    if (points.length > 0)
      folder.writePlot(
        await chartPng(
          paretoPlotSpec(points, {
            metric,
            goal: planned.goal,
            threads,
            maxLatencyMs: planned.constraints?.max_host_latency_ms,
          }),
        ),
        'pareto.png',
      );
  } catch (error) {
    log.warn({ error: errorMessage(error) }, 'could not draw the sweep plots');
  }
}

/** A finished trial's export (the best one with sweep.export: best, or one per architecture for a budget), unless it has one already (a rerun). */
async function exportTrial(
  folder: RunFolder,
  options: Parameters<typeof exportFinishedRun>[1],
  why: string,
): Promise<void> {
  if (folder.hasSummary() && folder.readSummary().export?.tflite?.status === 'verified') return;
  folder.lock();
  try {
    options.log.info({ run: folder.id }, `exporting ${folder.id}: ${why}`);
    const record = await exportFinishedRun(folder, options);
    if (record.status !== 'verified')
      options.log.error(
        { run: folder.id, problems: record.problems },
        `the export of ${folder.id} failed: ${record.problems.join('; ')}`,
      );
  } finally {
    folder.unlock();
  }
}

/** A sweep registers only its best trial's model (tracking.mlflow.register_model). */
async function registerBest(
  folder: RunFolder,
  trackingUri: string,
  parentRunId: string | undefined,
  log: Logger,
): Promise<void> {
  folder.lock();
  try {
    await syncRun(folder, { trackingUri, parentRunId, log, register: true });
  } catch (error) {
    log.warn({ run: folder.id, error: errorMessage(error) }, "could not register the best trial's model in MLflow");
  } finally {
    folder.unlock();
  }
}
