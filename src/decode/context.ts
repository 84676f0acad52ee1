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
