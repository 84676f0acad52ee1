/**
 * Self-speculative greedy decoding with DeepSeek-V3's sequential MTP modules (DeepSeek-V3 Technical
 * Report §2.2, whose modules are kept for speculative decoding; verification as in Stern et al. 2018):
 * lossless, the output equals plain greedy decoding of the trunk token for token.
 *
 * State between steps: n committed tokens, g = the trunk's greedy token after them (certain), the
 * trunk cache over the window [start, n), the module caches over [start, E) with E ≤ n, every entry
 * computed from true tokens only, and the trunk's states h⁰ over [E, n) that the modules still lack.
 *
 * One step, with D the modules used:
 * 1. draft: module m = 1..D runs once over positions [E, n); at position i it takes h^{m−1}ᵢ (from
 *    the trunk for m = 1, else from module m−1 in this step) and the token at i+m — committed, g, or
 *    the draft d_m of module m−1 — and its last position gives d_{m+1}. Drafts stay on the device.
 * 2. verify: one trunk forward over g, d₂..d_kk (kk ≤ D+1) gives the greedy token after each prefix;
 *    one host read brings those and the drafts back.
 * 3. accept g, then d_j while it equals the greedy token after g, d₂..d_{j−1}; truncate the trunk
 *    cache to the committed length; the greedy token after the last accepted one is the next g.
 * 4. lag: module m's entry at position i used the tokens up to i+m. The drafted continuation agrees
 *    with the truth up to an index A (the accepted tokens, and the next one if it equals the new g),
 *    so entries with i + D ≥ A were computed from a wrong or unverified token: the module caches are
 *    truncated to E = min(n_old, A − D), in lockstep, and those positions are recomputed from the
 *    kept h⁰ and the true tokens by the next draft (entries built from drafts that were accepted stay).
 * Past blockSize the window slides exactly as in plain decoding (decode/context.ts); a slide restarts
 * the module caches with the trunk's.
 *
 * Counting (DESIGN §4.8): `forwards` = trunk forwards (the prefill, which yields the first token, and
 * one verification per step), τ = new tokens ÷ forwards counting the bonus token; module forwards are
 * draft work, reported as `draftSteps` (D per step that drafts).
 */
import * as tf from '@tensorflow/tfjs';
import type { CacheSet } from '../model/cache_set';
import type { SequentialModel } from '../model/sequential';
import type { BlockwiseOptions, BlockwiseResult } from './blockwise';
import { planFeed, roomInWindow } from './context';
import { finishStats, SpeculativeStats, speculativeStats } from './stats';

export interface SequentialStats extends SpeculativeStats {
  /** Module forwards run for drafting (not counted in `forwards`). */
  draftSteps: number;
}

export interface SequentialResult extends BlockwiseResult {
  stats: SequentialStats;
}

/** One decoding session: committed tokens, caches and the modules' lag (see the file comment). */
export class SequentialSession {
  readonly seq: number[];
  readonly caches: CacheSet;
  /** g: the trunk's greedy token after `seq`, certain (the next step commits it). */
  next = -1;
  /** Window start of every cache (decode/context.ts). */
  start = -1;
  /** E: the module caches hold positions [start, E). */
  moduleEnd = 0;
  forwards = 0;
  draftSteps = 0;
  /** Per draft position j = 1..D: drafts offered with every earlier one accepted, and accepted. */
  readonly attempts: number[];
  readonly accepts: number[];
  /** h⁰ [1, n − E, C] of the positions the modules have not taken in. */
  private pending: tf.Tensor3D | null = null;

  /** `depth` = modules used for drafting (0 = plain greedy through the verification path). */
  constructor(
    readonly model: SequentialModel,
    prompt: number[],
    readonly depth: number,
  ) {
    if (!Number.isInteger(depth) || depth < 0 || depth > model.depth) throw new Error(`sequential: depth must be an integer in [0, ${model.depth}], got ${depth}`);
    if (prompt.length === 0) throw new Error('sequential: the prompt must hold at least one token');
    this.seq = [...prompt];
    this.caches = model.newCaches();
    this.attempts = new Array(depth).fill(0);
    this.accepts = new Array(depth).fill(0);
  }

