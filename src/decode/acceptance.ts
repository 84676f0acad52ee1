/**
 * The acceptance step of speculative sampling (Leviathan et al. 2023, §2.3; Chen et al. 2023): accept a
 * draft x ~ q with probability min(1, p(x)/q(x)), otherwise resample from norm(max(0, p − q)); the
 * output then follows p exactly. Shared by every drafting variant's sampler.
 */

/**
 * Probability of accepting draft x given target p and proposal q. The default is Leviathan's
 * min(1, p/q); `naiveAcceptance` (always accept) shows what goes wrong without it.
 */
export type AcceptanceRule = (p: ArrayLike<number>, q: ArrayLike<number>, x: number) => number;

export const leviathanAcceptance: AcceptanceRule = (p, q, x) => (q[x] > 0 ? Math.min(1, p[x] / q[x]) : 1);

/** Accepts every draft: the output then follows q, not p (biased; for lessons and tests). */
export const naiveAcceptance: AcceptanceRule = () => 1;

/** norm(max(0, p − q)); p itself when p ≤ q everywhere (possible only through rounding). */
export function residual(p: ArrayLike<number>, q: ArrayLike<number>): Float64Array {
  const r = new Float64Array(p.length);
  let sum = 0;
  for (let i = 0; i < p.length; i++) sum += r[i] = Math.max(0, p[i] - q[i]);
  if (sum <= 0) return Float64Array.from(p);
  for (let i = 0; i < r.length; i++) r[i] /= sum;
  return r;
}
