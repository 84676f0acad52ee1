/**
 * Key/value cache for incremental decoding: per layer K and V, seen as [B, H, S, hs].
 *
 * Operations used by the decoders:
 * - `append` (done by the attention layer during a forward over new tokens),
 * - `truncate(len)` to drop rejected draft tokens,
 * - `gather(indices)` to keep an accepted tree path (Medusa) contiguous after the prefix.
 * The cache owns its tensors (they survive `tf.tidy`) and disposes replaced ones immediately.
 *
 * Storage depends on the backend active at the first append after creation or `dispose()`:
 * - `wasm` with this package's kernels loaded: buffers with spare capacity written in place (WasmKVStore), read by
 *   the fused attention where they lie; appending T tokens costs O(T), truncating nothing;
 * - `webgpu` when the first forward is a fused decoding forward (backend/webgpu_decode.ts): one GPU buffer written in
 *   place by those programs (WebGpuKVStore); later forwards on this cache must be fused too;
 * - any other backend: plain tensors [B, H, S, hs], grown by concatenation (a copy of the layer per append).
 */
import * as tf from '@tensorflow/tfjs';
import { nativeKernels } from '../backend/wasm_native';
import { WasmKVStore } from '../backend/wasm_kv_store';
import type { GpuDecodeModel, WebGpuKVStore } from '../backend/webgpu_decode';

/** Plain-tensor storage: per layer K, V [B, H, S, hs]. */
class TensorKVStore {
  private ks: (tf.Tensor4D | null)[];
  private vs: (tf.Tensor4D | null)[];

  constructor(readonly nLayer: number) {
    this.ks = new Array(nLayer).fill(null);
    this.vs = new Array(nLayer).fill(null);
  }

  append(layer: number, k: tf.Tensor4D, v: tf.Tensor4D): { k: tf.Tensor4D; v: tf.Tensor4D } {
    const oldK = this.ks[layer];
    const oldV = this.vs[layer];
    const newK = oldK ? (tf.concat([oldK, k], 2) as tf.Tensor4D) : k.clone();
    const newV = oldV ? (tf.concat([oldV, v], 2) as tf.Tensor4D) : v.clone();
    this.ks[layer] = tf.keep(newK);
    this.vs[layer] = tf.keep(newV);
    oldK?.dispose();
    oldV?.dispose();
    return { k: newK, v: newV };
  }

  truncate(len: number): void {
    this.replace((t) => (len === 0 ? null : t.slice([0, 0, 0, 0], [-1, -1, len, -1])));
  }

  gather(indices: number[]): void {
    const idx = tf.tensor1d(indices, 'int32');
    this.replace((t) => (indices.length === 0 ? null : (tf.gather(t, idx, 2) as tf.Tensor4D)));
    idx.dispose();
  }

  layer(l: number): { k: tf.Tensor4D | null; v: tf.Tensor4D | null } {
    return { k: this.ks[l], v: this.vs[l] };
  }

