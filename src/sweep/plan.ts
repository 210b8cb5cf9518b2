import YAML from 'yaml';
import { loadExperiment, type LoadedExperiment } from '../config/load.ts';
import type { ResolvedExperiment, Sweep } from '../config/resolved.ts';
import { forbiddenKeyMessage, forbiddenKeys } from '../config/sources.ts';
import { ConfigError, UserError, errorMessage } from '../core/errors.ts';
import { canonicalJson, sha256Hex } from '../core/hash.ts';
import type { SweepPlan } from '../run-folder/records.ts';
import { constraintsOf, type Constraints } from './budget.ts';
import { checkContinuousRange, isContinuous, sampleTrials, type SpaceEntry } from './sample.ts';

/**
 * Pure sweep planning: the grid from the config and --grid flags, expanded into trials,
 * every trial's config loaded and validated before anything runs, trials grouped by the
 * feature-extraction phase they can share, and the sweep's id derived from all of it.
 */

export type GridValue = string | number | boolean | null | unknown[] | Record<string, unknown>;
/** The swept keys: lists (a grid, or drawn from) and, for random search, continuous ranges. */
export type Grid = Record<string, SpaceEntry>;

export interface TrialPlan {
  index: number;
  /** Swept key -> value of this trial. */
  assignments: Record<string, GridValue>;
}

export interface TrialJob {
  plan: TrialPlan;
  experiment: LoadedExperiment;
  configSha256: string;
  /** Trials with the same group share a feature-extraction phase. */
  group: string;
}

type ExportPolicy = 'all' | 'best' | 'none';

export interface SweepPlanned {
  id: string;
  file: string;
  overrides: string[];
  grid: Grid;
  maxTrials?: number;
  /** How the trials came from the grid: every combination, or `trials` seeded random draws. */
  search: { method: 'grid' } | { method: 'random'; trials: number; seed: number };
  /** The phone's budget the best trial must fit (sweep.constraints). */
  constraints?: Constraints;
  metric: 'val_accuracy' | 'val_loss' | 'test_accuracy' | 'test_loss' | 'tflite_accuracy';
  goal: 'max' | 'min';
  exportPolicy: ExportPolicy;
  /** The experiment without its sweep block (what the parent run records). */
  base: LoadedExperiment;
  jobs: TrialJob[];
}

/** {from, to, step} with `to` included, free of floating-point drift (0.1 + 0.2 stays 0.3). */
export function expandRange(range: { from: number; to: number; step: number }, key: string): number[] {
  if (range.step <= 0) throw new UserError(`sweep.grid.${key}: step must be > 0`);
  if (range.to < range.from) throw new UserError(`sweep.grid.${key}: to (${range.to}) is below from (${range.from})`);
  const decimals = Math.max(...[range.from, range.step].map((v) => (String(v).split('.')[1] ?? '').length));
  const count = Math.floor((range.to - range.from) / range.step + 1e-9) + 1;
  if (count > 10_000) throw new UserError(`sweep.grid.${key}: ${count} values; more than 10000`);
  return Array.from({ length: count }, (_, i) => Number((range.from + i * range.step).toFixed(decimals)));
}

function checkGridKey(key: string, where: string): void {
  const forbidden = key.split('.').find((part) => forbiddenKeys.has(part));
  if (forbidden) throw new UserError(`${where}: ${key}: ${forbiddenKeyMessage(forbidden)}`);
}

function gridFromConfig(sweep: Sweep | undefined): Grid {
  const grid: Grid = {};
  for (const [key, spec] of Object.entries(sweep?.grid ?? {})) {
    checkGridKey(key, 'sweep.grid');
    if (isContinuous(spec)) {
      if (sweep?.method !== 'random')
        throw new UserError(
          `sweep.grid.${key}: a continuous range {min, max} is drawn from, so it needs sweep.method: random and sweep.trials; a grid takes a list or {from, to, step}`,
        );
      checkContinuousRange(spec, key);
      grid[key] = spec;
    } else
      grid[key] = Array.isArray(spec)
        ? (spec as GridValue[])
        : expandRange(spec as { from: number; to: number; step: number }, key);
  }
  return grid;
}

