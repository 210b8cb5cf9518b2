import fs from 'node:fs';
import path from 'node:path';
import { canonicalJson, loadExperiment, sha256Hex, type LoadedExperiment } from '../config/load.ts';
import type { ResolvedExperiment } from '../config/resolved.ts';
import { prepareDataset, type PreparedDataset } from '../data/dataset.ts';
import { ConfigError, UserError, errorMessage } from '../errors.ts';
import type { Logger } from '../log.ts';
import { writeChartPng } from '../plots/render.ts';
import { executeRun, seedRunFromFeatureExtraction, trackingUriFor, type RunSummary } from '../run.ts';
import { MlflowClient } from '../track/mlflow-client.ts';
import { RunFolder, writeFileAtomic, writeJsonAtomic } from '../track/run-store.ts';
import { redactUri } from '../track/sync.ts';
import { assignmentFlags, describeAssignments, expandGrid, featureExtractionIdentity, gridFromConfig, parseGridFlag, type Grid, type GridValue, type TrialPlan } from './grid.ts';
import { bestTrial, resultsCsv, resultsTable, sweepPlotSpec, type SweepMetric, type TrialRow } from './results.ts';
import { LocalScheduler, type TrialScheduler } from './scheduler.ts';

/**
 * `tlx sweep`: validate every trial first, then run them as ordinary runs. Trials that
 * differ only in keys used after feature extraction share one feature-extraction phase
 * (the first of them trains it; the others start from its checkpoint, which is exactly the
 * state they would have reached), data is decoded once, finished trials are skipped on a
 * rerun, and a failing trial is recorded without stopping the others.
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
  scheduler?: TrialScheduler<TrialJob, TrialRow>;
}

export interface TrialJob {
  plan: TrialPlan;
  experiment: LoadedExperiment;
  configSha256: string;
  /** Trials with the same group share a feature-extraction phase. */
  group: string;
}

interface TrialStatus {
  trial: number;
  assignments: Record<string, GridValue>;
  config_sha256: string;
  status: 'pending' | 'running' | 'finished' | 'failed';
  run_dir?: string;
  error?: string;
}

interface SweepPlanFile {
  sweep_id: string;
  experiment_file: string;
  overrides: string[];
  grid: Grid;
  metric: SweepMetric;
  goal: 'max' | 'min';
  trials: { trial: number; assignments: Record<string, GridValue>; config_sha256: string; group: string }[];
}

export interface SweepResult {
  dir: string;
  rows: TrialRow[];
  best?: TrialRow;
}

function withoutSweep(experiment: LoadedExperiment): LoadedExperiment {
  const { sweep: _sweep, ...config } = experiment.config;
  const resolved = config as ResolvedExperiment;
  return { ...experiment, config: resolved, configSha256: sha256Hex(canonicalJson(resolved)) };
}

/** Loads and validates every trial before any runs; all invalid trials are reported at once. */
export function planTrials(file: string, overrides: string[], gridFlags: string[], maxTrials?: number): { base: LoadedExperiment; grid: Grid; jobs: TrialJob[] } {
  const base = loadExperiment(file, { overrides });
  const grid: Grid = { ...gridFromConfig(base.config.sweep) };
  for (const flag of gridFlags) {
    const [key, values] = parseGridFlag(flag);
    grid[key] = values;
  }
  const plans = expandGrid(grid, maxTrials);
  const problems: string[] = [];
  const jobs: TrialJob[] = [];
  for (const plan of plans) {
    try {
      const experiment = withoutSweep(loadExperiment(file, { overrides: [...overrides, ...assignmentFlags(plan.assignments)] }));
      const group = sha256Hex(canonicalJson(featureExtractionIdentity(experiment.config as unknown as Record<string, unknown>))).slice(0, 16);
      jobs.push({ plan, experiment, configSha256: experiment.configSha256, group });
    } catch (error) {
      const detail = error instanceof ConfigError ? error.problems.map((p) => `${p.keyPath ? `${p.keyPath}: ` : ''}${p.message}`).join('; ') : errorMessage(error);
      problems.push(`trial ${plan.index} (${describeAssignments(plan.assignments)}): ${detail}`);
    }
  }
  if (problems.length > 0) throw new UserError(`sweep: ${problems.length} of ${plans.length} trial(s) are invalid; nothing was run:\n${problems.join('\n')}`);
  return { base, grid, jobs };
}

