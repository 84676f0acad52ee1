/**
 * The browser's transport for data-parallel training (data_parallel_group.ts runs rank 0's side, data_parallel_rank.ts
 * each other rank): ranks 1 … N−1 run in dedicated Web Workers, each with its own tfjs engine, started by rank 0's
 * thread. They block at the step's barriers with Atomics.wait, which browsers allow in workers only; rank 0 waits with
 * Atomics.waitAsync and so keeps its event loop (the lab runs it in the page's own worker, where the ranks' messages
 * and a stop request arrive). Needs a cross-origin-isolated page (shared_memory.ts).
 *
 * One script can serve both roles: a rank's worker is named `mtp-rank <n>` (isWebRank), so a page's training worker
 * can start its ranks from its own script, and the browser loads the bundle once.
 */
import type { InitBackendOptions } from '../backend/index';
import type { SpawnRank, WorkerInit, WorkerMessage } from './data_parallel_group';
import { runRank } from './data_parallel_rank';

/** The name prefix of a rank's worker. */
export const WEB_RANK_NAME = 'mtp-rank';

export interface WebRankOptions {
  /** The module script each rank's worker runs; it must call serveWebRank() when isWebRank(). */
  script: string | URL;
  /** initBackend's options at every rank, e.g. the page's wasmPath. Default: none. */
  backend?: InitBackendOptions;
  /** Fault injection for tests: every rank ≥ 1 throws before this step. Default: never. */
  faultStep?: number;
}

/** The one message a rank's worker receives. */
interface WebRankStart {
  init: WorkerInit;
  backend: InitBackendOptions;
  faultStep?: number;
}

/** A transport starting each rank in a Web Worker running `opts.script`. */
export function webRankSpawner(opts: WebRankOptions): SpawnRank {
  return (init, events) => {
    const w = new Worker(opts.script, { type: 'module', name: `${WEB_RANK_NAME} ${init.rank}` });
    // A rank posts one message, when it ends; a Web Worker has no exit event, so that message (or an error) is its end.
    w.onmessage = (e: MessageEvent<WorkerMessage>) => {
      events.message(e.data);
      w.terminate();
      events.exit(0);
    };
    w.onerror = (e: ErrorEvent) => {
      e.preventDefault(); // reported through rank 0's run, not as an uncaught error of the page
      w.terminate();
      events.crash(e.message || 'its script could not start');
      events.exit(1);
    };
    w.onmessageerror = () => {
      w.terminate();
      events.crash('a message from it could not be read');
      events.exit(1);
    };
    const start: WebRankStart = { init, backend: opts.backend ?? {}, faultStep: opts.faultStep };
    w.postMessage(start);
    return { terminate: () => w.terminate() };
  };
}

/** True in a worker started by webRankSpawner. */
export function isWebRank(): boolean {
  const name = (globalThis as { name?: unknown }).name;
  return typeof name === 'string' && name.startsWith(`${WEB_RANK_NAME} `);
}

/** Makes this worker a rank: waits for its start message, trains, posts its end and closes. */
export function serveWebRank(): void {
  const scope = globalThis as unknown as { onmessage: ((e: MessageEvent<WebRankStart>) => void) | null; postMessage(m: WorkerMessage): void; close(): void };
  scope.onmessage = (e) => {
    scope.onmessage = null;
    const { init, backend, faultStep } = e.data;
    void runRank(init, (m) => scope.postMessage(m), { backend, faultStep }).then(() => scope.close());
  };
}