function searchOf(sweep: Sweep | undefined, experimentSeed: number): SweepPlanned['search'] {
  if (sweep?.method !== 'random') {
    if (sweep?.trials !== undefined)
      throw new UserError(
        'sweep.trials: the number of random draws needs sweep.method: random; a grid runs every combination (--max-trials keeps the first n)',
      );
    return { method: 'grid' };
  }
  if (sweep.trials === undefined)
    throw new UserError('sweep.trials: sweep.method: random needs the number of trials to draw (e.g. trials: 8)');
  return { method: 'random', trials: sweep.trials, seed: sweep.seed ?? experimentSeed };
}

function trialsOf(grid: Grid, search: SweepPlanned['search'], maxTrials?: number): TrialPlan[] {
  if (search.method === 'grid') return expandGrid(grid as Record<string, GridValue[]>, maxTrials);
  if (Object.keys(grid).length === 0)
    throw new UserError('sweep: nothing to draw from; add keys to sweep.grid or pass --grid key=v1,v2');
  const trials = sampleTrials(grid, search.trials, search.seed);
  return maxTrials === undefined ? trials : trials.slice(0, maxTrials);
}

/** `--grid key=v1,v2,...` (each value read as YAML: 40 is a number), or `key=from:to:step`. */
export function parseGridFlag(flag: string): [string, GridValue[]] {
  const equals = flag.indexOf('=');
  if (equals <= 0)
    throw new UserError(`--grid ${flag}: expected key.path=v1,v2,... (e.g. train.fine_tune.fine_tune_at=40,80,100)`);
  const key = flag.slice(0, equals).trim();
  checkGridKey(key, `--grid ${flag}`);
  const spec = flag.slice(equals + 1);
  const range = /^(-?[\d.]+):(-?[\d.]+):([\d.]+)$/.exec(spec);
  if (range) return [key, expandRange({ from: Number(range[1]), to: Number(range[2]), step: Number(range[3]) }, key)];
  const values = spec
    .split(',')
    .map((v) => v.trim())
    .filter((v) => v.length > 0)
    .map((v) => YAML.parse(v) as GridValue);
  if (values.length === 0) throw new UserError(`--grid ${flag}: no values`);
  return [key, values];
}

/** The grid product, last key varying fastest; `maxTrials` keeps the first n. */
export function expandGrid(grid: Record<string, GridValue[]>, maxTrials?: number): TrialPlan[] {
  const keys = Object.keys(grid);
  if (keys.length === 0)
    throw new UserError('sweep: nothing to sweep; add a sweep: grid: block to the experiment or pass --grid key=v1,v2');
  let combos: Record<string, GridValue>[] = [{}];
  for (const key of keys) combos = combos.flatMap((combo) => grid[key].map((value) => ({ ...combo, [key]: value })));
  const trials = combos.map((assignments, index) => ({ index, assignments }));
  return maxTrials === undefined ? trials : trials.slice(0, maxTrials);
}