function summaryOf(dir: string): RunSummary | undefined {
  const file = path.join(dir, 'summary.json');
  return fs.existsSync(file) ? (JSON.parse(fs.readFileSync(file, 'utf8')) as RunSummary) : undefined;
}

function rowFor(status: TrialStatus, minutes?: number, shared?: boolean): TrialRow {
  const summary = status.run_dir ? summaryOf(status.run_dir) : undefined;
  const tflite = (summary?.export as { tflite?: { quantization: string; accuracy?: number; bytes: number } } | undefined)?.tflite;
  return {
    trial: status.trial,
    assignments: status.assignments,
    status: status.status,
    run_id: status.run_dir ? path.basename(status.run_dir) : undefined,
    run_dir: status.run_dir,
    best_val_accuracy: summary?.metrics.best_val_accuracy,
    val_accuracy: summary?.metrics.final?.val_accuracy,
    val_loss: summary?.metrics.final?.val_loss,
    test_accuracy: summary?.metrics.final?.test_accuracy,
    test_loss: summary?.metrics.final?.test_loss,
    tflite_quantization: tflite?.quantization,
    tflite_accuracy: tflite?.accuracy,
    tflite_bytes: tflite?.bytes,
    minutes: minutes ?? (summary ? summary.seconds / 60 : undefined),
    shared_feature_extraction: shared,
    error: status.error,
  };
}

/** The sweep's MLflow parent run: swept keys as params, trials nest under it. */
async function parentRun(trackingUri: string, experimentName: string, dir: string, sweepId: string, grid: Grid, log: Logger): Promise<{ client: MlflowClient; experimentId: string; runId: string } | undefined> {
  const stateFile = path.join(dir, 'mlflow.json');
  const uri = redactUri(trackingUri);
  try {
    const client = new MlflowClient({ trackingUri, retries: 2 });
    const saved = fs.existsSync(stateFile) ? (JSON.parse(fs.readFileSync(stateFile, 'utf8')) as Record<string, { experiment_id: string; run_id: string }>)[uri] : undefined;
    if (saved && (await client.getRun(saved.run_id))) return { client, experimentId: saved.experiment_id, runId: saved.run_id };
    const experimentId = await client.ensureExperiment(experimentName);
    const runId = await client.createRun(experimentId, `sweep-${sweepId}`, Date.now(), [
      { key: 'mlflow.runName', value: `sweep-${sweepId}` },
      { key: 'mlflow.source.type', value: 'LOCAL' },
      { key: 'tlx.sweep_id', value: sweepId },
    ]);
    await client.logBatch(
      runId,
      [],
      Object.entries(grid).map(([key, values]) => ({ key: `sweep.${key}`, value: JSON.stringify(values) })),
    );
    writeJsonAtomic(stateFile, { [uri]: { experiment_id: experimentId, run_id: runId } });
    return { client, experimentId, runId };
  } catch (error) {
    log.warn({ error: errorMessage(error) }, 'MLflow parent run for the sweep could not be created; trials still log on their own');
    return undefined;
  }
}

