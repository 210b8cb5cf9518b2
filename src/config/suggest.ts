import { closest, distance } from 'fastest-levenshtein';

/** The candidate a typo most likely meant, or undefined when none is close enough. */
export function didYouMean(typed: string, candidates: readonly string[]): string | undefined {
  if (candidates.length === 0) return undefined;
  const best = closest(typed, [...candidates]);
  const allowed = Math.max(2, Math.floor(best.length / 3));
  return distance(typed, best) <= allowed ? best : undefined;
}
