import path from 'node:path';
import type { ResolvedExperiment } from '../config/resolved.ts';
import { InterruptedError, errorMessage } from '../core/errors.ts';
import { canonicalJson, sha256Hex } from '../core/hash.ts';
import type { Logger } from '../core/log.ts';
import { prepareDataset, type PreparedDataset } from '../data/dataset.ts';
import { PythonWorker } from '../export/python.ts';
import { writeChartPng } from '../plots/render.ts';
import { exportFinishedRun } from '../run/export-finished.ts';
import type { RunProgressFactory } from '../run/progress.ts';
import { executeRun, type RunOptions, type RunStart } from '../run/run.ts';
import { seedFromFeatureExtraction } from '../run/seed.ts';
import { FrozenPrefixStore } from '../train/frontier.ts';
import type { TrialState } from '../run-folder/records.ts';
import { RunFolder } from '../run-folder/run-folder.ts';
import { SweepFolder } from '../run-folder/sweep-folder.ts';
import { SweepParentRun } from '../track/sweep-parent.ts';
import { syncRun, trackingUriFor } from '../track/sync.ts';
import { describeAssignments, parentRunOf, parseGridFlag, planRecordOf, planSweep, type Grid, type GridValue, type SweepPlanned, type TrialJob } from './plan.ts';
import { bestTrial, resultsCsv, sweepPlotSpec, type SweepMetric, type TrialRow } from './report.ts';
import { LocalScheduler, type TrialScheduler } from './schedule.ts';
import { trialRow } from './trial.ts';

/**
 * `tlx sweep` as plan -> schedule -> report. Every trial is validated first; trials run as
 * ordinary runs; trials that differ only in keys used after feature extraction share one
 * feature-extraction phase (the first of a group trains it, the others start from its
 * checkpoint: exactly the state they would have reached); data is decoded once; a rerun
 * (or --resume) skips finished trials and resumes an interrupted one from its checkpoint.
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
  interrupt?: { readonly requested: boolean };
  progress?: RunProgressFactory;
  scheduler?: TrialScheduler<TrialJob, TrialState>;
}

export interface SweepResult {
  dir: string;
  id: string;
  metric: SweepMetric;
  rows: TrialRow[];
  best?: TrialRow;
}

/** The plan of a new sweep (file, flags), or of a stored one (values as stored: never re-parsed). */
export function planFor(options: Pick<SweepOptions, 'file' | 'overrides' | 'grid' | 'resume' | 'maxTrials' | 'runsDir'>): SweepPlanned {
  if (options.resume) {
    const stored = SweepFolder.open(options.runsDir, options.resume).readPlan();
    return { ...planSweep({ file: stored.experiment_file, overrides: stored.overrides, grid: stored.grid as Grid, maxTrials: stored.max_trials ?? undefined }), id: stored.sweep_id };
  }
  if (!options.file) throw new Error('sweep: expected an experiment file, or --resume <sweep-id>');
  const grid: Grid = {};
  for (const flag of options.grid) {
    const [key, values] = parseGridFlag(flag);
    grid[key] = values;
  }
  return planSweep({ file: path.resolve(options.file), overrides: options.overrides, grid, maxTrials: options.maxTrials });
}

/** Trial states carried over from an earlier attempt at the same sweep, matched by config. */
function reconcile(previous: TrialState[], jobs: TrialJob[]): TrialState[] {
  return jobs.map((job) => {
    const before = previous.find((s) => s.config_sha256 === job.configSha256);
    const folder = before?.run_dir ? RunFolder.tryOpen(before.run_dir) : undefined;
    if (before?.status === 'finished' && folder?.hasSummary() && folder.readSummary().status === 'FINISHED') return { ...before, trial: job.plan.index };
    // An interrupted trial keeps its folder, to be resumed from its checkpoint.
    if ((before?.status === 'killed' || before?.status === 'running') && before.run_dir) return { ...before, trial: job.plan.index, status: 'pending' };
    return { trial: job.plan.index, assignments: job.plan.assignments, config_sha256: job.configSha256, status: 'pending' };
  });
}

