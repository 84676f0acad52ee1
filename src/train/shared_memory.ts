/**
 * Whether this JavaScript context can train data-parallel (shared_step.ts): SharedArrayBuffer, Atomics.waitAsync (rank
 * 0's barrier) and threads to start. Node has all three; a browser gives SharedArrayBuffer only to a cross-origin
 * isolated page (and its workers), one served with `Cross-Origin-Opener-Policy: same-origin` and
 * `Cross-Origin-Embedder-Policy: require-corp`.
 */

/** Why data-parallel ranks cannot share memory here, or null when they can. */
export function sharedMemoryUnavailable(): string | null {
  const g = globalThis as { crossOriginIsolated?: boolean; SharedArrayBuffer?: unknown; Worker?: unknown; process?: { versions?: { node?: string } } };
  if (typeof g.SharedArrayBuffer !== 'function' || g.crossOriginIsolated === false) {
    return 'the page is not cross-origin isolated, so SharedArrayBuffer is unavailable (its server must send Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp)';
  }
  if (typeof (Atomics as { waitAsync?: unknown }).waitAsync !== 'function') return 'this JavaScript engine lacks Atomics.waitAsync, which rank 0 waits with';
  if (typeof g.process?.versions?.node !== 'string' && typeof g.Worker !== 'function') return 'Web Workers cannot be started from this context';
  return null;
}
