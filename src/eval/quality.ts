/**
 * Quality of generated text (docs/algorithms.md, metrics): agreement with the greedy reference, and the negative
 * log-likelihood of the text under a reference next-token model (bits per token; per byte with the
 * byte tokenizer) — how plausible the reference model finds what a lossy decoder wrote.
 */
import type { Transformer } from '../model/transformer';
import { ContextFeeder } from '../decode/ar';

export interface Agreement {
  /** Fraction of positions where the tokens are equal. */
  exactMatch: number;
  /** Index of the first differing token (= length when identical). */
  firstDivergence: number;
}

/** Position-wise agreement of `tokens` with `reference` (over the shorter length). */
export function agreement(tokens: ArrayLike<number>, reference: ArrayLike<number>): Agreement {
  const n = Math.min(tokens.length, reference.length);
  let same = 0;
  let first = n;
  for (let i = 0; i < n; i++) {
    if (tokens[i] === reference[i]) same += 1;
    else if (first === n) first = i;
  }
  return { exactMatch: n ? same / n : 1, firstDivergence: first };
}

/**
 * Mean NLL in bits per token of `tokens` following `prompt` under `model`, scored with the same
 * sliding context window as decoding (one forward per token; the reference model's cache is reused).
 */
export async function nllBits(model: Transformer, prompt: number[], tokens: number[]): Promise<number> {
  if (tokens.length === 0) return 0;
  const feeder = new ContextFeeder(model);
  const seq = [...prompt];
  let nats = 0;
  try {
    for (const t of tokens) {
      const logits = await feeder.next(seq);
      let max = -Infinity;
      for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
      let z = 0;
      for (let i = 0; i < logits.length; i++) z += Math.exp(logits[i] - max);
      nats += max + Math.log(z) - logits[t];
      seq.push(t);
    }
  } finally {
    feeder.dispose();
  }
  return nats / tokens.length / Math.LN2;
}

/** Empirical distribution of tokens: counts per id, length V. */
export function tokenHistogram(samples: ArrayLike<number>, V: number): Float64Array {
  const h = new Float64Array(V);
  for (let i = 0; i < samples.length; i++) h[samples[i]] += 1;
  return h;
}