/**
 * Decoded datasets, one at a time: a sweep keeps one memory budget for the whole process,
 * so the data of another config replaces the previous one instead of adding to it.
 */
class DatasetCache {
  private current?: { key: string; data: Promise<PreparedDataset> };

  constructor(
    private readonly cacheDir: string | undefined,
    private readonly log: Logger,
  ) {}

  get(config: ResolvedExperiment, baseDir: string, knownArchiveSha256?: string): Promise<PreparedDataset> {
    const key = sha256Hex(canonicalJson({ dataset: config.dataset, seed: config.seed, baseDir }));
    if (this.current?.key !== key) this.current = { key, data: prepareDataset(config, { baseDir, cacheDir: this.cacheDir, log: this.log, knownArchiveSha256 }) };
    return this.current.data;
  }
}

function rowFor(state: TrialState): TrialRow {
  const folder = state.run_dir ? RunFolder.tryOpen(state.run_dir) : undefined;
  const extra: Partial<TrialRow> = { shared_feature_extraction: state.shared_feature_extraction, error: state.error };
  if (state.run_dir) Object.assign(extra, { run_id: path.basename(state.run_dir), run_dir: state.run_dir });
  if (state.minutes !== undefined) extra.minutes = state.minutes;
  return trialRow(state.trial, state.assignments as Record<string, GridValue>, folder, state.status, extra);
}

export async function runSweep(options: SweepOptions): Promise<SweepResult> {
  const { log } = options;
  const planned = planFor(options);
  const folder = SweepFolder.at(options.runsDir, planned.id);
  folder.lock({ onTakeover: (owner, reason) => log.warn({ sweep: planned.id, pid: owner?.pid }, `taking over the lock of sweep ${planned.id} (${reason})`) });
  let trials: TrialRunner | undefined;
  try {
    const states = recordPlan(folder, planned, log);
    const trackingUri = trackingUriFor(planned.base.config);
    const parent = trackingUri ? await SweepParentRun.open(folder, { trackingUri, log, ...parentRunOf(planned) }) : undefined;
    trials = new TrialRunner(planned, folder, states, options, parent?.runId);
    await scheduleTrials(planned.jobs, trials, options);
    if (options.interrupt?.requested) throw new InterruptedError(`sweep ${planned.id} stopped; rerun the same command (or tlx sweep --resume ${planned.id}) to continue`);
    return await report(planned, folder, trials, { trackingUri, parent, options });
  } finally {
    await trials?.close();
    folder.unlock();
  }
}

/** Writes the plan and the trial states carried over from an earlier attempt; returns the states. */
function recordPlan(folder: SweepFolder, planned: SweepPlanned, log: Logger): TrialState[] {
  folder.writePlan(planRecordOf(planned, path.resolve(planned.file)));
  const states = reconcile(folder.readStatus(), planned.jobs);
  folder.writeStatus(states);
  const skipped = states.filter((s) => s.status === 'finished').length;
  log.info({ sweep: planned.id, trials: planned.jobs.length, skipped, dir: folder.dir }, `sweep ${planned.id}: ${planned.jobs.length} trial(s)${skipped ? `, ${skipped} already finished` : ''}`);
  return states;
}

/** Data-sharing trials run back to back; group leaders first, so every other trial of a group can start from its checkpoint. */
async function scheduleTrials(jobs: TrialJob[], trials: TrialRunner, options: SweepOptions): Promise<void> {
  const order = [...jobs].sort((a, b) => a.group.localeCompare(b.group) || a.plan.index - b.plan.index);
  const isLeader = (job: TrialJob) => order.find((j) => j.group === job.group) === job;
  const scheduler = options.scheduler ?? new LocalScheduler<TrialJob, TrialState>(options.parallel, () => Boolean(options.interrupt?.requested));
  const execute = (job: TrialJob) => trials.execute(job);
  await scheduler.runAll(order.filter(isLeader), execute);
  await scheduler.runAll(order.filter((j) => !isLeader(j)), execute);
}

/**
 * Runs trials as ordinary runs in this process, sharing what a sweep can share: the decoded
 * data, one Python exporter, and each group's feature-extraction phase (its leader's checkpoint).
 */
