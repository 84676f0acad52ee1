/**
 * Self-speculative greedy decoding with DeepSeek-V3's sequential MTP modules (DeepSeek-V3 Technical
 * Report §2.2, whose modules are kept for speculative decoding; verification as in Stern et al. 2018):
 * lossless, the output equals plain greedy decoding of the trunk token for token.
 *
 * State between steps: n committed tokens, g = the token after them that the next step commits first
 * (certain: the trunk's greedy token; under sampling a draw from the trunk's distribution), the
 * trunk cache over the window [start, n), the module caches over [start, E) with E ≤ n, every entry
 * computed from true tokens only, and the trunk's states h⁰ over [E, n) that the modules still lack.
 *
 * One step, with D the modules used:
 * 1. draft: module m = 1..D runs once over positions [E, n); at position i it takes h^{m−1}ᵢ (from
 *    the trunk for m = 1, else from module m−1 in this step) and the token at i+m — committed, g, or
 *    the draft d_m of module m−1 — and its last position gives d_{m+1}. Greedy drafts stay on the
 *    device.
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
 * Which tokens are drafted and which stand is a StepRule: greedy here (argmax drafts, a draft stands
 * when it equals the trunk's argmax). Speculative sampling (Leviathan et al. 2023) and unverified
 * emission plug in their own rules (decode/sequential_sampling.ts) and share everything else: the
 * drafting order, the one verification forward, the caches, the lag and the window. The lag rule
 * compares token values only, so it holds for sampled drafts and corrections as for greedy ones.
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

/**
 * How a step chooses tokens; the session runs the forwards and keeps the caches and the lag.
 * - `draft`: module m's logits [V] at the last committed position → its draft d_{m+1}, [1] int32 on
 *   the device (a rule may read the logits to the host first);
 * - `rows`: the verification forward's logits at the block's kk positions [kk, V] → what the step's
 *   one host read brings back for each of them ([kk] or [kk, W]); called inside tf.tidy;
 * - `judge`: block token j ≥ 1 (x = d_{j+1}, drafted by module j) against the read row of the position
 *   before it (the trunk after block[0..j)): null if it stands, else the token that replaces it;
 * - `next`: the token after the last accepted one, from its row (the next step's certain first token).
 */
export interface StepRule {
  draft(m: number, logits: tf.Tensor1D): tf.Tensor1D | Promise<tf.Tensor1D>;
  rows(logits: tf.Tensor2D): tf.Tensor;
  judge(j: number, x: number, row: ArrayLike<number>): number | null;
  next(row: ArrayLike<number>): number;
}

/** Greedy verification (Stern et al. 2018): argmax drafts; a draft stands when it is the trunk's argmax. */
export const greedyRule: StepRule = {
  draft: (_m, logits) => tf.tidy(() => tf.reshape(tf.argMax(logits), [1]) as tf.Tensor1D),
  rows: (logits) => tf.argMax(logits, 1), // [kk] int32
  judge: (_j, x, row) => (x === row[0] ? null : row[0]),
  next: (row) => row[0],
};

/** One decoding session: committed tokens, caches and the modules' lag (see the file comment). */
export class SequentialSession {
  readonly seq: number[];
  readonly caches: CacheSet;
  readonly promptLength: number;
  /** g: the token after `seq` that the next step commits first (−1 before the prefill and after `emitLast`). */
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

  /** `depth` = modules used for drafting (0 = no drafts: one token per forward through the verification path). */
  constructor(
    readonly model: SequentialModel,
    prompt: number[],
    readonly depth: number,
    readonly rule: StepRule = greedyRule,
  ) {
    if (!Number.isInteger(depth) || depth < 0 || depth > model.depth) throw new Error(`sequential: depth must be an integer in [0, ${model.depth}], got ${depth}`);
    if (prompt.length === 0) throw new Error('sequential: the prompt must hold at least one token');
    this.seq = [...prompt];
    this.promptLength = prompt.length;
    this.caches = model.newCaches();
    this.attempts = new Array(depth).fill(0);
    this.accepts = new Array(depth).fill(0);
  }

