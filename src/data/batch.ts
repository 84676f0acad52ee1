/**
 * k-ahead batching (docs/algorithms.md, k-ahead targets): head i (1-based) at position t predicts x[t+i]. A window
 * of T+k tokens starting at s gives inputs x[s .. s+T) and, for head i, targets x[s+i .. s+T+i). With k = 1 this is
 * plain next-token training.
 *
 * Browser-safe: plain typed arrays in, plain typed arrays out; the model code turns them into tensors.
 */
import { Rng } from '../util/rng';

/** One training or evaluation batch, row-major. */
export interface Batch {
  /** [B, T]: inputs[b*T + t] = x[s_b + t]. */
  inputs: Int32Array;
  /** [k, B, T]: head i (0-based) at offset i*B*T; the target for (b, t) is x[s_b + t + i + 1]. */
  targets: Int32Array;
  B: number;
  T: number;
  k: number;
}

/** Typed arrays a token stream may be stored in. */
export type TokenArray = Int32Array | Uint8Array | Uint16Array | Uint32Array | Int16Array;

function checkPositiveInt(value: number, name: string, what: string): void {
  if (!Number.isInteger(value) || value < 1) {
    throw new Error(`${name} (${what}) must be an integer >= 1, got ${value}`);
  }
}

/** Validate B, T, k and the stream length; returns the largest valid window start, len - T - k. */
function checkShape(len: number, B: number, T: number, k: number): number {
  checkPositiveInt(B, 'B', 'batch size');
  checkPositiveInt(T, 'T', 'sequence length');
  checkPositiveInt(k, 'k', 'number of predicted tokens');
  if (len < T + k) {
    throw new Error(
      `token stream too short: a window needs T + k = ${T} + ${k} = ${T + k} tokens, the stream has ${len}; ` +
        `use a longer stream (a larger corpus prefix or split) or a smaller T`,
    );
  }
  return len - T - k;
}

/**
 * Build a batch from explicit window starts (one row per start). Each start must lie in [0, len - T - k].
 * The shared core of `sampleBatch`, `evalBatches` and the synthetic tasks.
 */
export function batchFromWindows(tokens: ArrayLike<number>, starts: ArrayLike<number>, T: number, k: number): Batch {
  const B = starts.length;
  const maxStart = checkShape(tokens.length, B, T, k);
  const inputs = new Int32Array(B * T); // [B, T]
  const targets = new Int32Array(k * B * T); // [k, B, T]
  for (let b = 0; b < B; b++) {
    const s = starts[b];
    if (!Number.isInteger(s) || s < 0 || s > maxStart) {
      throw new Error(
        `window start ${s} of row ${b} is outside [0, ${maxStart}] (stream length ${tokens.length}, T ${T}, k ${k})`,
      );
    }
    for (let t = 0; t < T; t++) inputs[b * T + t] = tokens[s + t];
    for (let i = 0; i < k; i++) {
      const off = i * B * T + b * T;
      for (let t = 0; t < T; t++) targets[off + t] = tokens[s + t + i + 1];
    }
  }
  return { inputs, targets, B, T, k };
}

/** B windows with uniformly random starts in [0, len - T - k], drawn in row order from `rng`. */
export function sampleBatch(tokens: ArrayLike<number>, B: number, T: number, k: number, rng: Rng): Batch {
  const maxStart = checkShape(tokens.length, B, T, k);
  const starts = new Int32Array(B); // [B]
  for (let b = 0; b < B; b++) starts[b] = rng.int(maxStart + 1);
  return batchFromWindows(tokens, starts, T, k);
}

/**
 * n batches of B windows each, with no randomness, so validation losses compare across runs and variants: the n·B
 * window starts are evenly spaced from 0 to len - T - k (first window at the start of the stream, last one at its end),
 * rounded to whole tokens. Windows overlap when the stream holds fewer than n·B of them.
 */
export function evalBatches(tokens: ArrayLike<number>, B: number, T: number, k: number, n: number): Batch[] {
  const maxStart = checkShape(tokens.length, B, T, k);
  checkPositiveInt(n, 'n', 'number of batches');
  const windows = n * B;
  const batches: Batch[] = [];
  for (let m = 0; m < n; m++) {
    const starts = new Int32Array(B); // [B]
    for (let b = 0; b < B; b++) {
      const j = m * B + b;
      starts[b] = windows === 1 ? 0 : Math.round((j * maxStart) / (windows - 1));
    }
    batches.push(batchFromWindows(tokens, starts, T, k));
  }
  return batches;
}

/**
 * Split a token stream into training and validation parts: the last `valFraction` (rounded to whole tokens) is
 * validation, the rest training. Both are views (subarray) of `tokens`, not copies. Throws if either part would be empty.
 */
export function splitTrainVal<A extends TokenArray>(tokens: A, valFraction = 0.1): { train: A; val: A } {
  if (!(valFraction > 0 && valFraction < 1)) {
    throw new Error(`splitTrainVal: valFraction must be in (0, 1), got ${valFraction}`);
  }
  const nVal = Math.round(tokens.length * valFraction);
  const nTrain = tokens.length - nVal;
  if (nVal === 0 || nTrain === 0) {
    throw new Error(
      `splitTrainVal: ${tokens.length} tokens are too few to split with valFraction ${valFraction} ` +
        `(train ${nTrain}, validation ${nVal}); both parts need at least one token`,
    );
  }
  return { train: tokens.subarray(0, nTrain) as A, val: tokens.subarray(nTrain) as A };
}

/** n prompts of `length` tokens from seeded random places in the validation split. */
export function valPrompts(val: ArrayLike<number>, n: number, length: number, seed = 2024): number[][] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => {
    const s = rng.int(val.length - length);
    return Array.from({ length }, (_, i) => val[s + i]);
  });
}
