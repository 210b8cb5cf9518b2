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
import { executeRun } from '../run/run.ts';
import { seedFromFeatureExtraction } from '../run/seed.ts';
import type { TrialState } from '../run-folder/records.ts';
import { RunFolder } from '../run-folder/run-folder.ts';
import { SweepFolder } from '../run-folder/sweep-folder.ts';
import { SweepParentRun } from '../track/sweep-parent.ts';
import { syncRun, trackingUriFor } from '../track/sync.ts';
import { describeAssignments, parentRunOf, parseGridFlag, planSweep, type Grid, type GridValue, type SweepPlanned, type TrialJob } from './plan.ts';
import { bestTrial, resultsCsv, sweepPlotSpec, type SweepMetric, type TrialRow } from './report.ts';
import { LocalScheduler, type TrialScheduler } from './schedule.ts';

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
  const summary = folder?.hasSummary() ? folder.readSummary() : undefined;
  const tflite = summary?.export?.tflite;
  return {
    trial: state.trial,
    assignments: state.assignments as Record<string, GridValue>,
    status: state.status,
    run_id: state.run_dir ? path.basename(state.run_dir) : undefined,
    run_dir: state.run_dir,
    best_val_accuracy: summary?.metrics.best_val_accuracy,
    val_accuracy: summary?.metrics.final?.val_accuracy,
    val_loss: summary?.metrics.final?.val_loss,
    test_accuracy: summary?.metrics.final?.test_accuracy,
    test_loss: summary?.metrics.final?.test_loss,
    tflite_quantization: tflite?.quantization,
    tflite_accuracy: tflite?.accuracy,
    tflite_bytes: tflite?.bytes,
    exported: tflite?.status === 'verified',
    minutes: state.minutes ?? (summary ? summary.seconds / 60 : undefined),
    shared_feature_extraction: state.shared_feature_extraction,
    error: state.error,
  };
}

export async function runSweep(options: SweepOptions): Promise<SweepResult> {
  const { log } = options;
  const planned = planFor(options);
  const folder = SweepFolder.at(options.runsDir, planned.id);
  folder.lock({ onTakeover: (owner, reason) => log.warn({ sweep: planned.id, pid: owner?.pid }, `taking over the lock of sweep ${planned.id} (${reason})`) });
  let exporter: PythonWorker | undefined;
  try {
    folder.writePlan({
      sweep_id: planned.id,
      experiment_file: path.resolve(planned.file),
      overrides: planned.overrides,
      grid: planned.grid,
      max_trials: planned.maxTrials ?? null,
      metric: planned.metric,
      goal: planned.goal,
      export: planned.exportPolicy,
      trials: planned.jobs.map((j) => ({ trial: j.plan.index, assignments: j.plan.assignments, config_sha256: j.configSha256, group: j.group })),
    });
    const states = reconcile(folder.readStatus(), planned.jobs);
    const save = () => folder.writeStatus(states);
    save();
    const skipped = states.filter((s) => s.status === 'finished').length;
    log.info({ sweep: planned.id, trials: planned.jobs.length, skipped, dir: folder.dir }, `sweep ${planned.id}: ${planned.jobs.length} trial(s)${skipped ? `, ${skipped} already finished` : ''}`);

    const trackingUri = trackingUriFor(planned.base.config);
    const parent = trackingUri
      ? await SweepParentRun.open(folder, { trackingUri, log, ...parentRunOf(planned) })
      : undefined;
    const datasets = new DatasetCache(options.cacheDir, log);
    const prepareData = (config: ResolvedExperiment, baseDir: string, known?: string) => datasets.get(config, baseDir, known);
    const exportsTrials = planned.exportPolicy === 'all' && Boolean(planned.base.config.export.tflite);
    const sharedExporter = () => (exporter ??= PythonWorker.start((line) => log.debug({ python: line })));

    const groupSizes = new Map<string, number>();
    for (const job of planned.jobs) groupSizes.set(job.group, (groupSizes.get(job.group) ?? 0) + 1);
    const leaders = new Map<string, RunFolder>();
    for (const state of states) {
      const job = planned.jobs.find((j) => j.plan.index === state.trial)!;
      if (state.status === 'finished' && state.run_dir) leaders.set(job.group, RunFolder.open(state.run_dir));
    }

    const trialOf = (job: TrialJob) => ({ assignments: job.plan.assignments, sweep: { id: planned.id, dir: folder.dir } });
    const execute = async (job: TrialJob): Promise<TrialState> => {
      const state = states.find((s) => s.trial === job.plan.index)!;
      if (state.status === 'finished') return state;
      const started = performance.now();
      log.info({ trial: job.plan.index, assignments: job.plan.assignments }, `trial ${job.plan.index}: ${describeAssignments(job.plan.assignments)}`);
      const onOpen = (opened: RunFolder) => {
        state.run_dir = opened.dir;
        save();
      };
      const runOptions = { runsDir: options.runsDir, cacheDir: options.cacheDir, log, prepareData, parentRunId: parent?.runId, interrupt: options.interrupt, progress: options.progress, export: exportsTrials, exporter: exportsTrials ? sharedExporter() : undefined, register: false, onOpen };
      try {
        const leader = leaders.get(job.group);
        let start: Parameters<typeof executeRun>[0];
        if (state.run_dir) {
          start = { resume: state.run_dir };
        } else if (leader && job.experiment.config.train.feature_extraction.epochs > 0) {
          const seeded = seedFromFeatureExtraction(job.experiment, options.runsDir, leader, trialOf(job));
          state.run_dir = seeded.dir;
          state.shared_feature_extraction = true;
          log.info({ trial: job.plan.index, from: leader.id }, 'feature extraction shared: starting from its checkpoint');
          start = { resume: seeded.dir };
        } else {
          start = { experiment: job.experiment, trial: trialOf(job) };
        }
        state.status = 'running';
        state.error = undefined;
        save();
        const result = await executeRun(start, runOptions);
        state.run_dir = result.folder.dir;
        state.status = 'finished';
        if ((groupSizes.get(job.group) ?? 0) > 1 && !leaders.has(job.group)) leaders.set(job.group, result.folder);
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
      save();
      return state;
    };

    // Data-sharing trials run back to back; group leaders first, so every other trial of a group can start from its checkpoint.
    const order = [...planned.jobs].sort((a, b) => a.group.localeCompare(b.group) || a.plan.index - b.plan.index);
    const isLeader = (job: TrialJob) => order.find((j) => j.group === job.group) === job;
    const scheduler = options.scheduler ?? new LocalScheduler<TrialJob, TrialState>(options.parallel, () => Boolean(options.interrupt?.requested));
    await scheduler.runAll(order.filter(isLeader), execute);
    await scheduler.runAll(order.filter((j) => !isLeader(j)), execute);
    if (options.interrupt?.requested) throw new InterruptedError(`sweep ${planned.id} stopped; rerun the same command (or tlx sweep --resume ${planned.id}) to continue`);

    const metric = planned.metric as SweepMetric;
    let rows = states.map(rowFor);
    const best = bestTrial(rows, metric, planned.goal);
    if (planned.exportPolicy === 'best' && best?.run_dir && planned.base.config.export.tflite) {
      await exportBest(best.run_dir, { cacheDir: options.cacheDir, log, prepareData, exporter: sharedExporter(), interrupt: options.interrupt });
      rows = states.map(rowFor);
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
  } finally {
    await exporter?.close();
    folder.unlock();
  }
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
