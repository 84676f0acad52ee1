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
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Config, TrainConfig } from '../config';
import type { MtpModel } from '../model/create';
import { AllReduceAborted, SharedAllReduce } from './all_reduce';
import type { DataParallel, Trainer, TrainerState } from './trainer';

/** What a worker thread is started with. */
export interface WorkerInit {
  config: Config;
  backend: string;
  rank: number;
  exchange: ReturnType<typeof SharedAllReduce.create>;
  /** The run's token stream (shared, not copied per worker). */
  tokens: SharedArrayBuffer;
  tokenKind: 'uint8' | 'int32';
  params: [string, Float32Array][];
  state: TrainerState;
}

/** Messages a worker posts to rank 0. */
export type WorkerMessage = { type: 'done'; rank: number; weights: string } | { type: 'error'; rank: number; message: string };

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

/** The worker thread for a rank: tsx registers TypeScript when running from source; a bundle ships the .js beside itself. */
function spawnWorker(init: WorkerInit): Worker {
  const ext = path.extname(__filename);
  const file = path.join(__dirname, `data_parallel_worker${ext}`);
  if (ext === '.ts') return new Worker(`require('tsx/cjs'); require(${JSON.stringify(file)});`, { eval: true, workerData: init });
  return new Worker(file, { workerData: init });
}

/** A running group of workers around rank 0's trainer. */
export class WorkerGroup {
  private readonly workers: Worker[] = [];
  private readonly exits: Promise<void>[] = [];
  private readonly digests = new Map<number, string>();
  private failure: string | undefined;
  readonly reducer: SharedAllReduce;
  readonly parallel: DataParallel;

  /**
   * Starts ranks 1 … ranks−1 from `trainer`'s current state; `trainer` must then be rank 0 (build it with
   * `group.parallel`, see trainRun). `tokens`: the run's token stream.
   */
  constructor(
    readonly ranks: number,
    config: Config,
    backend: string,
    model: MtpModel,
    state: TrainerState,
    exchangeLength: number,
    tokens: Uint8Array | Int32Array,
  ) {
    const exchange = SharedAllReduce.create(ranks, exchangeLength);
    this.reducer = new SharedAllReduce(exchange, 0);
    this.parallel = { rank: 0, ranks, exchange: (c, cmd) => this.reducer.exchange(c, cmd) };
    const shared = new SharedArrayBuffer(tokens.byteLength);
    new Uint8Array(shared).set(new Uint8Array(tokens.buffer, tokens.byteOffset, tokens.byteLength));
    const params = hostParams(model);
    for (let rank = 1; rank < ranks; rank++) {
      const w = spawnWorker({ config, backend, rank, exchange, tokens: shared, tokenKind: tokens instanceof Uint8Array ? 'uint8' : 'int32', params, state });
      this.workers.push(w);
      this.exits.push(
        new Promise<void>((resolve) => {
          w.on('message', (m: WorkerMessage) => {
            if (m.type === 'done') this.digests.set(m.rank, m.weights);
            else this.fail(`data-parallel worker ${m.rank} failed: ${m.message}`);
          });
          w.on('error', (e) => this.fail(`data-parallel worker ${rank} crashed: ${e.message}`));
          w.on('exit', (code) => {
            if (code !== 0) this.fail(`data-parallel worker ${rank} exited with code ${code}`);
            else if (!this.digests.has(rank)) this.fail(`data-parallel worker ${rank} exited before the run ended`);
            resolve();
          });
        }),
      );
    }
  }

  private fail(message: string): void {
    this.failure ??= message;
    this.reducer.abort();
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
    if (!(e instanceof AllReduceAborted)) return e;
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
    this.reducer.abort();
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
