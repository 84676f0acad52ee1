/**
 * All-reduce over shared memory for data-parallel training: N ranks (the main thread and N − 1 workers, each with its
 * own tfjs engine) each contribute a vector per step; every rank gets the sum, added in the same order (rank 0, 1, …)
 * on every rank, so all ranks see bit-identical results and their weights never drift apart.
 *
 * Layout (one SharedArrayBuffer for control, one for data):
 *   control Int32Array: [generation, arrived, aborted]
 *   data Float32Array: two sets (alternating by step parity) of N slots of `length` floats, each slot followed by one
 *   command word (CONTINUE or STOP). One barrier per step suffices with two sets: a rank can refill a set
 *   only after every rank has passed the barrier of the step that read it.
 *
 * A rank waits at the barrier with Atomics.wait (workers) or Atomics.waitAsync (the main thread, whose event loop must
 * keep running to notice a worker that dies); `abort()` wakes every rank with an error, so a crashed or failed worker
 * never leaves the others waiting. Works wherever SharedArrayBuffer does: Node, and cross-origin-isolated pages.
 */

/** Per-step command a rank sends with its contribution. */
export const Command = { CONTINUE: 0, STOP: 1 } as const;
export type CommandValue = (typeof Command)[keyof typeof Command];

/** What a rank needs to join: the shared buffers and the shape of the exchange. */
export interface AllReduceInit {
  control: SharedArrayBuffer;
  data: SharedArrayBuffer;
  ranks: number;
  length: number;
}

/** Atomics.waitAsync (ES2024; in Node ≥ 16), typed here for older TypeScript libs. */
const waitAsync = (Atomics as unknown as {
  waitAsync(a: Int32Array, index: number, value: number, timeout: number): { async: boolean; value: Promise<string> | string };
}).waitAsync;

const GENERATION = 0;
const ARRIVED = 1;
const ABORTED = 2;

/** Thrown at a rank when the exchange was aborted (a rank failed or died). */
export class AllReduceAborted extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'AllReduceAborted';
  }
}

export class SharedAllReduce {
  private readonly control: Int32Array;
  private readonly data: Float32Array;
  private step = 0;
  /** Milliseconds a blocked rank waits before checking again for an abort. */
  private static readonly POLL_MS = 1000;

  /** Allocates the buffers for `ranks` ranks exchanging `length` floats per step. */
  static create(ranks: number, length: number): AllReduceInit {
    if (!(Number.isInteger(ranks) && ranks >= 1)) throw new Error(`all-reduce: ranks must be an integer ≥ 1, got ${ranks}`);
    return {
      control: new SharedArrayBuffer(3 * 4),
      data: new SharedArrayBuffer(2 * ranks * (length + 1) * 4),
      ranks,
      length,
    };
  }

  constructor(
    readonly init: AllReduceInit,
    readonly rank: number,
  ) {
    this.control = new Int32Array(init.control);
    this.data = new Float32Array(init.data);
  }

  private slot(set: number, rank: number): number {
    return (set * this.init.ranks + rank) * (this.init.length + 1);
  }

  /** Wakes every rank with an error (a failed or dead rank); later calls throw at once. */
  abort(): void {
    Atomics.store(this.control, ABORTED, 1);
    Atomics.add(this.control, GENERATION, 1);
    Atomics.notify(this.control, GENERATION);
  }

  get aborted(): boolean {
    return Atomics.load(this.control, ABORTED) === 1;
  }

  /** Writes this rank's contribution and command, then arrives at the barrier; returns the generation to wait past. */
  private arrive(contribution: Float32Array, command: CommandValue): number {
    if (contribution.length !== this.init.length) throw new Error(`all-reduce: contribution of ${contribution.length} floats, expected ${this.init.length}`);
    if (this.aborted) throw new AllReduceAborted('another rank failed');
    const at = this.slot(this.step % 2, this.rank);
    this.data.set(contribution, at);
    this.data[at + this.init.length] = command;
    const generation = Atomics.load(this.control, GENERATION);
    if (Atomics.add(this.control, ARRIVED, 1) === this.init.ranks - 1) {
      Atomics.store(this.control, ARRIVED, 0); // the last to arrive opens the barrier
      Atomics.add(this.control, GENERATION, 1);
      Atomics.notify(this.control, GENERATION);
    }
    return generation;
  }

  /** The sum over ranks (in rank order) and every rank's command, after the barrier. */
  private collect(): { sum: Float32Array; commands: CommandValue[] } {
    if (this.aborted) throw new AllReduceAborted('another rank failed');
    const set = this.step % 2;
    const n = this.init.length;
    const sum = new Float32Array(n);
    const commands: CommandValue[] = [];
    for (let r = 0; r < this.init.ranks; r++) {
      const at = this.slot(set, r);
      const src = this.data.subarray(at, at + n);
      for (let i = 0; i < n; i++) sum[i] += src[i];
      commands.push(this.data[at + n] as CommandValue);
    }
    this.step += 1;
    return { sum, commands };
  }

  /** Blocking exchange (worker threads): contributes, waits for every rank, returns the sum and the commands. */
  exchangeSync(contribution: Float32Array, command: CommandValue = Command.CONTINUE): { sum: Float32Array; commands: CommandValue[] } {
    const generation = this.arrive(contribution, command);
    while (Atomics.load(this.control, GENERATION) === generation) Atomics.wait(this.control, GENERATION, generation, SharedAllReduce.POLL_MS);
    return this.collect();
  }

  /** Non-blocking exchange (the main thread): the event loop keeps running while it waits. */
  async exchange(contribution: Float32Array, command: CommandValue = Command.CONTINUE): Promise<{ sum: Float32Array; commands: CommandValue[] }> {
    const generation = this.arrive(contribution, command);
    while (Atomics.load(this.control, GENERATION) === generation) {
      const w = waitAsync(this.control, GENERATION, generation, SharedAllReduce.POLL_MS);
      if (w.async) await w.value;
    }
    return this.collect();
  }
}
