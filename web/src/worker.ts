/**
 * The lab worker: runs every TensorFlow.js computation off the page's thread (decoding, training, checks) and
 * answers the page's requests (protocol.ts) with events and one result each.
 *
 * The same script, started under a rank's name, is a data-parallel rank of the lab's training instead
 * (src/train/data_parallel_web.ts): the ranks reuse this bundle rather than the browser loading a second copy of
 * TensorFlow.js and the library.
 */
import { isWebRank, serveWebRank } from '../../src/train/data_parallel_web';
import { Lab } from './lab/lab';
import type { Reply, Request, WorkerEvent } from './protocol';

type Incoming = MessageEvent<{ id: number; request: Request; base: string }>;
const scope = self as unknown as { location: Location; postMessage(m: Reply): void; onmessage: ((e: Incoming) => void) | null };
const lab = new Lab({ rankScript: scope.location.href });

/** Requests run one at a time, in order; 'stop' is handled at once (it only sets a flag the runs read). */
let queue: Promise<unknown> = Promise.resolve();

if (isWebRank()) serveWebRank();
else scope.onmessage = receive;

function receive(e: Incoming): void {
  const { id, request, base } = e.data;
  if (request.op === 'stop') {
    lab.stop();
    scope.postMessage({ id, type: 'done', value: null });
    return;
  }
  queue = queue.then(async () => {
    try {
      lab.setWasmPath(new URL('tfjs-wasm/', base).href);
      const value = await handle(id, request);
      scope.postMessage({ id, type: 'done', value });
    } catch (err) {
      scope.postMessage({ id, type: 'error', message: (err as Error)?.message ?? String(err) });
    }
  });
}

function handle(id: number, r: Request): Promise<unknown> {
  const emit = (event: WorkerEvent) => scope.postMessage({ id, type: 'event', event });
  switch (r.op) {
    case 'init':
      return lab.init(r.backend);
    case 'zoo':
      return lab.loadZoo(r.base, r.name);
    case 'checkpoint':
      return lab.loadCheckpoint(r.name, r.bytes);
    case 'train':
      return lab.train(r.req, emit);
    case 'decode':
      return lab.decode(r.req, emit);
    case 'check':
      return lab.check(r.backend, r.kind, r.seed);
    default:
      return Promise.reject(new Error(`unknown request ${JSON.stringify(r)}`));
  }
}