  /** Trunk forward over the prompt's window: sets g. */
  async prefill(): Promise<void> {
    const n = this.seq.length;
    const plan = planFeed(this.start, this.caches.trunk.length, n, 0, this.model.config.blockSize);
    this.restart(plan.start);
    const { hidden, rows } = await this.verify(this.seq.slice(plan.from), null, 1);
    this.next = this.rule.next(rows[0]);
    this.pending = hidden;
  }

  /** One draft → verify → accept step committing 1..min(D+1, maxTokens) tokens; returns how many. */
  step(maxTokens: number): Promise<number> {
    return this.advance(Math.min(this.depth + 1, maxTokens, roomInWindow(this.seq.length + 1, this.model.config.blockSize)));
  }

  /**
   * One step over a block of kk tokens, g then the drafts d₂..d_kk: the modules draft (kk > 1), one
   * trunk forward verifies, the rule judges, the caches follow. The kk predicted tokens n+1..n+kk must
   * share a window (kk ≤ roomInWindow(n + 1), decode/context.ts). Returns the tokens committed.
   */
  async advance(kk: number): Promise<number> {
    const { blockSize } = this.model.config;
    const n = this.seq.length;
    if (this.next < 0) throw new Error('sequential: no next token (prefill first; nothing follows emitLast)');
    const most = Math.min(this.depth + 1, roomInWindow(n + 1, blockSize));
    if (!Number.isInteger(kk) || kk < 1 || kk > most) throw new Error(`sequential: a block holds an integer 1..${most} tokens here, got ${kk}`);
    const drafted = kk > 1 ? await this.draft() : null; // [D] d₂..d_{D+1} on the device
    const modulesEnd = drafted ? n : this.moduleEnd;
    const plan = planFeed(this.start, this.caches.trunk.length, n, kk, blockSize);
    if (plan.reset) this.restart(plan.start);
    const { hidden, rows, drafts } = await this.verify([...this.seq.slice(plan.from), this.next], drafted, kk);
    const block = [this.next, ...drafts.slice(0, kk - 1)];
    let a = 1;
    let replaced: number | null = null;
    while (a < kk) {
      this.attempts[a - 1] += 1;
      replaced = this.rule.judge(a, block[a], rows[a - 1]);
      if (replaced !== null) break;
      this.accepts[a - 1] += 1;
      a += 1;
    }
    this.seq.push(...block.slice(0, a));
    this.next = replaced ?? this.rule.next(rows[a - 1]);
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

  /**
   * Commits the block of kk tokens a step would verify — g, then the drafts d₂..d_kk — without a
   * forward (the last block of unverified emission). Nothing can follow: the module caches are left
   * past the lag bookkeeping.
   */
  async emitLast(kk: number): Promise<void> {
    if (this.next < 0) throw new Error('sequential: no next token (prefill first; nothing follows emitLast)');
    if (!Number.isInteger(kk) || kk < 1 || kk > this.depth + 1) throw new Error(`sequential: a block holds an integer 1..${this.depth + 1} tokens, got ${kk}`);
    const block = [this.next];
    if (kk > 1) {
      const drafted = await this.draft();
      const read = await drafted.data(); // [D]
      drafted.dispose();
      block.push(...Array.from(read.subarray(0, kk - 1)));
    }
    this.seq.push(...block);
    this.next = -1;
  }

  /**
   * Prefill, then steps until `maxNewTokens` new tokens are committed (the last one needs no forward
   * when it is g); returns the tokens committed per forward.
   */
  async run(maxNewTokens: number): Promise<number[]> {
    const steps: number[] = [];
    if (maxNewTokens === 0) return steps;
    const end = this.seq.length + maxNewTokens;
    await this.prefill();
    while (this.seq.length < end - 1) steps.push(await this.step(end - this.seq.length));
    if (this.seq.length < end) {
      this.seq.push(this.next);
      steps.push(1);
    }
    return steps;
  }

  /** The statistics so far (DESIGN §4.8), for `ms` of wall time. */
  stats(method: string, ms: number): SequentialStats {
    const base = finishStats(method, this.seq.length - this.promptLength, this.forwards, ms);
    return { ...speculativeStats(base, this.attempts, this.accepts), draftSteps: this.draftSteps };
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

  /**
   * Runs the D modules over [E, n) in order (appending to their caches), each taking the draft of the
   * one before; the rule turns module m's last logits into d_{m+1}. Returns d₂..d_{D+1} [D] int32.
   */
  private async draft(): Promise<tf.Tensor1D> {
    const n = this.seq.length;
    const E = this.moduleEnd;
    const drafts: tf.Tensor1D[] = []; // drafts[t] = d_{t+2}, [1] each
    let h = this.pending!; // h^{m−1} [1, n − E, C]
    try {
      for (let m = 1; m <= this.depth; m++) {
        // the token at i+m for i in [E, n): committed (< n), g (= n), then module drafts d_{j−n+1}
        const host: number[] = [];
        for (let j = E + m; j <= Math.min(n, n - 1 + m); j++) host.push(j < n ? this.seq[j] : this.next);
        const fromDrafts = drafts.slice(Math.max(0, E + m - n - 1), m - 1);
        const input = h;
        const out = tf.tidy(() => {
          const tokens = tf.concat([...(host.length ? [tf.tensor1d(host, 'int32')] : []), ...fromDrafts]) as tf.Tensor1D; // [n − E]
          return this.model.moduleStep(m, input, tokens, this.caches);
        });
        if (input !== this.pending) input.dispose();
        h = out.hidden; // hᵐ [1, n − E, C]
        try {
          drafts.push(await this.rule.draft(m, out.last));
        } finally {
          out.last.dispose();
        }
      }
      this.draftSteps += this.depth;
      return tf.concat(drafts) as tf.Tensor1D; // [D]
    } finally {
      if (h !== this.pending) h.dispose();
      tf.dispose(drafts);
    }
  }

  /**
   * Trunk forward over the known tokens `fed`, then the first kk − 1 drafts when `drafted` is given
   * (appending to the trunk cache), with the step's one host read: the rule's rows at the last kk
   * positions and all drafts. Disposes `drafted`; the caller owns `hidden` (h⁰ [1, T, C]).
   */
  private async verify(fed: number[], drafted: tf.Tensor1D | null, kk: number): Promise<{ hidden: tf.Tensor3D; rows: ArrayLike<number>[]; drafts: number[] }> {
    const V = this.model.config.vocabSize;
    const use = drafted ? kk - 1 : 0;
    const T = fed.length + use;
    const D = drafted ? drafted.shape[0] : 0;
    const { hidden, packed } = tf.tidy(() => {
      const known = tf.tensor1d(fed, 'int32');
      const tokens = drafted && use > 0 ? (tf.concat([known, tf.slice(drafted, 0, use)]) as tf.Tensor1D) : known; // [T]
      const out = this.model.trunkStep(tokens, this.caches);
      const last = tf.slice(tf.reshape(out.logits, [T, V]), [T - kk, 0], [kk, V]) as tf.Tensor2D; // [kk, V]
      const rows = tf.reshape(this.rule.rows(last), [-1]); // [kk·W]
      return { hidden: out.hidden, packed: drafted ? tf.concat([rows, tf.cast(drafted, rows.dtype)]) : rows }; // [kk·W + D]
    });
    drafted?.dispose();
    const read = await packed.data(); // the step's one device → host read
    packed.dispose();
    this.forwards += 1;
    const W = (read.length - D) / kk;
    return {
      hidden,
      rows: Array.from({ length: kk }, (_, j) => read.subarray(j * W, (j + 1) * W)),
      drafts: Array.from(read.subarray(kk * W)),
    };
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
  const t0 = performance.now();
  let steps: number[];
  try {
    steps = await session.run(opts.maxNewTokens);
  } finally {
    session.dispose();
  }
  return { tokens: session.seq.slice(prompt.length), stats: session.stats(`sequential D=${k - 1}`, performance.now() - t0), steps };
}
