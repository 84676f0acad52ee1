/** Small helpers shared by the tests. */
import { Rng } from '../src/util/rng';

/** Largest absolute elementwise difference of two equally long arrays. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch: ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return Number.isNaN(m) ? Infinity : m;
}

/** n random token ids in [0, V) from a seed. */
export function randomTokens(n: number, V: number, seed: number): number[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => rng.int(V));
}

/**
 * Pearson chi-square of observed counts against expected probabilities, pooling cells whose expected
 * count is below 5; returns the statistic and the 0.999 critical value (Wilson–Hilferty).
 */
export function chiSquare(counts: number[], probs: number[], n: number): { stat: number; critical: number } {
  const bins: [number, number][] = [];
  let pooled: [number, number] = [0, 0];
  counts.forEach((c, i) => {
    const e = probs[i] * n;
    if (e < 5) pooled = [pooled[0] + c, pooled[1] + e];
    else bins.push([c, e]);
  });
  if (pooled[1] > 0) bins.push(pooled);
  const stat = bins.reduce((acc, [o, e]) => acc + (o - e) ** 2 / Math.max(e, 1e-9), 0);
  const df = bins.length - 1;
  const z = 3.0902; // standard normal 0.999 quantile
  const critical = df * (1 - 2 / (9 * df) + z * Math.sqrt(2 / (9 * df))) ** 3;
  return { stat, critical };
}
