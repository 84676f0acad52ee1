/**
 * How many data-parallel ranks a run trains with, on any platform: the CLI passes Node's core count, the lab page the
 * browser's `navigator.hardwareConcurrency`.
 */
import type { TrainConfig } from '../config';

/** Backends whose engines can run one per thread (a worker thread or a Web Worker), as data-parallel ranks need. */
export const PARALLEL_BACKENDS: readonly string[] = ['wasm', 'cpu'];

/**
 * Ranks for `train` on `backend` with `cores` logical cores: train.workers, or 0 = one per core but one (the
 * machine keeps a core for everything else), capped by the batch size (every rank needs a row). A GPU backend
 * trains with one rank; asking it for more is an error.
 */
export function workerCount(train: Pick<TrainConfig, 'workers' | 'batchSize'>, backend: string, cores: number): number {
  const n = train.workers > 0 ? train.workers : Math.max(1, Math.min(cores - 1, train.batchSize));
  if (n > 1 && !PARALLEL_BACKENDS.includes(backend)) {
    if (train.workers > 1) throw new Error(`train.workers = ${train.workers} needs the wasm or cpu backend (this run uses ${backend}); set train.workers to 1 or change train.backend`);
    return 1;
  }
  return n;
}
