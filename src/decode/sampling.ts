/**
 * Choosing the next token from logits on the host: greedy, or sampling with temperature, top-k and
 * top-p (nucleus). Pure functions of plain arrays and a seeded Rng, so a run repeats exactly.
 */
import { Rng } from '../util/rng';

export interface SamplingConfig {
  /** 0 = greedy (argmax); > 0 divides the logits before the softmax. */
  temperature: number;
  /** Keep only the k most likely tokens (0 = off). */
  topK: number;
  /** Keep the smallest set of tokens whose probability reaches p (1 = off). */
  topP: number;
}

export const GREEDY: SamplingConfig = { temperature: 0, topK: 0, topP: 1 };

/** Throws a clear error for out-of-range sampling settings. */
export function validateSampling(s: SamplingConfig): void {
  if (!(s.temperature >= 0) || !Number.isFinite(s.temperature)) throw new Error(`temperature must be ≥ 0, got ${s.temperature}`);
  if (!Number.isInteger(s.topK) || s.topK < 0) throw new Error(`topK must be an integer ≥ 0 (0 = off), got ${s.topK}`);
  if (!(s.topP > 0 && s.topP <= 1)) throw new Error(`topP must be in (0, 1], got ${s.topP}`);
}

/** Index of the largest value (first one on ties, as tf.argMax). */
export function argmax(x: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i;
  return best;
}

/**
 * The distribution sampling draws from: softmax(logits / temperature), restricted to top-k and
 * top-p and renormalised. Requires temperature > 0.
 */
export function samplingProbs(logits: ArrayLike<number>, s: SamplingConfig): Float64Array {
  const V = logits.length;
  let max = -Infinity;
  for (let i = 0; i < V; i++) max = Math.max(max, logits[i]);
  const p = new Float64Array(V);
  let sum = 0;
  for (let i = 0; i < V; i++) sum += p[i] = Math.exp((logits[i] - max) / s.temperature);
  for (let i = 0; i < V; i++) p[i] /= sum;
  if ((s.topK > 0 && s.topK < V) || s.topP < 1) {
    const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => p[b] - p[a] || a - b);
    const keep = new Uint8Array(V);
    let mass = 0;
    for (let r = 0; r < V; r++) {
      if (s.topK > 0 && r >= s.topK) break;
      keep[order[r]] = 1;
      mass += p[order[r]];
      if (mass >= s.topP) break;
    }
    let kept = 0;
    for (let i = 0; i < V; i++) kept += keep[i] ? p[i] : (p[i] = 0);
    for (let i = 0; i < V; i++) p[i] /= kept;
  }
  return p;
}

/** Draws an index from a probability vector. */
export function sampleIndex(p: ArrayLike<number>, rng: Rng): number {
  const u = rng.next();
  let acc = 0;
  for (let i = 0; i < p.length; i++) {
    acc += p[i];
    if (u < acc) return i;
  }
  for (let i = p.length - 1; i >= 0; i--) if (p[i] > 0) return i;
  return p.length - 1;
}

/** Next token from one row of logits [V]: argmax at temperature 0, else a sample. */
export function chooseToken(logits: ArrayLike<number>, s: SamplingConfig, rng: Rng): number {
  return s.temperature === 0 ? argmax(logits) : sampleIndex(samplingProbs(logits, s), rng);
}

/** The distribution a decoder samples from: samplingProbs at temperature > 0, one-hot argmax at 0. */
export function tokenDistribution(logits: ArrayLike<number>, s: SamplingConfig): Float64Array {
  if (s.temperature > 0) return samplingProbs(logits, s);
  const p = new Float64Array(logits.length);
  p[argmax(logits)] = 1;
  return p;
}