export async function runSweep(options: SweepOptions): Promise<SweepResult> {
  const { log } = options;
  let file = options.file;
  let overrides = options.overrides;
  let gridFlags = options.grid;
  if (options.resume) {
    const planFile = path.join(options.runsDir, 'sweeps', options.resume, 'plan.json');
    if (!fs.existsSync(planFile)) throw new UserError(`sweep --resume: no sweep ${options.resume} under ${path.join(options.runsDir, 'sweeps')}`);
    const saved = JSON.parse(fs.readFileSync(planFile, 'utf8')) as SweepPlanFile;
    file = saved.experiment_file;
    overrides = saved.overrides;
    gridFlags = Object.entries(saved.grid).map(([key, values]) => `${key}=${values.map((v) => (typeof v === 'string' ? v : JSON.stringify(v))).join(',')}`);
  }
  if (!file) throw new UserError('sweep: expected an experiment file, or --resume <sweep-id>');
  const { base, grid, jobs } = planTrials(file, overrides, gridFlags, options.maxTrials);
  const metric = (base.config.sweep?.metric ?? 'val_accuracy') as SweepMetric;
  const goal = base.config.sweep?.goal ?? 'max';
  const baseConfig = withoutSweep(base).config;
  const sweepId = options.resume ?? `${base.config.name}-${sha256Hex(canonicalJson({ baseConfig, grid, maxTrials: options.maxTrials ?? null })).slice(0, 10)}`;
  const dir = path.resolve(options.runsDir, 'sweeps', sweepId);
  fs.mkdirSync(dir, { recursive: true });
  const planFile: SweepPlanFile = {
    sweep_id: sweepId,
    experiment_file: path.resolve(file),
    overrides,
    grid,
    metric,
    goal,
    trials: jobs.map((j) => ({ trial: j.plan.index, assignments: j.plan.assignments, config_sha256: j.configSha256, group: j.group })),
  };
  writeJsonAtomic(path.join(dir, 'plan.json'), planFile);
  const statusFile = path.join(dir, 'status.json');
  const previous = fs.existsSync(statusFile) ? (JSON.parse(fs.readFileSync(statusFile, 'utf8')) as TrialStatus[]) : [];
  const statuses: TrialStatus[] = jobs.map((job) => {
    const before = previous.find((s) => s.config_sha256 === job.configSha256);
    const finished = before?.status === 'finished' && before.run_dir && summaryOf(before.run_dir)?.status === 'FINISHED';
    return finished ? { ...before!, trial: job.plan.index } : { trial: job.plan.index, assignments: job.plan.assignments, config_sha256: job.configSha256, status: 'pending' };
  });
  const saveStatus = () => writeJsonAtomic(statusFile, statuses);
  saveStatus();
  const skipped = statuses.filter((s) => s.status === 'finished').length;
  log.info({ sweep: sweepId, trials: jobs.length, skipped, dir }, `sweep ${sweepId}: ${jobs.length} trial(s)${skipped ? `, ${skipped} already finished` : ''}`);

  const trackingUri = trackingUriFor(baseConfig);
  const parent = trackingUri ? await parentRun(trackingUri, baseConfig.tracking.mlflow?.experiment ?? baseConfig.name, dir, sweepId, grid, log) : undefined;

  // Data decoded once per sweep, per distinct dataset config.
  const datasets = new Map<string, Promise<PreparedDataset>>();
  const prepareData = (config: ResolvedExperiment, baseDir: string) => {
    const key = sha256Hex(canonicalJson({ dataset: config.dataset, seed: config.seed, baseDir }));
    if (!datasets.has(key)) datasets.set(key, prepareDataset(config, { baseDir, cacheDir: options.cacheDir, log }));
    return datasets.get(key)!;
  };

  const groupSizes = new Map<string, number>();
  for (const job of jobs) groupSizes.set(job.group, (groupSizes.get(job.group) ?? 0) + 1);
  const leaders = new Map<string, string>();
  for (const status of statuses) {
    const job = jobs.find((j) => j.plan.index === status.trial)!;
    if (status.status === 'finished' && status.run_dir && fs.existsSync(path.join(status.run_dir, 'checkpoints', 'feature_extraction'))) leaders.set(job.group, status.run_dir);
  }
  const minutes = new Map<number, number>();
  const shared = new Set<number>();
  const execute = async (job: TrialJob): Promise<TrialRow> => {
    const status = statuses.find((s) => s.trial === job.plan.index)!;
    if (status.status === 'finished') return rowFor(status);
    const started = performance.now();
    status.status = 'running';
    status.error = undefined;
    saveStatus();
    log.info({ trial: job.plan.index, assignments: job.plan.assignments }, `trial ${job.plan.index}: ${describeAssignments(job.plan.assignments)}`);
    try {
      const leader = leaders.get(job.group);
      const runOptions = { runsDir: options.runsDir, cacheDir: options.cacheDir, log, prepareData, parentRunId: parent?.runId };
      let result;
      if (leader && job.experiment.config.train.feature_extraction.epochs > 0) {
        const seeded = seedRunFromFeatureExtraction(job.experiment, options.runsDir, RunFolder.open(leader));
        shared.add(job.plan.index);
        status.run_dir = seeded.dir;
        saveStatus();
        log.info({ trial: job.plan.index, from: path.basename(leader) }, 'feature extraction shared: starting from its checkpoint');
        result = await executeRun(undefined, { ...runOptions, resume: seeded.dir });
      } else {
        result = await executeRun(job.experiment, runOptions);
        if ((groupSizes.get(job.group) ?? 0) > 1) leaders.set(job.group, result.folder.dir);
      }
      status.run_dir = result.folder.dir;
      status.status = 'finished';
    } catch (error) {
      status.status = 'failed';
      status.error = errorMessage(error).split('\n')[0];
      log.error({ trial: job.plan.index, error: status.error }, `trial ${job.plan.index} failed; the sweep goes on`);
    }
    minutes.set(job.plan.index, (performance.now() - started) / 60_000);
    saveStatus();
    return rowFor(status, minutes.get(job.plan.index), shared.has(job.plan.index));
  };

  // Group leaders first, so that every other trial of a group can start from its checkpoint.
  const isLeader = (job: TrialJob) => jobs.find((j) => j.group === job.group) === job;
  const scheduler = options.scheduler ?? new LocalScheduler<TrialJob, TrialRow>(options.parallel);
  await scheduler.runAll(jobs.filter(isLeader), execute);
  await scheduler.runAll(jobs.filter((j) => !isLeader(j)), execute);
  const rows = statuses.map((s) => rowFor(s, minutes.get(s.trial), shared.has(s.trial)));

  const best = bestTrial(rows, metric, goal);
  writeFileAtomic(path.join(dir, 'results.csv'), resultsCsv(rows));
  writeJsonAtomic(path.join(dir, 'results.json'), { sweep_id: sweepId, metric, goal, best_trial: best?.trial ?? null, best_run: best?.run_id ?? null, trials: rows });
  try {
    await writeChartPng(sweepPlotSpec(rows, metric), path.join(dir, 'plot.png'));
  } catch (error) {
    log.warn({ error: errorMessage(error) }, 'could not draw the sweep plot');
  }
  if (parent) {
    try {
      const value = best ? (best[metric] as number | undefined) : undefined;
      if (value !== undefined) await parent.client.logBatch(parent.runId, [{ key: `best_${metric}`, value, timestamp: Date.now(), step: 0 }], [], [{ key: 'tlx.best_run', value: best?.run_id ?? '' }]);
      for (const name of ['results.csv', 'results.json', 'plot.png']) if (fs.existsSync(path.join(dir, name))) await parent.client.logArtifact(parent.experimentId, parent.runId, name, path.join(dir, name));
      await parent.client.updateRun(parent.runId, rows.some((r) => r.status === 'failed') ? 'FAILED' : 'FINISHED', Date.now());
    } catch (error) {
      log.warn({ error: errorMessage(error) }, 'could not finish the sweep parent run in MLflow');
    }
  }
  process.stdout.write(`${resultsTable(rows, best)}\n`);
  process.stdout.write(best ? `best: trial ${best.trial} (${describeAssignments(best.assignments)}) ${metric} ${(best[metric] as number).toFixed(4)} -> ${best.run_dir}\n` : `best: none (no trial has ${metric})\n`);
  process.stdout.write(`sweep ${sweepId}: ${dir}\n`);
  return { dir, rows, best };
}
