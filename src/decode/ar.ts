/**
 * The autoregressive baseline: one forward per token over the KV cache, greedy or sampled
 * (temperature, top-k, top-p). Every speculative decoder's greedy output must equal this one's.
 */
import * as tf from '@tensorflow/tfjs';
import type { KVCache } from '../model/kv_cache';
import type { Transformer } from '../model/transformer';
import { Rng } from '../util/rng';
import { planFeed } from './context';
import { chooseToken, SamplingConfig, validateSampling } from './sampling';
import { DecodeResult, finishStats } from './stats';

export interface GenerateOptions extends Partial<SamplingConfig> {
  /** Tokens to generate. */
  maxNewTokens: number;
  /** Seed of the sampling stream (ignored when greedy). */
  seed?: number;
}

/**
 * Feeds the tokens the window for predicting token `seq.length` still lacks, and returns the
 * next-token logits [V]. Slides the window (fresh cache, re-encode) when the position table is full.
 */
export class ContextFeeder {
  private cache: KVCache;
  private start = -1;
  forwards = 0;

  constructor(readonly model: Transformer) {
    this.cache = model.newCache();
  }

  /** Next-token logits after `seq` (one host read). */
  async next(seq: number[]): Promise<Float32Array> {
    const plan = planFeed(this.start, this.cache.length, seq.length, 0, this.model.config.blockSize);
    if (plan.reset) {
      this.cache.dispose();
      this.start = plan.start;
    }
    const feed = seq.slice(plan.from);
    const V = this.model.config.vocabSize;
    const row = tf.tidy(() => {
      const logits = this.model.forward(tf.tensor2d([feed], [1, feed.length], 'int32'), { cache: this.cache }); // [1, T, V]
      return tf.slice(logits, [0, feed.length - 1, 0], [1, 1, V]);
    });
    this.forwards += 1;
    const data = (await row.data()) as Float32Array;
    row.dispose();
    return data;
  }

  dispose(): void {
    this.cache.dispose();
  }
}

/** Generates `maxNewTokens` tokens after `prompt` (non-empty). */
export async function generate(model: Transformer, prompt: number[], opts: GenerateOptions): Promise<DecodeResult> {
  const sampling: SamplingConfig = { temperature: opts.temperature ?? 0, topK: opts.topK ?? 0, topP: opts.topP ?? 1 };
  validateSampling(sampling);
  if (prompt.length === 0) throw new Error('generate: the prompt must hold at least one token');
  if (!Number.isInteger(opts.maxNewTokens) || opts.maxNewTokens < 0) {
    throw new Error(`generate: maxNewTokens must be an integer ≥ 0, got ${opts.maxNewTokens}`);
  }
  const rng = new Rng(opts.seed ?? 0);
  const seq = [...prompt];
  const feeder = new ContextFeeder(model);
  const t0 = performance.now();
  try {
    while (seq.length < prompt.length + opts.maxNewTokens) {
      seq.push(chooseToken(await feeder.next(seq), sampling, rng));
    }
  } finally {
    feeder.dispose();
  }
  const method = sampling.temperature === 0 ? 'greedy' : 'sample';
  const ms = performance.now() - t0;
  return { tokens: seq.slice(prompt.length), stats: finishStats(method, seq.length - prompt.length, feeder.forwards, ms) };
}
