/**
 * The decoding state shared by the decoders that read every head in one forward (blockwise,
 * speculative sampling, unverified emission with parallel heads or a Medusa chain): the committed
 * sequence, the caches and the window they hold (decode/context.ts), and the forward count.
 */
import * as tf from '@tensorflow/tfjs';
import type { CacheSet } from '../model/cache_set';
import type { MtpModel } from '../model/create';
import { planFeed } from './context';

/** Throws a clear error for a bad head count, an empty prompt or a bad token count. */
export function checkDecodeArgs(name: string, model: MtpModel, prompt: number[], maxNewTokens: number, k: number): void {
  if (!Number.isInteger(k) || k < 1 || k > model.k) throw new Error(`${name}: k must be an integer in [1, ${model.k}] (the model's heads), got ${k}`);
  if (prompt.length === 0) throw new Error(`${name}: the prompt must hold at least one token`);
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) throw new Error(`${name}: maxNewTokens must be an integer ≥ 0, got ${maxNewTokens}`);
}

export class HeadsSession {
  /** Prompt + committed tokens. */
  readonly seq: number[];
  readonly caches: CacheSet;
  /** Forwards run so far (prefill included). */
  forwards = 0;
  /** First sequence index the caches hold (−1 before the prefill). */
  private cacheStart = -1;

  constructor(
    readonly model: MtpModel,
    prompt: number[],
    /** Heads decoded with (the model computes only these). */
    readonly heads: number,
  ) {
    this.seq = [...prompt];
    this.caches = model.newCaches(heads);
  }

  /**
   * One forward over the committed tokens the caches lack plus `drafts`, in the window that predicting
   * token n + drafts.length needs (the caches restart when it slid). Returns the rows of the last
   * `rows` fed positions, [heads, rows, V], tidied for the caller to read and dispose.
   */
  forward(drafts: number[], rows: number): tf.Tensor3D {
    const plan = planFeed(this.cacheStart, this.caches.length, this.seq.length, drafts.length, this.model.config.blockSize);
    if (plan.reset) {
      this.caches.reset();
      this.cacheStart = plan.start;
    }
    const feed = [...this.seq.slice(plan.from), ...drafts];
    this.forwards += 1;
    return tf.tidy(() => {
      const logits = this.model.decodeLogits(feed, this.caches); // [≥ heads, T, V]
      return tf.slice(logits, [0, feed.length - rows, 0], [this.heads, rows, -1]) as tf.Tensor3D;
    });
  }

  /**
   * Appends accepted tokens and drops the caches' entries beyond them (rejected drafts); tokens not fed
   * yet (the last one, committed without a forward) are fed by the next forward.
   */
  commit(tokens: number[]): void {
    this.seq.push(...tokens);
    const held = this.seq.length - this.cacheStart;
    if (this.caches.length > held) this.caches.truncate(held);
  }

  dispose(): void {
    this.caches.dispose();
  }
}
