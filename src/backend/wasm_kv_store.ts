/**
 * KV-cache storage for the `wasm` backend, written in place (native/kv_cache.c): per layer the keys transposed,
 * kt [B, H, hs, cap], and the values, v [B, H, cap, hs], with spare capacity that doubles when full. These are the
 * layouts the fused cached attention (wasm_attention.ts) reads as they lie, so a decoding step transposes and copies
 * nothing. Appending T tokens writes just their 2·T·C floats per layer, truncating copies nothing, and gathering moves
 * only the kept positions. Compare concatenation, which copies the whole cache per token.
 *
 * The buffers are tfjs tensors owned by this store and never handed out, so writing into them cannot be observed by
 * other tensors; tf.memory() accounts for them. `layer(l)` hands out [B, H, S, hs] copies on request, kept until the
 * next change (the layout KVCache promises).
 */
import * as tf from '@tensorflow/tfjs';
import { emscripten, NativeKernels, nativeKernelsFor } from './wasm_native';

/** Positions a fresh buffer holds at least (capacity then doubles as needed). */
const MIN_CAPACITY = 64;

interface LayerBuffers {
  /** Keys, transposed: [B, H, hs, cap]. */
  kt: tf.Tensor4D;
  /** Values: [B, H, cap, hs]. */
  v: tf.Tensor4D;
}

export class WasmKVStore {
  private readonly bufs: (LayerBuffers | null)[];
  private readonly views: ({ k: tf.Tensor4D; v: tf.Tensor4D; length: number } | null)[];

  constructor(
    readonly nLayer: number,
    readonly nHead: number,
  ) {
    this.bufs = new Array(nLayer).fill(null);
    this.views = new Array(nLayer).fill(null);
  }

  /** The layer's buffers (positions [0, length) valid), or null before its first write. */
  buffers(layer: number): LayerBuffers | null {
    return this.bufs[layer];
  }

  /** Writes T new tokens' keys and values at positions [past, past + T) from qkv [B·T, 3C] (columns [C, 3C)). */
  writeQKV(layer: number, qkv: tf.Tensor2D, B: number, T: number, past: number): void {
    const C = qkv.shape[1] / 3;
    const hs = C / this.nHead;
    const bufs = this.reserve(layer, B, hs, past, past + T);
    const k = this.kernels();
    const src = k.ptr(qkv);
    k.fn.kv_write(src + 4 * C, T * 3 * C, 3 * C, hs, B, T, this.nHead, hs, k.ptr(bufs.kt), bufs.kt.shape[3], past, 1);
    k.fn.kv_write(src + 8 * C, T * 3 * C, 3 * C, hs, B, T, this.nHead, hs, k.ptr(bufs.v), bufs.v.shape[2], past, 0);
    this.invalidate();
  }

  /**
   * The layer's buffers with room for positions [0, rows), keeping [0, past): for a kernel that writes the new rows
   * itself (the fused decoding block). The views handed out by layer() are dropped.
   */
  slot(layer: number, B: number, hs: number, past: number, rows: number): LayerBuffers {
    const bufs = this.reserve(layer, B, hs, past, rows);
    this.invalidate();
    return bufs;
  }

  /** Writes keys and values given head-major, k, v [B, H, T, hs], at positions [past, past + T). */
  writeHeads(layer: number, k: tf.Tensor4D, v: tf.Tensor4D, past: number): void {
    const [B, H, T, hs] = k.shape;
    const bufs = this.reserve(layer, B, hs, past, past + T);
    const n = this.kernels();
    n.fn.kv_write(n.ptr(k), H * T * hs, hs, T * hs, B, T, H, hs, n.ptr(bufs.kt), bufs.kt.shape[3], past, 1);
    n.fn.kv_write(n.ptr(v), H * T * hs, hs, T * hs, B, T, H, hs, n.ptr(bufs.v), bufs.v.shape[2], past, 0);
    this.invalidate();
  }

