/**
 * Data-parallel training on one machine (Node only): rank 0 is the calling thread (it evaluates, logs and writes
 * checkpoints), ranks 1 … N−1 are worker threads, each with its own tfjs engine (tfjs-wasm runs one thread per
 * engine, so this is how a run uses several cores). The workers start from rank 0's exact state (weights, Adam
 * moments, step, batch-sampler state), and train in lockstep through trainer.ts's data-parallel step; rank 0 ends
 * them with a STOP exchange and checks, as they exit, that their weights equal its own bit for bit.
 *
 * A worker that throws or dies aborts the exchange, so rank 0's current step fails with the worker's message (the
 * last checkpoint stays as it was).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Config, TrainConfig } from '../config';
import type { MtpModel } from '../model/create';
import { SharedStep, SharedStepInit, StepAborted } from './shared_step';
import type { Trainer, TrainerCounters } from './trainer';

/** What a worker thread is started with. */
export interface WorkerInit {
  config: Config;
  backend: string;
  rank: number;
  shared: SharedStepInit;
  /** The run's token stream (shared, not copied per worker). */
  tokens: SharedArrayBuffer;
  tokenKind: 'uint8' | 'int32';
  /** Every weight of rank 0's model (frozen ones included). */
  params: [string, Float32Array][];
  counters: TrainerCounters;
}

/** Messages a worker posts to rank 0. */
export type WorkerMessage =
  | { type: 'done'; rank: number; weights: string }
  | { type: 'error'; rank: number; message: string }
  /** Stopped because another rank failed (that rank reports why). */
  | { type: 'aborted'; rank: number };

/** Backends whose engines can run in worker threads here. */
const PARALLEL_BACKENDS = ['wasm', 'cpu'];

/** Ranks a run trains with: train.workers, or 0 = one per core but one, capped by the batch size. */
export function resolveWorkers(train: TrainConfig, backend: string): number {
  const n = train.workers > 0 ? train.workers : Math.max(1, Math.min(os.availableParallelism() - 1, train.batchSize));
  if (n > 1 && !PARALLEL_BACKENDS.includes(backend)) {
    if (train.workers > 1) throw new Error(`train.workers = ${train.workers} needs the wasm or cpu backend (this run uses ${backend}); set train.workers to 1 or change train.backend`);
    return 1;
  }
  return n;
}

/** sha256 over a model's parameters in name order (equal on every rank when the weights are). */
export function weightsDigest(params: Iterable<[string, Float32Array]>): string {
  const h = createHash('sha256');
  for (const [name, data] of [...params].sort((a, b) => (a[0] < b[0] ? -1 : 1))) {
    h.update(name);
    h.update(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }
  return h.digest('hex');
}

/** The parameters of a model as host arrays, by name. */
export function hostParams(model: MtpModel): [string, Float32Array][] {
  return [...model.params].map(([name, v]) => [name, v.dataSync() as Float32Array]);
}

/**
 * The worker thread for a rank: a bundle ships data_parallel_worker.js beside itself; from source (tsx, vitest, the
 * tslab kernel, whose modules report a .js name) tsx registers TypeScript in the thread and loads the .ts file.
 */
function spawnWorker(init: WorkerInit): Worker {
  const base = path.join(__dirname, 'data_parallel_worker');
  if (fs.existsSync(`${base}.js`)) return new Worker(`${base}.js`, { workerData: init });
  if (fs.existsSync(`${base}.ts`)) return new Worker(`require('tsx/cjs'); require(${JSON.stringify(`${base}.ts`)});`, { eval: true, workerData: init });
  throw new Error(`train.workers > 1 needs ${base}.ts (run from source with tsx) or a bundled ${base}.js beside this script; set train.workers to 1`);
}

/** A running group of workers around rank 0's trainer. */
export class WorkerGroup {
  private readonly workers: Worker[] = [];
  private readonly exits: Promise<void>[] = [];
  private readonly digests = new Map<number, string>();
  private failure: string | undefined;
  private constructor(
    readonly ranks: number,
    readonly shared: SharedStep,
  ) {}

  /**
   * Makes `trainer` (already holding the run's starting state) rank 0 of a group of `ranks`, and starts ranks 1 …
   * ranks−1 from its state. `tokens`: the run's token stream.
   */
  static async start(ranks: number, config: Config, backend: string, trainer: Trainer, tokens: Uint8Array | Int32Array): Promise<WorkerGroup> {
    const init = SharedStep.create(ranks, trainer.paramLayout(), trainer.metricCount);
    const shared = new SharedStep(init, 0, true);
    const group = new WorkerGroup(ranks, shared);
    await trainer.joinGroup({ rank: 0, ranks, shared }, true);
    const sharedTokens = new SharedArrayBuffer(tokens.byteLength);
    new Uint8Array(sharedTokens).set(new Uint8Array(tokens.buffer, tokens.byteOffset, tokens.byteLength));
    const params = hostParams(trainer.model);
    const counters = trainer.counters();
    for (let rank = 1; rank < ranks; rank++) {
      const w = spawnWorker({ config, backend, rank, shared: init, tokens: sharedTokens, tokenKind: tokens instanceof Uint8Array ? 'uint8' : 'int32', params, counters });
      group.workers.push(w);
      group.exits.push(
        new Promise<void>((resolve) => {
          let aborted = false;
          w.on('message', (m: WorkerMessage) => {
            if (m.type === 'done') group.digests.set(m.rank, m.weights);
            else if (m.type === 'aborted') aborted = true;
            else group.fail(`data-parallel worker ${m.rank} failed: ${m.message}`);
          });
          w.on('error', (e) => group.fail(`data-parallel worker ${rank} crashed: ${e.message}`));
          w.on('exit', (code) => {
            if (code !== 0) group.fail(`data-parallel worker ${rank} exited with code ${code}`);
            else if (!group.digests.has(rank) && !aborted) group.fail(`data-parallel worker ${rank} exited before the run ended`);
            resolve();
          });
        }),
      );
    }
    return group;
  }

  private fail(message: string): void {
    this.failure ??= message;
    this.shared.abort();
  }

  /** The first worker failure, if any (an aborted exchange at rank 0 is reported with it). */
  get failed(): string | undefined {
    return this.failure;
  }

  /**
   * An exchange aborted by a worker, as that worker's failure: its message arrives on the event loop, possibly after
   * the abort woke rank 0, so this waits for it (or for every worker to exit, at most a few seconds).
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
   * Ends the run: STOP to the workers, waits for them, and checks that each ended with rank 0's weights. Call after
   * rank 0's last step (it takes no step itself).
   */
  async finish(trainer: Trainer): Promise<void> {
    try {
      await trainer.stopPeers();
    } catch (e) {
      throw await this.explain(e);
    }
    await Promise.all(this.exits);
    if (this.failure) throw new Error(this.failure);
    const mine = weightsDigest(hostParams(trainer.model));
    for (const [rank, digest] of this.digests) {
      if (digest !== mine) throw new Error(`data-parallel worker ${rank} ended with weights that differ from rank 0's; the ranks diverged`);
    }
  }

  /** Stops every worker at once (after an error at rank 0). */
  async terminate(): Promise<void> {
    this.shared.abort();
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
