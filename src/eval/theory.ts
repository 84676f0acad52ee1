/**
 * Speculative-decoding theory (docs/algorithms.md, metrics), computed with mathjs so lessons can show the formulas:
 * - E[τ] = 1 + Σⱼ Πᵢ≤ⱼ αᵢ from the measured conditional acceptances αᵢ;
 * - with one constant α and γ drafts, E[τ] = (1 − α^{γ+1}) / (1 − α) (Leviathan et al. 2023, eq. 1);
 * - expected walltime improvement (1 − α^{γ+1}) / ((1 − α)(γc + 1)), c = cost of one draft ÷ cost of
 *   one target forward (Leviathan et al. 2023, theorem 3.8).
 */
import { isNaN as mIsNaN, pow, prod, subtract, sum } from 'mathjs';

/** E[τ] from per-position conditional acceptances α₁..α_γ (NaN — never attempted — counts as 0). */
export function expectedTau(alpha: readonly number[]): number {
  const a = alpha.map((x) => (mIsNaN(x) ? 0 : x));
  const prefixes = a.map((_, j) => prod(a.slice(0, j + 1) as number[]) as number);
  return 1 + (sum(prefixes) as number);
}

/** E[τ] for a constant acceptance α and γ drafts: (1 − α^{γ+1}) / (1 − α); γ + 1 when α = 1. */
export function expectedTauConstant(alpha: number, gamma: number): number {
  if (alpha >= 1) return gamma + 1;
  return (subtract(1, pow(alpha, gamma + 1)) as number) / (1 - alpha);
}

/** Leviathan's expected walltime improvement factor for acceptance α, γ drafts and cost ratio c. */
export function walltimeGain(alpha: number, gamma: number, c: number): number {
  return expectedTauConstant(alpha, gamma) / (gamma * c + 1);
}

/** The constant α whose E[τ] over γ drafts equals the measured per-position αᵢ's (bisection). */
export function equivalentAlpha(alpha: readonly number[]): number {
  const target = expectedTau(alpha);
  let lo = 0;
  let hi = 1;
  for (let i = 0; i < 60; i++) {
    const mid = (lo + hi) / 2;
    if (expectedTauConstant(mid, alpha.length) < target) lo = mid;
    else hi = mid;
  }
  return (lo + hi) / 2;
}
