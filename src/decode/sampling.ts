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
 * Fills unset sampling options from `defaults` (greedy unless told) and validates the result: the one
 * normaliser every decoder and acceptance rule goes through, so they all read the same options.
 */
export function resolveSampling(partial: Partial<SamplingConfig> = {}, defaults: SamplingConfig = GREEDY): SamplingConfig {
  const s: SamplingConfig = {
    temperature: partial.temperature ?? defaults.temperature,
    topK: partial.topK ?? defaults.topK,
    topP: partial.topP ?? defaults.topP,
  };
  validateSampling(s);
  return s;
}

/**
 * Slack when checking whether a cumulative mass reaches top-p: a mass equal to top-p up to rounding
 * (e.g. logits = log p) counts as reaching it, so hand-worked boundaries do not flip on the last bit.
 */
const TOP_P_SLACK = 1e-12;

/**
 * The distribution sampling draws from, in Hugging Face's order (the logits warpers of
 * `generate`): softmax(logits / temperature) → keep the top-k → renormalise → keep the smallest set
 * of the most likely tokens whose mass (of that renormalised distribution) reaches top-p →
 * renormalise. Tokens are ranked by probability, the lower index first on ties, so top-k and top-p
 * cut ties deterministically. The most likely token always survives. Requires temperature > 0;
 * returns [V] summing to 1.
 */
export function samplingProbs(logits: ArrayLike<number>, s: SamplingConfig): Float64Array {
  const V = logits.length;
  let max = -Infinity;
  for (let i = 0; i < V; i++) max = Math.max(max, logits[i]);
  const p = new Float64Array(V);
  let sum = 0;
  for (let i = 0; i < V; i++) sum += p[i] = Math.exp((logits[i] - max) / s.temperature);
  for (let i = 0; i < V; i++) p[i] /= sum;
  const k = s.topK > 0 ? Math.min(s.topK, V) : V;
  if (k === V && s.topP >= 1) return p;
  const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => p[b] - p[a] || a - b);
  let topKMass = 0; // mass of the top-k, the normaliser of the renormalised top-k distribution
  for (let r = 0; r < k; r++) topKMass += p[order[r]];
  let keep = k; // tokens order[0..keep) survive
  if (s.topP < 1) {
    let mass = 0;
    for (keep = 0; keep < k; ) {
      mass += p[order[keep++]];
      if (mass / topKMass >= s.topP - TOP_P_SLACK) break;
    }
  }
  let kept = 0;
  for (let r = 0; r < keep; r++) kept += p[order[r]];
  for (let r = keep; r < V; r++) p[order[r]] = 0;
  for (let i = 0; i < V; i++) p[i] /= kept;
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
