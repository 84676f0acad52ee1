/**
 * Key/value cache for incremental decoding: per layer K and V of shape [B, H, S, hs].
 *
 * Operations used by the decoders:
 * - `append` (done by the attention layer during a forward over new tokens),
 * - `truncate(len)` to drop rejected draft tokens,
 * - `gather(indices)` to keep an accepted tree path (Medusa) contiguous after the prefix.
 * The cache owns its tensors (they survive `tf.tidy`) and disposes replaced ones immediately.
 */
import * as tf from '@tensorflow/tfjs';

export class KVCache {
  private ks: (tf.Tensor4D | null)[];
  private vs: (tf.Tensor4D | null)[];
  /** Committed sequence length S (positions 0..S-1 hold entries). */
  private len = 0;
  /** Layers written during the current forward (appends are committed once every layer did its own). */
  private pending = 0;

  constructor(readonly nLayer: number) {
    this.ks = new Array(nLayer).fill(null);
    this.vs = new Array(nLayer).fill(null);
  }

  get length(): number {
    return this.len;
  }

  /**
   * Appends new keys/values [B, H, T, hs] for one layer and returns the full K, V [B, H, S+T, hs].
   * Called by attention inside a forward; the length advances once every layer has appended.
   */
  append(layer: number, k: tf.Tensor4D, v: tf.Tensor4D): { k: tf.Tensor4D; v: tf.Tensor4D } {
    const oldK = this.ks[layer];
    const oldV = this.vs[layer];
    const newK = oldK ? (tf.concat([oldK, k], 2) as tf.Tensor4D) : k.clone();
    const newV = oldV ? (tf.concat([oldV, v], 2) as tf.Tensor4D) : v.clone();
    this.ks[layer] = tf.keep(newK);
    this.vs[layer] = tf.keep(newV);
    oldK?.dispose();
    oldV?.dispose();
    this.pending += 1;
    if (this.pending === this.nLayer) {
      this.pending = 0;
      this.len = newK.shape[2];
    }
    return { k: newK, v: newV };
  }

  /** Keeps the first `len` positions. */
  truncate(len: number): void {
    if (!Number.isInteger(len) || len < 0 || len > this.len) {
      throw new Error(`KVCache.truncate: length must be an integer in [0, ${this.len}], got ${len}`);
    }
    if (len === this.len) return;
    this.replace((t) => (len === 0 ? null : t.slice([0, 0, 0, 0], [-1, -1, len, -1])));
    this.len = len;
  }

  /** Keeps the positions `indices` (in that order), e.g. prefix + accepted tree path. */
  gather(indices: number[]): void {
    for (const i of indices) {
      if (!Number.isInteger(i) || i < 0 || i >= this.len) {
        throw new Error(`KVCache.gather: indices must be integers in [0, ${this.len}), got ${i}`);
      }
    }
    const idx = tf.tensor1d(indices, 'int32');
    this.replace((t) => (indices.length === 0 ? null : (tf.gather(t, idx, 2) as tf.Tensor4D)));
    idx.dispose();
    this.len = indices.length;
  }

  /** Cached keys and values of one layer (null when empty). */
  layer(l: number): { k: tf.Tensor4D | null; v: tf.Tensor4D | null } {
    return { k: this.ks[l], v: this.vs[l] };
  }

  /** Releases every tensor; the cache is empty afterwards. */
  dispose(): void {
    for (const t of [...this.ks, ...this.vs]) t?.dispose();
    this.ks.fill(null);
    this.vs.fill(null);
    this.len = 0;
    this.pending = 0;
  }

  private replace(fn: (t: tf.Tensor4D) => tf.Tensor4D | null): void {
    for (const arr of [this.ks, this.vs]) {
      for (let l = 0; l < arr.length; l++) {
        const old = arr[l];
        if (!old) continue;
        const next = fn(old);
        arr[l] = next ? tf.keep(next) : null;
        old.dispose();
      }
    }
  }
}
