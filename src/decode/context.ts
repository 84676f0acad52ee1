/**
 * Decoding past the context limit. The position table has blockSize rows, so the model attends
 * to at most blockSize tokens. When a sequence outgrows the window, the oldest tokens are dropped
 * and the kept half is re-encoded from position 0 (a fresh KV cache).
 *
 * The window used to predict token n is a pure function of n, so every decoder — plain AR,
 * blockwise, tree — sees exactly the same context for the same position and stays token-identical.
 */

/** Tokens kept when the window slides (at least 1). */
export function keepOnSlide(blockSize: number): number {
  return Math.max(1, Math.floor(blockSize / 2));
}

/**
 * Start of the context window from which token n (0-based) is predicted: the model sees tokens
 * [windowStart(n), n). Starts at 0 while n ≤ blockSize; whenever n − start would exceed blockSize,
 * start jumps to n − keep.
 */
export function windowStart(n: number, blockSize: number): number {
  if (n <= blockSize) return 0;
  const keep = keepOnSlide(blockSize);
  const period = blockSize + 1 - keep;
  const j = Math.floor((n - blockSize - 1) / period);
  return blockSize + 1 - keep + j * period;
}

/** Tokens that can still be predicted from the current window without sliding: n … n+room−1. */
export function roomInWindow(n: number, blockSize: number): number {
  return windowStart(n, blockSize) + blockSize - n + 1;
}

/** What a decoding forward must feed so its outputs use the right window (see windowStart). */
export interface FeedPlan {
  /** Window start the caches must hold after this forward. */
  start: number;
  /** True when the caches must be emptied first (the window slid). */
  reset: boolean;
  /** Index in the committed sequence from which tokens are fed (before any drafts). */
  from: number;
}

/**
 * Plans a forward that predicts tokens n … n+drafts (n = committed length; drafts = 0 for plain AR,
 * where the forward predicts token n). All predicted positions share one window (callers keep
 * drafts < roomInWindow(n + 1)); if it differs from the caches' current one, the caches restart and the
 * window's committed tokens are fed again.
 */
export function planFeed(cacheStart: number, cacheLength: number, n: number, drafts: number, blockSize: number): FeedPlan {
  const start = windowStart(n + drafts, blockSize);
  const reset = start !== cacheStart;
  return { start, reset, from: reset ? start : cacheStart + cacheLength };
}
