/** Retry policy shared by every HTTP client of tlx (dataset downloads, MLflow). */

/** Statuses worth another attempt: timeouts, rate limits, server errors. */
export const retryableStatus = new Set([408, 429, 500, 502, 503, 504]);

/** A Retry-After header (seconds or an HTTP date) in milliseconds. */
export function retryAfterMs(header: string | null): number | undefined {
  if (!header) return undefined;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const date = Date.parse(header);
  return Number.isNaN(date) ? undefined : Math.max(0, date - Date.now());
}

/** Exponential backoff with jitter: base x 2^attempt x [0.5, 1.5). */
export function backoffMs(baseMs: number, attempt: number): number {
  return baseMs * 2 ** attempt * (0.5 + Math.random());
}

/** Network errors that another attempt cannot fix: the host name does not resolve. */
export function isPermanentNetworkError(error: unknown): boolean {
  const code =
    (error as { code?: string; cause?: { code?: string } })?.cause?.code ?? (error as { code?: string })?.code;
  return code === 'ENOTFOUND';
}
