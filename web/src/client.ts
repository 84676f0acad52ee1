/**
 * The page's side of the lab worker: each request is a promise of its result, with a callback for its events.
 * Also what the browser tests drive (window.mtpLab.client).
 */
import type { BackendInfo } from '../../src/backend/index';
import type { MtpKind } from '../../src/config';
import type { CheckResult, DecodeRequest, DecodeResult, LabBackend, ModelSummary, Reply, Request, StepEvent, TrainEvent, TrainRequest, TrainResult, WorkerEvent } from './protocol';

interface Pending {
  resolve(v: unknown): void;
  reject(e: Error): void;
  onEvent?: (e: WorkerEvent) => void;
}

export class LabClient {
  private readonly worker: Worker;
  private readonly pending = new Map<number, Pending>();
  private nextId = 1;

  constructor() {
    this.worker = new Worker(new URL('./worker.ts', import.meta.url), { type: 'module', name: 'mtp-lab' });
    this.worker.onmessage = (e: MessageEvent<Reply>) => this.receive(e.data);
    this.worker.onerror = (e) => {
      const err = new Error(`the lab worker failed: ${e.message || 'it could not start'}`);
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    };
  }

  init(backend: LabBackend): Promise<BackendInfo> {
    return this.send({ op: 'init', backend });
  }

  loadZoo(name: string): Promise<ModelSummary> {
    return this.send({ op: 'zoo', base: new URL('zoo/', document.baseURI).href, name });
  }

  loadCheckpoint(name: string, bytes: ArrayBuffer): Promise<ModelSummary> {
    return this.send({ op: 'checkpoint', name, bytes }, undefined, [bytes]);
  }

  train(req: TrainRequest, onEvent?: (e: TrainEvent) => void): Promise<TrainResult> {
    return this.send({ op: 'train', req }, onEvent as (e: WorkerEvent) => void);
  }

  decode(req: DecodeRequest, onEvent?: (e: StepEvent) => void): Promise<DecodeResult> {
    return this.send({ op: 'decode', req }, onEvent as (e: WorkerEvent) => void);
  }

  /** Stops the decoding or training run in flight after its current step. */
  stop(): Promise<void> {
    return this.send({ op: 'stop' });
  }

  check(backend: LabBackend, kind: MtpKind = 'parallel', seed = 7): Promise<CheckResult> {
    return this.send({ op: 'check', backend, kind, seed });
  }

  private send<T>(request: Request, onEvent?: (e: WorkerEvent) => void, transfer: Transferable[] = []): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, onEvent });
      this.worker.postMessage({ id, request, base: document.baseURI }, transfer);
    });
  }

  private receive(r: Reply): void {
    const p = this.pending.get(r.id);
    if (!p) return;
    if (r.type === 'event') p.onEvent?.(r.event);
    else {
      this.pending.delete(r.id);
      if (r.type === 'done') p.resolve(r.value);
      else p.reject(new Error(r.message));
    }
  }
}
