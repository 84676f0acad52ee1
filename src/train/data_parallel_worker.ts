/**
 * A data-parallel worker thread in Node (rank ≥ 1; data_parallel.ts starts it, data_parallel_rank.ts trains it).
 *
 * Fault injection for tests: MTP_DP_FAULT_STEP=n makes every worker throw before its step n.
 */
import { parentPort, workerData } from 'node:worker_threads';
import type { WorkerInit } from './data_parallel_group';
import { runRank } from './data_parallel_rank';

const faultStep = Number(process.env.MTP_DP_FAULT_STEP ?? NaN);
void runRank(workerData as WorkerInit, (m) => parentPort!.postMessage(m), { faultStep: Number.isNaN(faultStep) ? undefined : faultStep });