  dispose(): void {
    for (const t of [...this.ks, ...this.vs]) t?.dispose();
    this.ks.fill(null);
    this.vs.fill(null);
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

export class KVCache {
  private store: TensorKVStore | WasmKVStore | WebGpuKVStore | null = null;
  /** Committed sequence length S (positions 0..S-1 hold entries). */
  private len = 0;
  /** Layers written during the current forward (appends are committed once every layer did its own). */
  private pending = 0;

  constructor(readonly nLayer: number) {}

  get length(): number {
    return this.len;
  }

  /**
   * Appends new keys/values [B, H, T, hs] for one layer and returns the full K, V [B, H, S+T, hs].
   * Called by attention inside a forward; the length advances once every layer has appended.
   * On in-place storage the returned tensors are copies made on request, owned by the cache (as layer() gives).
   */
  append(layer: number, k: tf.Tensor4D, v: tf.Tensor4D): { k: tf.Tensor4D; v: tf.Tensor4D } {
    const T = k.shape[2];
    const store = this.storeFor(k.shape[1]);
    if (isGpuStore(store)) throw new Error('KVCache: this cache lives on the GPU for fused decoding forwards (backend/webgpu_decode.ts); it cannot take tensors appended by plain ops');
    if (store instanceof TensorKVStore) {
      const out = store.append(layer, k, v);
      this.advance(T);
      return out;
    }
    store.writeHeads(layer, k, v, this.len);
    const S = this.len + T;
    this.advance(T);
    return {
      get k() {
        return store.layer(layer, S).k!;
      },
      get v() {
        return store.layer(layer, S).v!;
      },
    };
  }

  /**
   * The in-place path of the fused wasm attention: writes the new tokens' K, V from the QKV projection
   * qkv [B·T, 3C] and returns the layer's buffers (keys transposed [B, H, hs, cap], values [B, H, cap, hs]) with
   * S = length + T valid positions. Null when this cache keeps plain tensors (then attention uses `append`).
   */
  appendQKV(layer: number, qkv: tf.Tensor2D, B: number, T: number, nHead: number): { kt: tf.Tensor4D; v: tf.Tensor4D; S: number } | null {
    const store = this.storeFor(nHead);
    if (!(store instanceof WasmKVStore)) return null;
    store.writeQKV(layer, qkv, B, T, this.len);
    const S = this.len + T;
    this.advance(T);
    return { ...store.buffers(layer)!, S };
  }

  /**
   * The in-place path of the fused wasm decoding block: room for T new tokens of one layer, which the block's kernel
   * writes at position `past` itself; returns the layer's buffers (keys transposed [B, H, hs, cap], values
   * [B, H, cap, hs]) and S = past + T valid positions. Null when this cache keeps plain tensors.
   */
  slotForBlock(layer: number, B: number, T: number, nHead: number, hs: number): { kt: tf.Tensor4D; v: tf.Tensor4D; past: number; S: number } | null {
    const store = this.storeFor(nHead);
    if (!(store instanceof WasmKVStore)) return null;
    const past = this.len;
    const bufs = store.slot(layer, B, hs, past, past + T);
    this.advance(T);
    return { ...bufs, past, S: past + T };
  }

  /**
   * The GPU store of the fused webgpu decoding forwards (made on first use, for `model`), or null when this cache
   * already keeps its entries another way.
   */
  gpuStore(model: GpuDecodeModel): WebGpuKVStore | null {
    if (this.store === null) this.store = model.newStore();
    return isGpuStore(this.store) ? this.store : null;
  }

  /** Records that a fused forward wrote T new positions into layers [from, to). */
  advanceLayers(from: number, to: number, T: number): void {
    for (let l = from; l < to; l++) this.advance(T);
  }

  /** Keeps the first `len` positions. */
  truncate(len: number): void {
    if (!Number.isInteger(len) || len < 0 || len > this.len) {
      throw new Error(`KVCache.truncate: length must be an integer in [0, ${this.len}], got ${len}`);
    }
    if (len === this.len) return;
    if (this.store instanceof TensorKVStore) this.store.truncate(len);
    else if (this.store instanceof WasmKVStore) this.store.invalidate();
    this.len = len;
  }

  /** Keeps the positions `indices` (in that order), e.g. prefix + accepted tree path. */
  gather(indices: number[]): void {
    for (const i of indices) {
      if (!Number.isInteger(i) || i < 0 || i >= this.len) {
        throw new Error(`KVCache.gather: indices must be integers in [0, ${this.len}), got ${i}`);
      }
    }
    if (this.store instanceof TensorKVStore) this.store.gather(indices);
    else this.store?.gather(indices);
    this.len = indices.length;
  }

  /** Cached keys and values of one layer [B, H, S, hs] (null when empty), owned by the cache. */
  layer(l: number): { k: tf.Tensor4D | null; v: tf.Tensor4D | null } {
    if (!this.store) return { k: null, v: null };
    if (isGpuStore(this.store)) return this.len === 0 ? { k: null, v: null } : this.store.layer(l, this.len);
    return this.store instanceof TensorKVStore ? this.store.layer(l) : this.store.layer(l, this.len);
  }

  /** Releases every tensor; the cache is empty afterwards. */
  dispose(): void {
    this.store?.dispose();
    this.store = null;
    this.len = 0;
    this.pending = 0;
  }

  /** The storage, chosen at the first append by the backend then active. */
  private storeFor(nHead: number): TensorKVStore | WasmKVStore | WebGpuKVStore {
    this.store ??= nativeKernels() ? new WasmKVStore(this.nLayer, nHead) : new TensorKVStore(this.nLayer);
    return this.store;
  }

  private advance(T: number): void {
    this.pending += 1;
    if (this.pending === this.nLayer) {
      this.pending = 0;
      this.len += T;
    }
  }
}

/** Whether a store is the GPU one (checked by shape, so that this module does not load the webgpu code). */
function isGpuStore(s: unknown): s is WebGpuKVStore {
  return s !== null && typeof s === 'object' && 'owner' in s && 'buffer' in s;
}
