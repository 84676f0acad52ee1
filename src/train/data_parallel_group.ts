/**
 * Rank 0's side of data-parallel training, whatever runs the other ranks (Node's worker threads, data_parallel.ts; a
 * browser's Web Workers, data_parallel_web.ts): rank 0 is the caller's thread and trainer, ranks 1 … N−1 are started
 * by a transport (`SpawnRank`), each with its own tfjs engine. They start from rank 0's exact state (weights, Adam
 * moments, step, batch-sampler state) and train in lockstep through trainer.ts's data-parallel step
 * (shared_step.ts); rank 0 ends them with a STOP exchange and checks, as they finish, that their weights equal its
 * own bit for bit.
 *
 * A rank that throws or dies aborts the exchange, so rank 0's current step fails with that rank's message.
 */
import type { Config } from '../config';
import { SharedStep, SharedStepInit, StepAborted } from './shared_step';
import type { Trainer, TrainerCounters } from './trainer';
import { hostParams, weightsDigest } from './weights_digest';

/** What a rank ≥ 1 is started with (structured-cloneable: the shared buffers are shared, not copied). */
export interface WorkerInit {
  config: Config;
  backend: string;
  rank: number;
  shared: SharedStepInit;
  /** The run's token stream (shared, not copied per rank). */
  tokens: SharedArrayBuffer;
  tokenKind: 'uint8' | 'int32';
  /** Every weight of rank 0's model (frozen ones included). */
  params: [string, Float32Array][];
  counters: TrainerCounters;
}

/** The one message a rank ≥ 1 posts to rank 0, when it ends. */
export type WorkerMessage =
  | { type: 'done'; rank: number; weights: string }
  | { type: 'error'; rank: number; message: string }
  /** Stopped because another rank failed (that rank reports why). */
  | { type: 'aborted'; rank: number };

/** What rank 0 hears from one started rank. */
export interface RankEvents {
  message(m: WorkerMessage): void;
  /** The rank's thread failed outside its training loop (it could not start, or crashed). */
  crash(reason: string): void;
  /** The rank's thread ended: code 0 after its message, anything else when it died. */
  exit(code: number): void;
}

/** A transport: starts rank `init.rank` on a thread (and engine) of its own and reports to `events`. */
export type SpawnRank = (init: WorkerInit, events: RankEvents) => { terminate(): unknown };

/** A running group of ranks around rank 0's trainer. */
export class RankGroup {
  private readonly ranksStarted: { terminate(): unknown }[] = [];
  private readonly exits: Promise<void>[] = [];
  private readonly digests = new Map<number, string>();
  private failure: string | undefined;
  private sharedStep: SharedStep | undefined;

  constructor(private readonly spawn: SpawnRank) {}

  /**
   * Makes `trainer` (already holding the run's starting state) rank 0 of a group of `ranks`, and starts ranks 1 …
   * ranks−1 from its state. `tokens`: the run's token stream.
   */
  async open(ranks: number, config: Config, backend: string, trainer: Trainer, tokens: Uint8Array | Int32Array): Promise<void> {
    const init = SharedStep.create(ranks, trainer.paramLayout(), trainer.metricCount);
    const shared = new SharedStep(init, 0, true); // rank 0 waits asynchronously: its event loop must hear the other ranks
    this.sharedStep = shared;
    await trainer.joinGroup({ rank: 0, ranks, shared }, true);
    const sharedTokens = new SharedArrayBuffer(tokens.byteLength);
    new Uint8Array(sharedTokens).set(new Uint8Array(tokens.buffer, tokens.byteOffset, tokens.byteLength));
    const params = hostParams(trainer.model);
    const counters = trainer.counters();
    for (let rank = 1; rank < ranks; rank++) {
      let aborted = false;
      let resolveExit!: () => void;
      this.exits.push(new Promise<void>((r) => (resolveExit = r)));
      const events: RankEvents = {
        message: (m) => {
          if (m.type === 'done') this.digests.set(m.rank, m.weights);
          else if (m.type === 'aborted') aborted = true;
          else this.fail(`data-parallel worker ${m.rank} failed: ${m.message}`);
        },
        crash: (reason) => this.fail(`data-parallel worker ${rank} crashed: ${reason}`),
        exit: (code) => {
          if (code !== 0) this.fail(`data-parallel worker ${rank} exited with code ${code}`);
          else if (!this.digests.has(rank) && !aborted) this.fail(`data-parallel worker ${rank} exited before the run ended`);
          resolveExit();
        },
      };
      this.ranksStarted.push(this.spawn({ config, backend, rank, shared: init, tokens: sharedTokens, tokenKind: tokens instanceof Uint8Array ? 'uint8' : 'int32', params, counters }, events));
    }
  }

  private fail(message: string): void {
    this.failure ??= message;
    this.sharedStep?.abort();
  }

  /** The first failure of a rank ≥ 1, if any (an aborted exchange at rank 0 is reported with it). */
  get failed(): string | undefined {
    return this.failure;
  }

  /**
   * An exchange aborted by another rank, as that rank's failure: its message arrives on the event loop, possibly after
   * the abort woke rank 0, so this waits for it (or for every rank to end, at most a few seconds).
   */
  async explain(e: unknown): Promise<unknown> {
    if (!(e instanceof StepAborted)) return e;
    const deadline = Date.now() + 5000;
    while (!this.failure && Date.now() < deadline) {
      const exited = await Promise.race([Promise.all(this.exits).then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 20))]);
      if (exited) break;
    }
    return this.failure ? new Error(this.failure) : e;
  }

  /**
   * Ends the run: STOP to the other ranks, waits for them, and checks that each ended with rank 0's weights. Call
   * after rank 0's last step (it takes no step itself). Returns every rank's weights digest, rank 0's first.
   */
  async finish(trainer: Trainer): Promise<string[]> {
    try {
      await trainer.stopPeers();
    } catch (e) {
      throw await this.explain(e);
    }
    await Promise.all(this.exits);
    if (this.failure) throw new Error(this.failure);
    const mine = await weightsDigest(hostParams(trainer.model));
    const all = [mine];
    for (let rank = 1; rank <= this.ranksStarted.length; rank++) {
      const digest = this.digests.get(rank);
      if (digest !== mine) throw new Error(`data-parallel worker ${rank} ended with weights that differ from rank 0's; the ranks diverged`);
      all.push(digest);
    }
    return all;
  }

  /** Stops every rank at once (after an error at rank 0). */
  async terminate(): Promise<void> {
    this.sharedStep?.abort();
    await Promise.all(this.ranksStarted.map((w) => w.terminate()));
  }
}
