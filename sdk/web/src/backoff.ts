/** First retry delay's upper bound, in ms. */
export const BACKOFF_BASE_MS = 1000;
/** Upper bound of a computed retry delay, in ms. */
export const BACKOFF_CAP_MS = 60_000;
/** Longest `Retry-After` obeyed, in ms (a larger one is read as this). */
export const RETRY_AFTER_CAP_MS = 3_600_000;
/** Shortest delay before any retry, in ms, so full jitter never means "at once". */
export const BACKOFF_FLOOR_MS = 100;

/**
 * The delay before retry number `attempt` (0 for the first retry): "full jitter", a uniform
 * random value in [0, min(cap, base·2^attempt)), at least BACKOFF_FLOOR_MS; a server's
 * `Retry-After` (ms) is a lower bound.
 */
export function backoff(
  attempt: number,
  retryAfterMs: number | undefined = undefined,
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempt, 30));
  return Math.max(BACKOFF_FLOOR_MS, Math.floor(random() * ceiling), retryAfterMs ?? 0);
}

/**
 * A `Retry-After` header in ms: delta-seconds or an HTTP-date (relative to `now`), capped at
 * RETRY_AFTER_CAP_MS; undefined when absent or unreadable.
 */
export function parseRetryAfter(value: string | null | undefined, now: number = Date.now()): number | undefined {
  if (!value) return undefined;
  const text = value.trim();
  // delta-seconds, or an HTTP-date (which always names a day or month: letters).
  const ms = /^\d+$/.test(text) ? +text * 1000 : /[a-z]/i.test(text) ? Date.parse(text) - now : NaN;
  return ms >= 0 ? Math.min(ms, RETRY_AFTER_CAP_MS) : ms < 0 ? 0 : undefined;
}
