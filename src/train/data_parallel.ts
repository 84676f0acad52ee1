/**
 * Data-parallel training on one machine, in Node: rank 0 is the calling thread (it evaluates, logs and writes
 * checkpoints), ranks 1 … N−1 are worker threads (node:worker_threads), each with its own tfjs engine (tfjs-wasm runs
 * one thread per engine, so this is how a run uses several cores). What rank 0 does with them is
 * data_parallel_group.ts, what each of them runs is data_parallel_rank.ts; this file is Node's transport between the
 * two. A worker that throws or dies aborts the exchange, so rank 0's current step fails with the worker's message
 * (the last checkpoint stays as it was).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import type { Config, TrainConfig } from '../config';
import { RankGroup, SpawnRank, WorkerInit, WorkerMessage } from './data_parallel_group';
import type { Trainer } from './trainer';
import { workerCount } from './worker_count';

export type { WorkerInit, WorkerMessage };

/** Ranks a run trains with: train.workers, or 0 = one per core but one, capped by the batch size. */
export function resolveWorkers(train: TrainConfig, backend: string): number {
  return workerCount(train, backend, os.availableParallelism());
}

/**
 * The worker thread for a rank: a bundle ships data_parallel_worker.js beside itself; from source (tsx, vitest, the
 * tslab kernel, whose modules report a .js name) tsx registers TypeScript in the thread and loads the .ts file.
 */
function nodeWorker(init: WorkerInit): Worker {
  const base = path.join(__dirname, 'data_parallel_worker');
  if (fs.existsSync(`${base}.js`)) return new Worker(`${base}.js`, { workerData: init });
  if (fs.existsSync(`${base}.ts`)) return new Worker(`require('tsx/cjs'); require(${JSON.stringify(`${base}.ts`)});`, { eval: true, workerData: init });
  throw new Error(`train.workers > 1 needs ${base}.ts (run from source with tsx) or a bundled ${base}.js beside this script; set train.workers to 1`);
}

/** Node's transport: one worker thread per rank. */
export const spawnNodeRank: SpawnRank = (init, events) => {
  const w = nodeWorker(init);
  w.on('message', (m: WorkerMessage) => events.message(m));
  w.on('error', (e) => events.crash(e.message));
  w.on('exit', (code) => events.exit(code));
  return { terminate: () => w.terminate() };
};

/** A running group of worker threads around rank 0's trainer. */
export class WorkerGroup extends RankGroup {
  /**
   * Makes `trainer` (already holding the run's starting state) rank 0 of a group of `ranks`, and starts ranks 1 …
   * ranks−1 from its state. `tokens`: the run's token stream.
   */
  static async start(ranks: number, config: Config, backend: string, trainer: Trainer, tokens: Uint8Array | Int32Array): Promise<WorkerGroup> {
    const group = new WorkerGroup(spawnNodeRank);
    await group.open(ranks, config, backend, trainer, tokens);
    return group;
  }
}
