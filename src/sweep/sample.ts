import { UserError } from '../core/errors.ts';
import { canonicalJson } from '../core/hash.ts';
import { Random } from '../core/random.ts';
import type { GridValue, TrialPlan } from './plan.ts';

/**
 * Random search (pure): `trials` draws from the swept keys, one value per key, the same
 * draws for the same seed. Lists (and {from, to, step} ranges, expanded to lists) are drawn
 * uniformly; continuous ranges {min, max} uniformly or, with `log`, log-uniformly (each
 * decade equally often, as Bergstra and Bengio recommend for learning rates). Draws are
 * sequential, so the first n trials of a larger search are the trials of a smaller one.
 *
 * A sampler is a function from the space, a count and a seed to trials: a smarter one
 * (a quasi-random sequence, or a model-based sampler from a library) replaces this one
 * without touching planning, scheduling or reporting.
 */

export interface ContinuousRange {
  min: number;
  max: number;
  /** Log-uniform (min > 0). */
  log?: boolean;
  /** Rounded to an integer. */
  integer?: boolean;
}

export type SpaceEntry = GridValue[] | ContinuousRange;

export function isContinuous(entry: unknown): entry is ContinuousRange {
  return typeof entry === 'object' && entry !== null && !Array.isArray(entry) && 'min' in entry && 'max' in entry;
}

/** A continuous range that cannot be drawn from, named by its key. */
export function checkContinuousRange(range: ContinuousRange, key: string): void {
  if (!(range.max >= range.min))
    throw new UserError(`sweep.grid.${key}: max (${range.max}) is below min (${range.min})`);
  if (range.log && !(range.min > 0))
    throw new UserError(
      `sweep.grid.${key}: log: true needs min > 0 (got ${range.min}); a log-uniform draw has no zero`,
    );
  if (range.integer && Math.ceil(range.min) > Math.floor(range.max))
    throw new UserError(`sweep.grid.${key}: integer: true, but no integer lies between ${range.min} and ${range.max}`);
}

/**
 * A drawn number keeps 3 significant digits (0.0000317, not 0.00003172948...): the table,
 * the run names and `--set` read it as written, and a finer step than 0.5% of the value does
 * not change a result that seeds already move more.
 */
function drawContinuous(range: ContinuousRange, random: Random): number {
  const value = range.log
    ? Math.exp(random.uniform(Math.log(range.min), Math.log(range.max)))
    : random.uniform(range.min, range.max);
  if (range.integer) {
    const rounded = Math.round(value);
    return Math.min(Math.floor(range.max), Math.max(Math.ceil(range.min), rounded));
  }
  return Math.min(range.max, Math.max(range.min, Number(value.toPrecision(3))));
}

function drawOne(space: Record<string, SpaceEntry>, random: Random): Record<string, GridValue> {
  const assignments: Record<string, GridValue> = {};
  for (const [key, entry] of Object.entries(space))
    assignments[key] = isContinuous(entry)
      ? drawContinuous(entry, random)
      : entry[Math.floor(random.next() * entry.length)];
  return assignments;
}

/** How many distinct trials a space of lists holds (Infinity with a continuous key). */
export function spaceSize(space: Record<string, SpaceEntry>): number {
  return Object.values(space).reduce(
    (size, entry) =>
      size *
      (isContinuous(entry)
        ? entry.integer
          ? Math.floor(entry.max) - Math.ceil(entry.min) + 1
          : Infinity
        : entry.length),
    1,
  );
}

/**
 * `count` distinct trials drawn with `seed`. A space of lists smaller than `count` gives every
 * combination once (as scikit-learn's ParameterSampler does), never a trial twice.
 */
export function sampleTrials(space: Record<string, SpaceEntry>, count: number, seed: number): TrialPlan[] {
  const wanted = Math.min(count, spaceSize(space));
  const random = new Random(seed, 'sweep', 'random-search');
  const seen = new Set<string>();
  const trials: TrialPlan[] = [];
  // A space barely larger than `count` needs many draws for its last new trials; the bound stops a loop that cannot end.
  for (let attempt = 0; trials.length < wanted && attempt < 1000 + wanted * 100; attempt++) {
    const assignments = drawOne(space, random);
    const key = canonicalJson(assignments);
    if (seen.has(key)) continue;
    seen.add(key);
    trials.push({ index: trials.length, assignments });
  }
  if (trials.length < wanted)
    throw new UserError(
      `sweep: drew only ${trials.length} distinct trials of the ${wanted} asked (sweep.trials); widen the ranges or ask fewer`,
    );
  return trials;
}
