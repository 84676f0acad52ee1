/**
 * Self-distillation data (Cai et al. 2024, §2.3.2): train the Medusa heads on what the model itself
 * says rather than on the corpus, so the heads learn to predict the base model's own continuations —
 * the tokens tree decoding must match. Prompts are windows of the corpus; the model continues each one
 * (greedy, or sampled with temperature / top-k / top-p); the stream is prompt + continuation, sample
 * after sample, ready for the usual k-ahead batching.
 *
 * Generation runs B continuations together: one batched forward per token over a shared KV cache.
 * All rows have the same length, so they slide the context window together, exactly as plain
 * decoding does (decode/context.ts).
 */
import * as tf from '@tensorflow/tfjs';
import { planFeed } from '../decode/context';
import { chooseToken, SamplingConfig, validateSampling } from '../decode/sampling';
import type { Transformer } from '../model/transformer';
import { Rng } from '../util/rng';

export interface SelfDistillOptions extends Partial<SamplingConfig> {
  /** Continuations to generate. */
  samples: number;
  /** Corpus tokens that prompt each continuation. */
  promptLen: number;
  /** Tokens the model writes after each prompt. */
  newTokens: number;
  /** Continuations generated together in one batched forward (default 16). */
  batchSize?: number;
  /** Seed of the prompt positions and of sampling. */
  seed?: number;
  /** Called after each batch with the continuations done so far. */
  onProgress?: (done: number, total: number) => void;
}

/**
 * Continues every prompt (all of one length ≥ 1) by `newTokens` tokens with one batched forward per
 * token. Returns the continuations [B][newTokens]; row b equals `generate(model, prompts[b])` when greedy.
 */
export async function generateBatch(model: Transformer, prompts: number[][], newTokens: number, sampling: SamplingConfig, rng: Rng): Promise<number[][]> {
  validateSampling(sampling);
  const B = prompts.length;
  const len = prompts[0]?.length ?? 0;
  if (B === 0 || len === 0 || prompts.some((p) => p.length !== len)) throw new Error('generateBatch: give at least one prompt, all of one length ≥ 1');
  const { blockSize, vocabSize: V } = model.config;
  const seqs = prompts.map((p) => [...p]);
  const cache = model.newCache();
  let start = -1;
  try {
    for (let step = 0; step < newTokens; step++) {
      const plan = planFeed(start, cache.length, seqs[0].length, 0, blockSize);
      if (plan.reset) {
        cache.dispose();
        start = plan.start;
      }
      const feed = seqs.map((s) => s.slice(plan.from));
      const T = feed[0].length;
      const last = tf.tidy(() => tf.slice(model.forward(tf.tensor2d(feed, [B, T], 'int32'), { cache }), [0, T - 1, 0], [B, 1, V])); // [B, 1, V]
      const data = (await last.data()) as Float32Array;
      last.dispose();
      seqs.forEach((s, b) => s.push(chooseToken(data.subarray(b * V, (b + 1) * V), sampling, rng)));
    }
  } finally {
    cache.dispose();
  }
  return seqs.map((s) => s.slice(len));
}

/** A token stream of `samples` × (promptLen + newTokens) tokens: corpus prompts and the model's continuations. */
export async function selfDistillTokens(model: Transformer, corpus: ArrayLike<number>, opts: SelfDistillOptions): Promise<Int32Array> {
  const { samples, promptLen, newTokens } = opts;
  const B = opts.batchSize ?? 16;
  for (const [name, v, min] of [['samples', samples, 1], ['promptLen', promptLen, 1], ['newTokens', newTokens, 0], ['batchSize', B, 1]] as const) {
    if (!Number.isInteger(v) || v < min) throw new Error(`selfDistillTokens: ${name} must be an integer ≥ ${min}, got ${v}`);
  }
  if (corpus.length < promptLen) throw new Error(`selfDistillTokens: the corpus holds ${corpus.length} tokens, fewer than promptLen = ${promptLen}`);
  const sampling: SamplingConfig = { temperature: opts.temperature ?? 0, topK: opts.topK ?? 0, topP: opts.topP ?? 1 };
  const rng = new Rng(opts.seed ?? 0);
  const width = promptLen + newTokens;
  const out = new Int32Array(samples * width);
  for (let first = 0; first < samples; first += B) {
    const prompts = Array.from({ length: Math.min(B, samples - first) }, () => {
      const s = rng.int(corpus.length - promptLen + 1);
      return Array.from({ length: promptLen }, (_, i) => corpus[s + i]);
    });
    const continuations = await generateBatch(model, prompts, newTokens, sampling, rng);
    prompts.forEach((p, b) => {
      out.set(p, (first + b) * width);
      out.set(continuations[b], (first + b) * width + promptLen);
    });
    opts.onProgress?.(first + prompts.length, samples);
  }
  return out;
}
