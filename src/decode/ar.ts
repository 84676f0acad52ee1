/**
 * The autoregressive baseline — one forward per token over the KV cache, greedy or sampled
 * (temperature, top-k, top-p) — and teacher-forced scoring of a given text with the same window.
 */
import * as tf from '@tensorflow/tfjs';
import type { KVCache } from '../model/kv_cache';
import type { Transformer } from '../model/transformer';
import { greedyAcceptance, speculativeAcceptance } from './acceptance';
import { planFeed } from './context';
import type { VerifyTarget } from './drafter';
import { decode, EngineResult } from './engine';
import { resolveSampling, SamplingConfig } from './sampling';

export interface GenerateOptions extends SamplingOptions {
  /** Tokens to generate. */
  maxNewTokens: number;
  /** Called after every step with the tokens generated so far. */
  onProgress?: (generated: number) => void;
}

/**
 * Teacher-forced scoring (eval/quality.ts): feeds the tokens the window for predicting token
 * `seq.length` still lacks, and returns the next-token logits [V], with the window decoding uses.
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

/** Sampling options of a run, with its seed. */
export interface SamplingOptions extends Partial<SamplingConfig> {
  /** Seed of the run's random stream: the same seed repeats a run exactly. */
  seed?: number;
}

/**
 * Plain autoregressive decoding on the decoding engine (no drafter: every step is the root alone) of
 * any target — a Transformer, or a variant's next-token head: greedy at temperature 0 (default), else
 * sampling with temperature, top-k, top-p. Every speculative decoder's greedy output must equal this.
 */
export async function generate(model: VerifyTarget, prompt: readonly number[], opts: GenerateOptions): Promise<EngineResult> {
  const s = resolveSampling(opts);
  const acceptance = s.temperature === 0 ? greedyAcceptance() : speculativeAcceptance(s);
  return decode(model, null, prompt, { maxNewTokens: opts.maxNewTokens, acceptance, seed: opts.seed, method: s.temperature === 0 ? 'greedy' : 'sample', onProgress: opts.onProgress });
}