  /** Keys and values of one layer as [B, H, length, hs] (owned by the store, valid until the next change). */
  layer(l: number, length: number): { k: tf.Tensor4D | null; v: tf.Tensor4D | null } {
    const bufs = this.bufs[l];
    if (!bufs || length === 0) return { k: null, v: null };
    if (this.views[l]?.length !== length) {
      this.dropView(l);
      const [B, H, hs] = bufs.kt.shape;
      const k = tf.keep(tf.tidy(() => tf.transpose(tf.slice(bufs.kt, [0, 0, 0, 0], [B, H, hs, length]), [0, 1, 3, 2]) as tf.Tensor4D));
      const v = tf.keep(tf.slice(bufs.v, [0, 0, 0, 0], [B, H, length, hs]));
      this.views[l] = { k, v, length };
    }
    return this.views[l]!;
  }

  /** Keeps positions `indices` (in that order) as positions [0, indices.length). */
  gather(indices: number[]): void {
    const n = indices.length;
    const k = this.kernels();
    for (const bufs of this.bufs) {
      if (!bufs) continue;
      const [B, H, hs, cap] = bufs.kt.shape;
      const idx = k.scratch(4 * (n + n * hs));
      emscripten(k.backend).HEAP32.set(indices, idx >> 2);
      k.fn.kv_gather(k.ptr(bufs.kt), B * H * hs, 1, cap, idx, n, idx + 4 * n);
      k.fn.kv_gather(k.ptr(bufs.v), B * H, hs, cap, idx, n, idx + 4 * n);
    }
    this.invalidate();
  }

  /** Drops the copies handed out by layer() (call whenever the valid positions change). */
  invalidate(): void {
    for (let l = 0; l < this.nLayer; l++) this.dropView(l);
  }

  dispose(): void {
    this.invalidate();
    for (let l = 0; l < this.nLayer; l++) {
      const bufs = this.bufs[l];
      if (bufs) tf.dispose([bufs.kt, bufs.v]);
      this.bufs[l] = null;
    }
  }

  private dropView(l: number): void {
    const view = this.views[l];
    if (view) tf.dispose([view.k, view.v]);
    this.views[l] = null;
  }

  /** The layer's buffers with room for `rows` positions, keeping positions [0, keep); allocated or grown as needed. */
  private reserve(layer: number, B: number, hs: number, keep: number, rows: number): LayerBuffers {
    const H = this.nHead;
    const old = this.bufs[layer];
    const fits = old !== null && old.kt.shape[0] === B && old.kt.shape[2] === hs;
    if (old && !fits && keep > 0) {
      const [b0, , hs0] = old.kt.shape;
      throw new Error(`KVCache: layer ${layer} holds batch ${b0} × head size ${hs0}; cannot append batch ${B} × head size ${hs}`);
    }
    if (fits && old!.kt.shape[3] >= rows) return old!;
    const prevCap = fits ? old!.kt.shape[3] : 0;
    const cap = Math.max(MIN_CAPACITY, 2 * prevCap, Math.ceil(rows / 16) * 16);
    const next: LayerBuffers = {
      kt: tf.keep(tf.zeros([B, H, hs, cap], 'float32')) as tf.Tensor4D,
      v: tf.keep(tf.zeros([B, H, cap, hs], 'float32')) as tf.Tensor4D,
    };
    if (old && fits && keep > 0) {
      const k = this.kernels();
      const heap = k.heapF32();
      const [ktFrom, ktTo, vFrom, vTo] = [old.kt, next.kt, old.v, next.v].map((t) => k.ptr(t) >> 2);
      for (let s = 0; s < B * H * hs; s++) heap.copyWithin(ktTo + s * cap, ktFrom + s * prevCap, ktFrom + s * prevCap + keep);
      for (let s = 0; s < B * H; s++) heap.copyWithin(vTo + s * cap * hs, vFrom + s * prevCap * hs, vFrom + (s * prevCap + keep) * hs);
    }
    if (old) tf.dispose([old.kt, old.v]);
    this.bufs[layer] = next;
    return next;
  }

  private kernels(): NativeKernels {
    return nativeKernelsFor(tf.backend());
  }
}
