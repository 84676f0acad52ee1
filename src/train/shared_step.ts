/**
 * One data-parallel optimiser step over shared memory (ZeRO-1 style): N ranks (the main thread and N − 1 workers, each
 * with its own tfjs engine) hold the weights, the Adam moments and the summed gradient in SharedArrayBuffers; each rank
 * sums and updates only its own slice of the parameters, so no work is repeated and nothing is copied between ranks.
 *
 * Per step, at every rank (three barriers):
 *   1. write its gradient contribution (already weighted by its share of the batch), its metrics and a command into
 *      its slot; barrier;
 *   2. sum its slice over the N slots in rank order (rank 0 also sums the metrics) and the squares of that slice;
 *      barrier;
 *   3. add the N partial squares in rank order → the global gradient norm (the same number at every rank); clip; AdamW
 *      on its slice of the shared weights and moments; barrier. Every rank then copies the shared weights into its
 *      engine.
 * Every element is computed by exactly one rank, so all ranks see the same weights bit for bit; the update equals
 * single-rank AdamW on the whole batch up to float summation order (sums and moments in float64 within a step, stored
 * as float32).
 *
 * A rank waits at a barrier with Atomics.wait (workers) or Atomics.waitAsync (the main thread, whose event loop must
 * keep running to notice a worker that dies); `abort()` wakes every rank with an error, so a failed or crashed worker
 * never leaves the others waiting. Works wherever SharedArrayBuffer does: Node, and cross-origin-isolated pages.
 */

/** Per-step command a rank sends with its contribution. */
export const Command = { CONTINUE: 0, STOP: 1 } as const;
export type CommandValue = (typeof Command)[keyof typeof Command];

/** The trainable parameters in a fixed order, with what AdamW needs per parameter. */
export interface ParamLayout {
  sizes: number[];
  /** Decoupled weight decay applies (matrices, rank ≥ 2). */
  decay: boolean[];
  /** Learning-rate multiplier. */
  lrScale: number[];
}

/** What a rank needs to join: the shared buffers and the shapes. */
export interface SharedStepInit {
  ranks: number;
  layout: ParamLayout;
  /** Metric floats per step (loss, then (loss, acc) per head). */
  metrics: number;
  control: SharedArrayBuffer;
  slots: SharedArrayBuffer;
  reduced: SharedArrayBuffer;
  partials: SharedArrayBuffer;
  params: SharedArrayBuffer;
  m: SharedArrayBuffer;
  v: SharedArrayBuffer;
}

export interface AdamWHyper {
  lr: number;
  /** Adam step count after this step (bias correction). */
  t: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Clip the global gradient norm to this (0 = off). */
  gradClip: number;
}

/** Thrown at a rank when the step was aborted (a rank failed or died). */
export class StepAborted extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'StepAborted';
  }
}

/** Atomics.waitAsync (ES2024; in Node ≥ 16), typed here for older TypeScript libs. */
const waitAsync = (Atomics as unknown as {
  waitAsync(a: Int32Array, index: number, value: number, timeout: number): { async: boolean; value: Promise<string> | string };
}).waitAsync;

const GENERATION = 0;
const ARRIVED = 1;
const ABORTED = 2;
/** Milliseconds a blocked rank waits before checking again for an abort. */
const POLL_MS = 1000;

export class SharedStep {
  readonly P: number;
  /** Floats per slot: the gradient, the metrics, the command. */
  private readonly slotLength: number;
  private readonly control: Int32Array;
  private readonly slots: Float32Array;
  private readonly reduced: Float32Array;
  private readonly partials: Float64Array;
  /** The weights, shared by every rank (read them after a step). */
  readonly params: Float32Array;
  readonly m: Float32Array;
  readonly v: Float32Array;
  /** This rank's slice [lo, hi) of the flattened parameters. */
  readonly lo: number;
  readonly hi: number;

  /** Allocates the shared buffers for `ranks` ranks. */
  static create(ranks: number, layout: ParamLayout, metrics: number): SharedStepInit {
    if (!(Number.isInteger(ranks) && ranks >= 1)) throw new Error(`data-parallel: ranks must be an integer ≥ 1, got ${ranks}`);
    const P = layout.sizes.reduce((a, b) => a + b, 0);
    const f32 = (n: number) => new SharedArrayBuffer(4 * n);
    return {
      ranks,
      layout,
      metrics,
      control: new SharedArrayBuffer(3 * 4),
      slots: f32(ranks * (P + metrics + 1)),
      reduced: f32(P + metrics),
      partials: new SharedArrayBuffer(8 * ranks),
      params: f32(P),
      m: f32(P),
      v: f32(P),
    };
  }

  constructor(
    readonly init: SharedStepInit,
    readonly rank: number,
    /** Main thread: wait with Atomics.waitAsync (keeps its event loop running). */
    private readonly asyncWait: boolean,
  ) {
    this.P = init.layout.sizes.reduce((a, b) => a + b, 0);
    this.slotLength = this.P + init.metrics + 1;
    this.control = new Int32Array(init.control);
    this.slots = new Float32Array(init.slots);
    this.reduced = new Float32Array(init.reduced);
    this.partials = new Float64Array(init.partials);
    this.params = new Float32Array(init.params);
    this.m = new Float32Array(init.m);
    this.v = new Float32Array(init.v);
    this.lo = Math.floor((this.P * rank) / init.ranks);
    this.hi = Math.floor((this.P * (rank + 1)) / init.ranks);
  }

