import jstat from 'jstat';

const { jStat } = jstat;

/**
 * The few statistics a result needs to say how much it can tell: an interval for an
 * accuracy measured on n images, and an exact paired test for two models on the same images.
 */

export interface Interval {
  low: number;
  high: number;
}

/** The two-sided normal quantile for a confidence level (1.96 for 0.95). */
function zFor(confidence: number): number {
  return jStat.normal.inv(1 - (1 - confidence) / 2, 0, 1);
}

/**
 * Wilson score interval of a proportion (correct of total): unlike the normal
 * approximation it stays inside [0, 1] and is honest at 0 or n correct and at small n.
 */
export function wilsonInterval(correct: number, total: number, confidence = 0.95): Interval {
  if (total <= 0) return { low: 0, high: 1 };
  const z = zFor(confidence);
  const p = correct / total;
  const z2n = (z * z) / total;
  const centre = (p + z2n / 2) / (1 + z2n);
  const half = (z / (1 + z2n)) * Math.sqrt((p * (1 - p)) / total + z2n / (4 * total));
  return { low: Math.max(0, centre - half), high: Math.min(1, centre + half) };
}

/** 95% Wilson interval of an accuracy measured on `images` images, as [low, high] (what summary.json and the card record). */
export function accuracyInterval(accuracy: number, images: number): [number, number] {
  const { low, high } = wilsonInterval(Math.round(accuracy * images), images);
  return [low, high];
}

/**
 * Exact one-sided McNemar test: of the images the two models disagree on correctness,
 * `worse` the second got wrong and the first right, `better` the reverse. Under "neither is
 * worse" each such image goes either way with probability 1/2; the p-value is the chance of
 * at least `worse` of the worse + better going against the second model.
 */
export function mcnemarWorsePValue(worse: number, better: number): number {
  const discordant = worse + better;
  if (discordant === 0 || worse === 0) return 1;
  return 1 - jStat.binomial.cdf(worse - 1, discordant, 0.5);
}

/** The fewest images a model must lose (and win none) for the one-sided test to reach `alpha`. */
export function fewestLossesDetectable(alpha = 0.05): number {
  let worse = 1;
  while (mcnemarWorsePValue(worse, 0) >= alpha) worse++;
  return worse;
}
