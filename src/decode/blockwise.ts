/**
 * Blockwise parallel decoding (Stern et al. 2018; self-speculative decoding in Gloeckle et al. 2024
 * §3.2), greedy and lossless: the output equals plain greedy decoding token for token.
 *
 * Each step:
 * 1. draft: the heads' argmaxes at the last committed position t give d₁..d_k (d₁ = head 1's greedy
 *    next token, certain);
 * 2. verify: one forward over d₁..d_k appended to the caches gives head 1's greedy token after each
 *    prefix d₁..d_j;
 * 3. accept: d₁, then d_j while it equals the greedy token after d₁..d_{j−1};
 * 4. truncate every cache to the accepted length; the heads' outputs at the last accepted position,
 *    computed in the same verify forward, are the next draft.
 * So a step commits 1..k tokens for one forward. Past blockSize the window slides exactly as in plain
 * decoding (decode/context.ts): drafts never span two windows.
 */
import * as tf from '@tensorflow/tfjs';
import type { MtpModel } from '../model/create';
import { planFeed, roomInWindow } from './context';
import { finishStats, SpeculativeStats, speculativeStats } from './stats';

export interface BlockwiseOptions {
  /** Tokens to generate. */
  maxNewTokens: number;
  /** Heads used for drafting (default: all of the model's k). */
  k?: number;
}

export interface BlockwiseResult {
  tokens: number[];
  stats: SpeculativeStats;
  /** Tokens committed by each forward (the prefill's first token included in the first step). */
  steps: number[];
}

/** Greedy blockwise decoding of `maxNewTokens` tokens after `prompt` with the model's heads. */
export async function blockwiseGenerate(model: MtpModel, prompt: number[], opts: BlockwiseOptions): Promise<BlockwiseResult> {
  const k = opts.k ?? model.k;
  if (!Number.isInteger(k) || k < 1 || k > model.k) throw new Error(`blockwise: k must be an integer in [1, ${model.k}] (the model's heads), got ${k}`);
  if (prompt.length === 0) throw new Error('blockwise: the prompt must hold at least one token');
  if (!Number.isInteger(opts.maxNewTokens) || opts.maxNewTokens < 0) {
    throw new Error(`blockwise: maxNewTokens must be an integer ≥ 0, got ${opts.maxNewTokens}`);
  }
  const { blockSize } = model.config;
  const seq = [...prompt];
  const end = prompt.length + opts.maxNewTokens;
  const caches = model.newCaches(k);
  let cacheStart = -1;
  let forwards = 0;
  const attempts = new Array(k - 1).fill(0);
  const accepts = new Array(k - 1).fill(0);
  const steps: number[] = [];
  const t0 = performance.now();

  /** Runs one forward over seq[from..n) + drafts; returns argmax [k][T] of the fed positions. */
  const forward = async (drafts: number[]): Promise<Int32Array[]> => {
    const plan = planFeed(cacheStart, caches.length, seq.length, drafts.length, blockSize);
    if (plan.reset) {
      caches.reset();
      cacheStart = plan.start;
    }
    const feed = [...seq.slice(plan.from), ...drafts];
    const argmax = tf.tidy(() => tf.argMax(model.decodeLogits(feed, caches), 2)); // [kModel, T]
    const flat = (await argmax.data()) as Int32Array; // the step's one device → host read
    argmax.dispose();
    forwards += 1;
    const T = feed.length;
    return Array.from({ length: k }, (_, i) => flat.subarray(i * T, (i + 1) * T));
  };

  try {
    if (opts.maxNewTokens > 0) {
      let heads = await forward([]); // prefill
      let drafts = heads.map((h) => h[h.length - 1]); // d₁..d_k at the last prompt position
      while (seq.length < end) {
        const remaining = end - seq.length;
        if (remaining === 1) {
          seq.push(drafts[0]); // certain: no forward needed for the last token
          steps.push(1);
          break;
        }
        const kk = Math.min(k, remaining, roomInWindow(seq.length + 1, blockSize));
        const block = drafts.slice(0, kk);
        heads = await forward(block);
        const T = heads[0].length;
        const greedy = heads[0].subarray(T - kk); // greedy token after d₁..d_j, j = 1..kk
        let a = 1;
        while (a < kk) {
          attempts[a - 1] += 1;
          if (block[a] !== greedy[a - 1]) break;
          accepts[a - 1] += 1;
          a += 1;
        }
        seq.push(...block.slice(0, a));
        steps.push(a);
        caches.truncate(seq.length - cacheStart);
        drafts = heads.map((h) => h[T - kk + a - 1]);
      }
    }
  } finally {
    caches.dispose();
  }
  const newTokens = seq.length - prompt.length;
  const base = finishStats(`blockwise k=${k}`, newTokens, forwards, performance.now() - t0);
  return { tokens: seq.slice(prompt.length), stats: speculativeStats(base, attempts, accepts), steps };
}
