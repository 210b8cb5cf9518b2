import YAML from 'yaml';
import type { Sweep } from '../config/resolved.ts';
import { UserError } from '../errors.ts';

/** Pure sweep planning: grids from the config and --grid flags, expanded into trials. */

export type GridValue = string | number | boolean | null | unknown[] | Record<string, unknown>;
export type Grid = Record<string, GridValue[]>;

export interface TrialPlan {
  index: number;
  /** Swept key -> value of this trial. */
  assignments: Record<string, GridValue>;
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

export function gridFromConfig(sweep: Sweep | undefined): Grid {
  const grid: Grid = {};
  for (const [key, spec] of Object.entries(sweep?.grid ?? {})) {
    grid[key] = Array.isArray(spec) ? (spec as GridValue[]) : expandRange(spec as { from: number; to: number; step: number }, key);
  }
  return grid;
}

/** `--grid key=v1,v2,...` (each value read as YAML: 40 is a number), or `key=from:to:step`. */
export function parseGridFlag(flag: string): [string, GridValue[]] {
  const equals = flag.indexOf('=');
  if (equals <= 0) throw new UserError(`--grid ${flag}: expected key.path=v1,v2,... (e.g. train.fine_tune.fine_tune_at=40,80,100)`);
  const key = flag.slice(0, equals).trim();
  const spec = flag.slice(equals + 1);
  const range = /^(-?[\d.]+):(-?[\d.]+):([\d.]+)$/.exec(spec);
  if (range) return [key, expandRange({ from: Number(range[1]), to: Number(range[2]), step: Number(range[3]) }, key)];
  const values = spec.split(',').map((v) => v.trim()).filter((v) => v.length > 0).map((v) => YAML.parse(v) as GridValue);
  if (values.length === 0) throw new UserError(`--grid ${flag}: no values`);
  return [key, values];
}

/** The grid product, last key varying fastest; `maxTrials` keeps the first n. */
export function expandGrid(grid: Grid, maxTrials?: number): TrialPlan[] {
  const keys = Object.keys(grid);
  if (keys.length === 0) throw new UserError('sweep: nothing to sweep; add a sweep: grid: block to the experiment or pass --grid key=v1,v2');
  let combos: Record<string, GridValue>[] = [{}];
  for (const key of keys) combos = combos.flatMap((combo) => grid[key].map((value) => ({ ...combo, [key]: value })));
  const trials = combos.map((assignments, index) => ({ index, assignments }));
  return maxTrials === undefined ? trials : trials.slice(0, maxTrials);
}

/** A trial's overrides as --set flags. */
export function assignmentFlags(assignments: Record<string, GridValue>): string[] {
  return Object.entries(assignments).map(([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`);
}

export function describeAssignments(assignments: Record<string, GridValue>): string {
  return Object.entries(assignments)
    .map(([key, value]) => `${key}=${typeof value === 'string' ? value : JSON.stringify(value)}`)
    .join(', ');
}

/**
 * Keys only used after the feature-extraction phase: trials that differ only in these
 * can share one feature-extraction phase.
 */
export const afterFeatureExtractionPrefixes = ['train.fine_tune', 'export', 'tracking', 'name'];

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