  /** Wakes every rank with an error (a failed or dead rank); later steps throw at once. */
  abort(): void {
    Atomics.store(this.control, ABORTED, 1);
    Atomics.add(this.control, GENERATION, 1);
    Atomics.notify(this.control, GENERATION);
  }

  get aborted(): boolean {
    return Atomics.load(this.control, ABORTED) === 1;
  }

  private async barrier(): Promise<void> {
    if (this.aborted) throw new StepAborted('another rank failed');
    const generation = Atomics.load(this.control, GENERATION);
    if (Atomics.add(this.control, ARRIVED, 1) === this.init.ranks - 1) {
      Atomics.store(this.control, ARRIVED, 0); // the last to arrive opens the barrier
      Atomics.add(this.control, GENERATION, 1);
      Atomics.notify(this.control, GENERATION);
    }
    while (Atomics.load(this.control, GENERATION) === generation) {
      if (this.asyncWait) {
        const w = waitAsync(this.control, GENERATION, generation, POLL_MS);
        if (w.async) await w.value;
      } else {
        Atomics.wait(this.control, GENERATION, generation, POLL_MS);
      }
    }
    if (this.aborted) throw new StepAborted('another rank failed');
  }

  /**
   * One step (see the file comment). `contribution`: this rank's weighted gradient (P floats, layout order) then its
   * weighted metrics. Returns the commands of every rank; unless one is STOP, also the summed metrics and the global
   * gradient norm, after the shared weights were updated (a non-finite loss or norm leaves them untouched).
   */
  async step(contribution: Float32Array, command: CommandValue, hyper: AdamWHyper): Promise<{ commands: CommandValue[]; metrics: Float32Array; norm: number }> {
    const { ranks, metrics: M, layout } = this.init;
    const P = this.P;
    if (contribution.length !== P + M) throw new Error(`data-parallel: contribution of ${contribution.length} floats, expected ${P + M}`);
    const mine = this.rank * this.slotLength;
    this.slots.set(contribution, mine);
    this.slots[mine + P + M] = command;
    await this.barrier();
    const commands: CommandValue[] = [];
    for (let r = 0; r < ranks; r++) commands.push(this.slots[r * this.slotLength + P + M] as CommandValue);
    if (commands.includes(Command.STOP)) return { commands, metrics: new Float32Array(M), norm: NaN };
    // 2. this rank's slice of the sum, and its squares
    const { lo, hi } = this;
    const sum = new Float64Array(hi - lo);
    for (let r = 0; r < ranks; r++) {
      const at = r * this.slotLength;
      for (let i = lo; i < hi; i++) sum[i - lo] += this.slots[at + i];
    }
    let squares = 0;
    for (let i = 0; i < sum.length; i++) {
      this.reduced[lo + i] = sum[i];
      squares += this.reduced[lo + i] * this.reduced[lo + i];
    }
    this.partials[this.rank] = squares;
    if (this.rank === 0) {
      for (let j = 0; j < M; j++) {
        let s = 0;
        for (let r = 0; r < ranks; r++) s += this.slots[r * this.slotLength + P + j];
        this.reduced[P + j] = s;
      }
    }
    await this.barrier();
    // 3. the global norm, then AdamW on this rank's slice
    let total = 0;
    for (let r = 0; r < ranks; r++) total += this.partials[r];
    const norm = Math.sqrt(total);
    const metrics = this.reduced.slice(P, P + M);
    if (Number.isFinite(metrics[0]) && Number.isFinite(norm)) {
      const scale = hyper.gradClip > 0 ? Math.min(1, hyper.gradClip / (norm + 1e-6)) : 1;
      const { beta1, beta2, eps, weightDecay, lr, t } = hyper;
      const bc1 = 1 - beta1 ** t;
      const bc2 = 1 - beta2 ** t;
      let start = 0;
      for (let p = 0; p < layout.sizes.length; p++) {
        const end = start + layout.sizes[p];
        const a = Math.max(start, lo);
        const b = Math.min(end, hi);
        const decay = layout.decay[p] && weightDecay > 0 ? weightDecay : 0;
        const step = lr * layout.lrScale[p];
        for (let i = a; i < b; i++) {
          const g = this.reduced[i] * scale;
          const m = beta1 * this.m[i] + (1 - beta1) * g;
          const v = beta2 * this.v[i] + (1 - beta2) * g * g;
          this.m[i] = m;
          this.v[i] = v;
          const w = this.params[i];
          this.params[i] = w - step * (m / bc1 / (Math.sqrt(v / bc2) + eps) + decay * w);
        }
        start = end;
      }
    }
    await this.barrier();
    return { commands, metrics, norm };
  }
}