class TrialRunner {
  private readonly datasets: DatasetCache;
  private exporter?: PythonWorker;
  private readonly leaders = new Map<string, RunFolder>();
  private readonly groupSizes = new Map<string, number>();
  /** Per group: the smallest fine_tune_at, below which the trials' frozen layers are the same. */
  private readonly groupFineTuneAt = new Map<string, number>();
  private readonly frozenPrefixes = new FrozenPrefixStore();
  private readonly exportsTrials: boolean;
  private readonly exportsBest: boolean;

  constructor(
    private readonly planned: SweepPlanned,
    private readonly folder: SweepFolder,
    readonly states: TrialState[],
    private readonly options: SweepOptions,
    private readonly parentRunId: string | undefined,
  ) {
    this.datasets = new DatasetCache(options.cacheDir, options.log);
    this.exportsTrials = planned.exportPolicy === 'all' && Boolean(planned.base.config.export.tflite);
    this.exportsBest = planned.exportPolicy === 'best' && Boolean(planned.base.config.export.tflite);
    for (const job of planned.jobs) {
      this.groupSizes.set(job.group, (this.groupSizes.get(job.group) ?? 0) + 1);
      const fineTuneAt = job.experiment.config.train.fine_tune.fine_tune_at;
      this.groupFineTuneAt.set(job.group, Math.min(fineTuneAt, this.groupFineTuneAt.get(job.group) ?? fineTuneAt));
    }
    for (const state of states) {
      const job = planned.jobs.find((j) => j.plan.index === state.trial)!;
      if (state.status === 'finished' && state.run_dir) this.leaders.set(job.group, RunFolder.open(state.run_dir));
    }
  }

  readonly prepareData = (config: ResolvedExperiment, baseDir: string, known?: string) => this.datasets.get(config, baseDir, known);

  sharedExporter(): PythonWorker {
    return (this.exporter ??= PythonWorker.start((line) => this.options.log.debug({ python: line })));
  }

  rows(): TrialRow[] {
    return this.states.map(rowFor);
  }

  async close(): Promise<void> {
    this.frozenPrefixes.dispose();
    await this.exporter?.close();
  }

  private save(): void {
    this.folder.writeStatus(this.states);
  }

  async execute(job: TrialJob): Promise<TrialState> {
    const { log } = this.options;
    const state = this.states.find((s) => s.trial === job.plan.index)!;
    if (state.status === 'finished') return state;
    const started = performance.now();
    log.info({ trial: job.plan.index, assignments: job.plan.assignments }, `trial ${job.plan.index}: ${describeAssignments(job.plan.assignments)}`);
    try {
      const start = this.startOf(job, state);
      state.status = 'running';
      state.error = undefined;
      this.save();
      const result = await executeRun(start, this.runOptions(state, job));
      state.run_dir = result.folder.dir;
      state.status = 'finished';
      if ((this.groupSizes.get(job.group) ?? 0) > 1 && !this.leaders.has(job.group)) this.leaders.set(job.group, result.folder);
    } catch (error) {
      if (error instanceof InterruptedError) {
        state.status = 'killed';
      } else {
        state.status = 'failed';
        state.error = errorMessage(error).split('\n')[0];
        log.error({ trial: job.plan.index, error: state.error }, `trial ${job.plan.index} failed; the sweep goes on`);
      }
    }
    state.minutes = (state.minutes ?? 0) + (performance.now() - started) / 60_000;
    this.save();
    return state;
  }

  /** Resume the trial's own folder, start from its group leader's feature extraction, or start afresh. */
  private startOf(job: TrialJob, state: TrialState): RunStart {
    if (state.run_dir) return { resume: state.run_dir };
    const leader = this.leaders.get(job.group);
    const trial = { assignments: job.plan.assignments, sweep: { id: this.planned.id, dir: this.folder.dir } };
    if (!leader || job.experiment.config.train.feature_extraction.epochs === 0) return { experiment: job.experiment, trial };
    const seeded = seedFromFeatureExtraction(job.experiment, this.options.runsDir, leader, trial);
    state.run_dir = seeded.dir;
    state.shared_feature_extraction = true;
    this.options.log.info({ trial: job.plan.index, from: leader.id }, 'feature extraction shared: starting from its checkpoint');
    return { resume: seeded.dir };
  }

