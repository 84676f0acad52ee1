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
import { roomInWindow } from './context';
import { checkDecodeArgs, HeadsSession } from './heads_session';
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
  checkDecodeArgs('blockwise', model, prompt, opts.maxNewTokens, k);
  const session = new HeadsSession(model, prompt, k);
  const seq = session.seq;
  const end = prompt.length + opts.maxNewTokens;
  const attempts = new Array(k - 1).fill(0);
  const accepts = new Array(k - 1).fill(0);
  const steps: number[] = [];
  const t0 = performance.now();

  /** One forward; each head's argmax at the last `rows` fed positions ([k][rows]), in one host read. */
  const argmaxRows = async (drafts: number[], rows: number): Promise<Int32Array[]> => {
    const logits = session.forward(drafts, rows); // [k, rows, V]
    const argmax = tf.argMax(logits, 2); // [k, rows]
    logits.dispose();
    const flat = (await argmax.data()) as Int32Array;
    argmax.dispose();
    return Array.from({ length: k }, (_, i) => flat.subarray(i * rows, (i + 1) * rows));
  };

  try {
    if (opts.maxNewTokens > 0) {
      let drafts = (await argmaxRows([], 1)).map((h) => h[0]); // prefill: d₁..d_k at the last prompt position
      while (seq.length < end) {
        const remaining = end - seq.length;
        if (remaining === 1) {
          session.commit([drafts[0]]); // certain: no forward needed for the last token
          steps.push(1);
          break;
        }
        const kk = Math.min(k, remaining, roomInWindow(seq.length + 1, model.config.blockSize));
        const block = drafts.slice(0, kk);
        const heads = await argmaxRows(block, kk);
        const greedy = heads[0]; // greedy token after d₁..d_j, j = 1..kk
        let a = 1;
        while (a < kk) {
          attempts[a - 1] += 1;
          if (block[a] !== greedy[a - 1]) break;
          accepts[a - 1] += 1;
          a += 1;
        }
        session.commit(block.slice(0, a));
        steps.push(a);
        drafts = heads.map((h) => h[a - 1]);
      }
    }
  } finally {
    session.dispose();
  }
  const base = finishStats(`blockwise k=${k}`, seq.length - prompt.length, session.forwards, performance.now() - t0);
  return { tokens: seq.slice(prompt.length), stats: speculativeStats(base, attempts, accepts), steps };
}