  /** Trunk forward over the prompt's window: sets g. */
  async prefill(): Promise<void> {
    const n = this.seq.length;
    const plan = planFeed(this.start, this.caches.trunk.length, n, 0, this.model.config.blockSize);
    this.restart(plan.start);
    const { hidden, greedy } = await this.verify(this.seq.slice(plan.from), null, 0);
    this.next = greedy[greedy.length - 1];
    this.pending = hidden;
  }

  /** One draft → verify → accept step committing 1..min(D+1, maxTokens) tokens; returns how many. */
  async step(maxTokens: number): Promise<number> {
    const { blockSize } = this.model.config;
    const n = this.seq.length;
    const kk = Math.min(this.depth + 1, maxTokens, roomInWindow(n + 1, blockSize));
    const drafted = kk > 1 ? this.draft() : null; // [D] d₂..d_{D+1} on the device
    const modulesEnd = drafted ? n : this.moduleEnd;
    const plan = planFeed(this.start, this.caches.trunk.length, n, kk, blockSize);
    if (plan.reset) this.restart(plan.start);
    const fed = [...this.seq.slice(plan.from), this.next];
    const { hidden, greedy: all, drafts } = await this.verify(fed, drafted, kk - 1);
    const block = [this.next, ...drafts.subarray(0, kk - 1)];
    const greedy = all.subarray(all.length - kk); // greedy token after g, d₂..d_j, j = 1..kk
    let a = 1;
    while (a < kk) {
      this.attempts[a - 1] += 1;
      if (block[a] !== greedy[a - 1]) break;
      this.accepts[a - 1] += 1;
      a += 1;
    }
    this.seq.push(...block.slice(0, a));
    this.next = greedy[a - 1];
    this.caches.trunk.truncate(this.seq.length - this.start);
    const committed = tf.slice(hidden, [0, 0, 0], [1, this.seq.length - plan.from, -1]) as tf.Tensor3D; // h⁰ [1, new committed, C]
    hidden.dispose();
    if (plan.reset) {
      this.pending = committed;
    } else {
      const agree = n + a + (a <= this.depth && drafts[a - 1] === this.next ? 1 : 0);
      const end = Math.min(modulesEnd, Math.max(this.moduleEnd, agree - this.depth));
      for (const c of this.caches.extra) if (c.length > end - this.start) c.truncate(end - this.start);
      const prev = this.pending!;
      this.pending = tf.tidy(() => tf.concat([tf.slice(prev, [0, end - this.moduleEnd, 0], [-1, -1, -1]), committed], 1)); // [1, n_new − E, C]
      tf.dispose([prev, committed]);
      this.moduleEnd = end;
    }
    return a;
  }

  /** Releases the caches and the kept states. */
  dispose(): void {
    this.caches.dispose();
    this.pending?.dispose();
    this.pending = null;
  }

  /** Empties every cache for a window starting at `start`. */
  private restart(start: number): void {
    this.caches.reset();
    this.pending?.dispose();
    this.pending = null;
    this.start = start;
    this.moduleEnd = start;
  }

