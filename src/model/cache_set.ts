/**
 * The KV caches of one decoding session: the trunk's (which includes head 1's blocks) plus one per
 * extra head or module. Decoders treat the set as one cache: every forward appends to all of them,
 * every rejection truncates all of them, and a tree step gathers the same positions in all.
 */
import { KVCache } from './kv_cache';

export class CacheSet {
  constructor(
    readonly trunk: KVCache,
    readonly extra: KVCache[] = [],
  ) {}

  /** Committed positions (all caches hold the same number). */
  get length(): number {
    return this.trunk.length;
  }

  truncate(len: number): void {
    for (const c of [this.trunk, ...this.extra]) c.truncate(len);
  }

  gather(indices: number[]): void {
    for (const c of [this.trunk, ...this.extra]) c.gather(indices);
  }

  /** Empties every cache (a context slide starts over from a fresh window). */
  reset(): void {
    for (const c of [this.trunk, ...this.extra]) c.dispose();
  }

  dispose(): void {
    this.reset();
  }
}