  private runOptions(state: TrialState, job: TrialJob): RunOptions {
    const { runsDir, cacheDir, log, interrupt, progress } = this.options;
    const onOpen = (opened: RunFolder) => {
      state.run_dir = opened.dir;
      this.save();
    };
    const exporter = this.exportsTrials ? this.sharedExporter() : undefined;
    // sweep.export best: the exporter starts with the first trial and is ready when the winner is known.
    const warmForLater = this.exportsBest ? this.sharedExporter() : undefined;
    const frozenPrefix = (this.groupSizes.get(job.group) ?? 0) > 1 ? { store: this.frozenPrefixes, fineTuneAt: this.groupFineTuneAt.get(job.group)! } : undefined;
    return { runsDir, cacheDir, log, prepareData: this.prepareData, parentRunId: this.parentRunId, interrupt, progress, export: this.exportsTrials, exporter, warmForLater, register: false, onOpen, frozenPrefix };
  }
}

/** The results: best trial (exported when sweep.export is best, registered when asked), results.csv/json, the plot, the parent run closed. */
async function report(planned: SweepPlanned, folder: SweepFolder, trials: TrialRunner, context: { trackingUri?: string; parent?: SweepParentRun; options: SweepOptions }): Promise<SweepResult> {
  const { trackingUri, parent, options } = context;
  const { log } = options;
  const metric = planned.metric as SweepMetric;
  let rows = trials.rows();
  const best = bestTrial(rows, metric, planned.goal);
  if (planned.exportPolicy === 'best' && best?.run_dir && planned.base.config.export.tflite) {
    await exportBest(best.run_dir, { cacheDir: options.cacheDir, log, prepareData: trials.prepareData, exporter: trials.sharedExporter(), interrupt: options.interrupt });
    rows = trials.rows();
  }
  const bestRow = rows.find((r) => r.trial === best?.trial);
  if (bestRow && trackingUri && planned.base.config.tracking.mlflow?.register_model) await registerBest(bestRow, trackingUri, parent?.runId, log);
  folder.writeResults(resultsCsv(rows), { sweep_id: planned.id, metric, goal: planned.goal, export: planned.exportPolicy, best_trial: bestRow?.trial ?? null, best_run: bestRow?.run_id ?? null, trials: rows });
  try {
    await writeChartPng(sweepPlotSpec(rows, metric), folder.plot());
  } catch (error) {
    log.warn({ error: errorMessage(error) }, 'could not draw the sweep plot');
  }
  await parent?.finish({ metric, value: bestRow ? (bestRow[metric] as number | undefined) : undefined, runId: bestRow?.run_id }, rows.some((r) => r.status === 'failed'));
  return { dir: folder.dir, id: planned.id, metric, rows, best: bestRow };
}

async function exportBest(runDir: string, options: Parameters<typeof exportFinishedRun>[1]): Promise<void> {
  const folder = RunFolder.open(runDir);
  folder.lock();
  try {
    options.log.info({ run: folder.id }, 'exporting the best trial (sweep.export: best)');
    const record = await exportFinishedRun(folder, options);
    if (record.status !== 'verified') options.log.error({ run: folder.id, problems: record.problems }, `the best trial's export failed: ${record.problems.join('; ')}`);
  } finally {
    folder.unlock();
  }
}

/** A sweep registers only its best trial's model (tracking.mlflow.register_model). */
async function registerBest(best: TrialRow, trackingUri: string, parentRunId: string | undefined, log: Logger): Promise<void> {
  const folder = RunFolder.open(best.run_dir!);
  folder.lock();
  try {
    await syncRun(folder, { trackingUri, parentRunId, log, register: true });
  } catch (error) {
    log.warn({ run: folder.id, error: errorMessage(error) }, 'could not register the best trial\'s model in MLflow');
  } finally {
    folder.unlock();
  }
}
