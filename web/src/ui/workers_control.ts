/**
 * The training panel's "workers" control: how many data-parallel ranks train (the lab worker and Web Workers beside
 * it). Its default is Node's: one per core but one, at most the batch size (src/train/worker_count.ts). It is held
 * at 1, with a line saying why, where more cannot run: a page that is not cross-origin isolated (no
 * SharedArrayBuffer), or a GPU backend (ranks run wasm or cpu).
 */
import { sharedMemoryUnavailable } from '../../../src/train/shared_memory';
import { PARALLEL_BACKENDS, workerCount } from '../../../src/train/worker_count';

export class WorkersControl {
  /** What the user chose (or the default), restored when nothing holds the control at 1. */
  private chosen: number;
  private heldAtOne = false;

  constructor(
    private readonly input: HTMLInputElement,
    private readonly note: HTMLElement,
    /** Rows per batch: the most ranks there can be. */
    batchSize: number,
  ) {
    this.chosen = workerCount({ workers: 0, batchSize }, 'wasm', navigator.hardwareConcurrency || 1);
    input.max = String(batchSize);
    input.value = String(this.chosen);
    input.addEventListener('change', () => (this.chosen = Number(input.value)));
  }

  /** Why training runs with one worker here whatever the control says, or null. */
  reason(backend: string | undefined): string | null {
    const why = sharedMemoryUnavailable();
    if (why !== null) return `Training uses 1 worker: ${why}.`;
    if (backend && !PARALLEL_BACKENDS.includes(backend)) return `Training uses 1 worker on ${backend}: data-parallel workers run on wasm or cpu.`;
    return null;
  }

  /** Shows the control for the active backend; `busy` locks it during a run. */
  update(backend: string | undefined, busy: boolean): void {
    const why = this.reason(backend);
    this.heldAtOne = why !== null;
    this.input.value = String(this.heldAtOne ? 1 : this.chosen);
    this.input.disabled = busy || this.heldAtOne;
    this.note.textContent = why ?? '';
    this.note.hidden = why === null;
  }

  /** Workers for the next run. */
  get value(): number {
    return this.heldAtOne ? 1 : Number(this.input.value);
  }
}