/** A trial's values as --set flags: strings as they are, everything else as JSON (read back as YAML). */
export function assignmentFlags(assignments: Record<string, GridValue>): string[] {
  return Object.entries(assignments).map(
    ([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`,
  );
}

export function describeAssignments(assignments: Record<string, GridValue>): string {
  return assignmentFlags(assignments).join(', ');
}

/** The part of a resolved config that decides the feature-extraction phase's outcome. */
export function featureExtractionIdentity(config: Record<string, unknown>): Record<string, unknown> {
  const copy = structuredClone(config) as Record<string, Record<string, unknown>>;
  delete copy.export;
  delete copy.tracking;
  delete copy.name;
  delete copy.sweep;
  if (copy.train) delete copy.train.fine_tune;
  return copy;
}

function withoutSweep(experiment: LoadedExperiment): LoadedExperiment {
  const { sweep: _sweep, ...config } = experiment.config;
  const resolved = config as ResolvedExperiment;
  return { ...experiment, config: resolved, configSha256: sha256Hex(canonicalJson(resolved)) };
}

export interface PlanInput {
  file: string;
  overrides: string[];
  /** Grid values from --grid flags (or a stored plan), added to the file's sweep.grid. */
  grid: Grid;
  maxTrials?: number;
}

/** Loads and validates every trial before any runs; all invalid trials are reported at once. */
export function planSweep(input: PlanInput): SweepPlanned {
  // --grid keys join sweep.grid before validation, so `--set sweep.export=best` needs no grid in the file.
  const loaded = loadExperiment(input.file, { overrides: input.overrides, grid: input.grid });
  const grid: Grid = gridFromConfig(loaded.config.sweep);
  const search = searchOf(loaded.config.sweep, loaded.config.seed);
  const constraints = constraintsOf(loaded.config);
  const plans = trialsOf(grid, search, input.maxTrials);
  const problems: string[] = [];
  const jobs: TrialJob[] = [];
  for (const plan of plans) {
    try {
      const experiment = withoutSweep(
        loadExperiment(input.file, {
          overrides: [...input.overrides, ...assignmentFlags(plan.assignments)],
          grid: input.grid,
        }),
      );
      const group = sha256Hex(
        canonicalJson(featureExtractionIdentity(experiment.config as unknown as Record<string, unknown>)),
      ).slice(0, 16);
      jobs.push({ plan, experiment, configSha256: experiment.configSha256, group });
    } catch (error) {
      const detail =
        error instanceof ConfigError
          ? error.problems.map((p) => `${p.keyPath ? `${p.keyPath}: ` : ''}${p.message}`).join('; ')
          : errorMessage(error);
      problems.push(`trial ${plan.index} (${describeAssignments(plan.assignments)}): ${detail}`);
    }
  }
  if (problems.length > 0)
    throw new UserError(
      `sweep: ${problems.length} of ${plans.length} trial(s) are invalid; nothing was run:\n${problems.join('\n')}`,
    );
  const base = withoutSweep(loaded);
  // A random search's id leaves out how many trials it draws: asking more later continues the same sweep (the first draws stay the same).
  const identity = { baseConfig: base.config, grid, maxTrials: input.maxTrials ?? null };
  const id = `${loaded.config.name}-${sha256Hex(canonicalJson(search.method === 'random' ? { ...identity, search: { method: 'random', seed: search.seed } } : identity)).slice(0, 10)}`;
  return {
    id,
    file: input.file,
    overrides: input.overrides,
    grid,
    maxTrials: input.maxTrials,
    search,
    constraints,
    metric: loaded.config.sweep?.metric ?? 'val_accuracy',
    goal: loaded.config.sweep?.goal ?? 'max',
    exportPolicy: loaded.config.sweep?.export ?? 'all',
    base,
    jobs,
  };
}

/** How a sweep appears in MLflow: its experiment, its name, the swept keys and its metric. */
export function parentRunOf(planned: SweepPlanned): {
  experimentName: string;
  sweepName: string;
  grid: Grid;
  metric: string;
} {
  const config = planned.base.config;
  return {
    experimentName: config.tracking.mlflow?.experiment ?? config.name,
    sweepName: config.name,
    grid: planned.grid,
    metric: planned.metric,
  };
}

/** The plan as the sweep folder stores it (plan.json): what a resume or a worker rebuilds from. */
export function planRecordOf(planned: SweepPlanned, experimentFile: string): SweepPlan {
  return {
    sweep_id: planned.id,
    experiment_file: experimentFile,
    overrides: planned.overrides,
    grid: planned.grid,
    max_trials: planned.maxTrials ?? null,
    search: planned.search,
    metric: planned.metric,
    goal: planned.goal,
    export: planned.exportPolicy,
    trials: planned.jobs.map((j) => ({
      trial: j.plan.index,
      assignments: j.plan.assignments,
      config_sha256: j.configSha256,
      group: j.group,
    })),
  };
}
