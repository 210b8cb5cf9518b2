import jstat from 'jstat';

const { jStat } = jstat;

/**
 * Comparing two tools' accuracy over seeds: each side's mean and standard deviation, and a
 * 95% Welch interval of the difference of means (the seeds of the two sides share nothing,
 * so they are independent samples, not pairs). A difference "within the goal" needs the
 * whole interval inside [-goal, +goal]; with few seeds and noisy training the interval is
 * wider than that, and the honest verdict is "cannot tell".
 */

export interface Spread {
  values: number[];
  mean: number;
  /** Sample standard deviation (n - 1). */
  sd: number;
}

export function spreadOf(values: number[]): Spread {
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  const sd =
    values.length > 1
      ? Math.sqrt(values.reduce((sum, v) => sum + (v - mean) ** 2, 0) / (values.length - 1))
      : Number.NaN;
  return { values, mean, sd };
}

export interface Difference {
  /** mean(a) - mean(b). */
  difference: number;
  low: number;
  high: number;
  /** Welch-Satterthwaite degrees of freedom. */
  degreesOfFreedom: number;
}

/** 95% (or `confidence`) Welch interval of mean(a) - mean(b). */
export function welchInterval(a: Spread, b: Spread, confidence = 0.95): Difference {
  const va = a.sd ** 2 / a.values.length;
  const vb = b.sd ** 2 / b.values.length;
  const se = Math.sqrt(va + vb);
  const difference = a.mean - b.mean;
  if (se === 0) return { difference, low: difference, high: difference, degreesOfFreedom: Number.POSITIVE_INFINITY };
  const degreesOfFreedom = (va + vb) ** 2 / (va ** 2 / (a.values.length - 1) + vb ** 2 / (b.values.length - 1));
  const half = jStat.studentt.inv(1 - (1 - confidence) / 2, degreesOfFreedom) * se;
  return { difference, low: difference - half, high: difference + half, degreesOfFreedom };
}

/** Whether the difference is within ±goal, beyond it, or the interval cannot tell. */
export function verdict(interval: Difference, goal: number): 'within the goal' | 'beyond the goal' | 'cannot tell' {
  if (interval.low >= -goal && interval.high <= goal) return 'within the goal';
  if (interval.low > goal || interval.high < -goal) return 'beyond the goal';
  return 'cannot tell';
}