  /** Runs the D modules over [E, n) (appending to their caches); returns d₂..d_{D+1} [D] int32. */
  private draft(): tf.Tensor1D {
    const n = this.seq.length;
    const E = this.moduleEnd;
    const out = tf.tidy(() => {
      let h = this.pending!; // h⁰ [1, n − E, C]
      const drafts: tf.Tensor1D[] = []; // drafts[t] = d_{t+2}, [1] each
      for (let m = 1; m <= this.depth; m++) {
        // the token at i+m for i in [E, n): committed (< n), g (= n), then module drafts d_{j−n+1}
        const host: number[] = [];
        for (let j = E + m; j <= Math.min(n, n - 1 + m); j++) host.push(j < n ? this.seq[j] : this.next);
        const fromDrafts = drafts.slice(Math.max(0, E + m - n - 1), m - 1);
        const tokens = tf.concat([...(host.length ? [tf.tensor1d(host, 'int32')] : []), ...fromDrafts]) as tf.Tensor1D; // [n − E]
        const step = this.model.moduleStep(m, h, tokens, this.caches);
        h = step.hidden; // hᵐ [1, n − E, C]
        drafts.push(tf.reshape(tf.argMax(step.last), [1]) as tf.Tensor1D);
      }
      return tf.concat(drafts) as tf.Tensor1D; // [D]
    });
    this.draftSteps += this.depth;
    return out;
  }

  /**
   * Trunk forward over the known tokens `fed` then the first `use` drafts (appending to the trunk
   * cache), with the step's one host read: the greedy token after every fed position and all drafts.
   * Disposes `drafted`; the caller owns `hidden` (h⁰ [1, T, C]).
   */
  private async verify(fed: number[], drafted: tf.Tensor1D | null, use: number): Promise<{ hidden: tf.Tensor3D; greedy: Int32Array; drafts: Int32Array }> {
    const T = fed.length + use;
    const { hidden, packed } = tf.tidy(() => {
      const known = tf.tensor1d(fed, 'int32');
      const tokens = drafted && use > 0 ? (tf.concat([known, tf.slice(drafted, 0, use)]) as tf.Tensor1D) : known; // [T]
      const out = this.model.trunkStep(tokens, this.caches);
      const greedy = tf.argMax(tf.reshape(out.logits, [T, this.model.config.vocabSize]), 1); // [T]
      return { hidden: out.hidden, packed: drafted ? tf.concat([greedy, drafted]) : greedy }; // [T + D]
    });
    drafted?.dispose();
    const read = (await packed.data()) as Int32Array; // the step's one device → host read
    packed.dispose();
    this.forwards += 1;
    return { hidden, greedy: read.subarray(0, T), drafts: read.subarray(T) };
  }
}

/**
 * Greedy self-speculative decoding of `maxNewTokens` tokens after `prompt`; `k` = tokens per step
 * (1 + modules used, default all; k = 1 uses no module: plain greedy with the main model).
 */
export async function sequentialGenerate(model: SequentialModel, prompt: number[], opts: BlockwiseOptions): Promise<SequentialResult> {
  const k = opts.k ?? model.k;
  if (!Number.isInteger(k) || k < 1 || k > model.k) throw new Error(`sequential: k must be an integer in [1, ${model.k}] (1 + the model's modules), got ${k}`);
  if (!Number.isInteger(opts.maxNewTokens) || opts.maxNewTokens < 0) {
    throw new Error(`sequential: maxNewTokens must be an integer ≥ 0, got ${opts.maxNewTokens}`);
  }
  const session = new SequentialSession(model, prompt, k - 1);
  const end = prompt.length + opts.maxNewTokens;
  const steps: number[] = [];
  const t0 = performance.now();
  try {
    if (opts.maxNewTokens > 0) {
      await session.prefill();
      while (session.seq.length < end - 1) steps.push(await session.step(end - session.seq.length));
      if (session.seq.length < end) {
        session.seq.push(session.next); // certain: no forward needed for the last token
        steps.push(1);
      }
    }
  } finally {
    session.dispose();
  }
  const newTokens = session.seq.length - prompt.length;
  const base = finishStats(`sequential D=${k - 1}`, newTokens, session.forwards, performance.now() - t0);
  const stats = { ...speculativeStats(base, session.attempts, session.accepts), draftSteps: session.draftSteps };
  return { tokens: session.seq.slice(prompt.length), stats, steps };
}
