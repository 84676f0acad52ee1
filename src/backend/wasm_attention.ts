/**
 * Fused multi-head attention on the `wasm` backend: softmax(scale·Q·Kᵀ + mask)·V and its gradient, each as one kernel
 * (native/attention.c) over every batch row and head.
 *
 * Why: tfjs-backend-wasm runs batched (rank-3/4) matMuls — attention's QKᵀ and P·V and their gradients — in a slow
 * generic loop, 7–12× below its 2-D XNNPACK path (https://github.com/tensorflow/tfjs/pull/2532); with the head split
 * and merge (SplitV, Transpose) and the softmax they made attention about half of a training step (docs/backends.md,
 * wasm).
 * The kernels read Q, K, V straight out of the fused projection [B·T, 3C] and write Y as [B·T, C] with heads merged,
 * so no split or transpose remains, and they skip fully masked columns (half the work under a causal mask).
 *
 * Two ops:
 *  - `fusedAttention`: self-attention of T tokens over themselves, differentiable. The forward keeps P [B, H, T, S]
 *    for the backward; tf.customGrad rather than a registered gradient, because a registered one would be handed a
 *    zero tensor the size of P for that unused second output;
 *  - `fusedCachedAttention`: T new tokens over the in-place KV cache (keys transposed [B, H, hs, cap], values
 *    [B, H, cap, hs]) holding S ≥ T positions (the new ones included), for decoding and verification; inference only.
 * Both take any additive mask [T, S] (causal, tree-shaped, …). Requires head size hs = C/H to be a multiple of 4.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { CustomGradFunc, nativeKernelsFor } from './wasm_native';

export const ATTENTION = 'MtpAttention';
export const ATTENTION_GRAD = 'MtpAttentionGrad';
export const CACHED_ATTENTION = 'MtpCachedAttention';

type KernelArgs = Parameters<tf.KernelFunc>[0];

interface AttentionAttrs {
  B: number;
  T: number;
  nHead: number;
}

interface CachedAttentionAttrs extends AttentionAttrs {
  /** Rows of the cache attended to (cache length after appending the T new ones). */
  S: number;
}

const round4 = (n: number) => (n + 3) & ~3;

/** Head geometry from qkv [B·T, 3C]. */
function geometry(qkv: tf.TensorInfo, nHead: number): { C: number; hs: number; scale: number } {
  const C = qkv.shape[1] / 3;
  const hs = C / nHead;
  return { C, hs, scale: 1 / Math.sqrt(hs) };
}

/** inputs {qkv [B·T, 3C], mask [T, T]} → [y [B·T, C], P [B, H, T, Sp]] (P kept for the gradient; Sp = T rounded up to 4). */
function attentionKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo[] {
  const { qkv, mask } = inputs as { qkv: tf.TensorInfo; mask: tf.TensorInfo };
  const { B, T, nHead } = attrs as unknown as AttentionAttrs;
  const k = nativeKernelsFor(backend);
  const wasm = backend as BackendWasm;
  const { C, hs, scale } = geometry(qkv, nHead);
  const Sp = round4(T);
  const y = wasm.makeOutput([B * T, C], 'float32');
  const P = wasm.makeOutput([B, nHead, T, Sp], 'float32');
  const scratch = k.scratch(4 * (hs * Sp + T * hs + 2 * T));
  const q = k.ptr(qkv);
  k.fn.attn_fwd(q, q + 4 * C, q + 8 * C, k.ptr(y), k.ptr(P), k.ptr(mask), B, nHead, T, T, hs,
    T * 3 * C, 3 * C, T * 3 * C, 3 * C, T * C, C, scale, scratch);
  return [y, P];
}

/** inputs {dy [B·T, C], qkv, P, mask} → dqkv [B·T, 3C]. */
function attentionGradKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo {
  const { dy, qkv, P, mask } = inputs as { dy: tf.TensorInfo; qkv: tf.TensorInfo; P: tf.TensorInfo; mask: tf.TensorInfo };
  const { B, T, nHead } = attrs as unknown as AttentionAttrs;
  const k = nativeKernelsFor(backend);
  const { C, hs, scale } = geometry(qkv, nHead);
  const Sp = round4(T);
  const dqkv = (backend as BackendWasm).makeOutput(qkv.shape, 'float32');
  const scratch = k.scratch(4 * (hs * Sp + T * Sp + 3 * T * hs + 2 * T + 2 * Math.ceil(T / 4)));
  const q = k.ptr(qkv);
  const dq = k.ptr(dqkv);
  k.fn.attn_bwd(k.ptr(dy), k.ptr(P), q, q + 4 * C, q + 8 * C, dq, dq + 4 * C, dq + 8 * C, k.ptr(mask), B, nHead, T, T,
    hs, T * 3 * C, 3 * C, T * 3 * C, 3 * C, T * C, C, scale, scratch);
  return dqkv;
}

/**
 * inputs {qkv [B·T, 3C] (its Q part), kt [B, H, hs, cap], v [B, H, cap, hs] (positions [0, S) valid), mask [T, S]}
 * → y [B·T, C].
 */
function cachedAttentionKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo {
  const { qkv, kt, v, mask } = inputs as { qkv: tf.TensorInfo; kt: tf.TensorInfo; v: tf.TensorInfo; mask: tf.TensorInfo };
  const { B, T, S, nHead } = attrs as unknown as CachedAttentionAttrs;
  const k = nativeKernelsFor(backend);
  const { C, hs, scale } = geometry(qkv, nHead);
  const cap = kt.shape[3];
  const Sp = round4(S);
  const y = (backend as BackendWasm).makeOutput([B * T, C], 'float32');
  const scratch = k.scratch(4 * (T * Sp + 2 * T));
  k.fn.attn_fwd_cached(k.ptr(qkv), k.ptr(kt), k.ptr(v), k.ptr(y), k.ptr(mask), B, nHead, T, S, hs, cap,
    T * 3 * C, 3 * C, T * C, C, scale, scratch);
  return y;
}

/** Registers the three kernels for `wasm` (idempotent). */
export function registerAttentionKernels(): void {
  const configs: tf.KernelConfig[] = [
    { kernelName: ATTENTION, backendName: 'wasm', kernelFunc: attentionKernel as unknown as tf.KernelFunc },
    { kernelName: ATTENTION_GRAD, backendName: 'wasm', kernelFunc: attentionGradKernel as unknown as tf.KernelFunc },
    { kernelName: CACHED_ATTENTION, backendName: 'wasm', kernelFunc: cachedAttentionKernel as unknown as tf.KernelFunc },
  ];
  for (const c of configs) if (tf.getKernel(c.kernelName, 'wasm') === undefined) tf.registerKernel(c);
  if (tf.getGradient(CACHED_ATTENTION) === undefined) {
    tf.registerGradient({
      kernelName: CACHED_ATTENTION,
      gradFunc: () => {
        throw new Error('attention over a KV cache has no gradient on wasm: train with forwards that use no cache');
      },
    });
  }
}

/** True when the fused kernels handle this head geometry (head size a multiple of 4). */
export function fusedAttentionSupports(C: number, nHead: number): boolean {
  return C % nHead === 0 && (C / nHead) % 4 === 0;
}

function asFloatMask(mask: tf.Tensor2D): tf.Tensor2D {
  return mask.dtype === 'float32' ? mask : (tf.cast(mask, 'float32') as tf.Tensor2D);
}

/**
 * Self-attention of T tokens: qkv [B·T, 3C] (Q, K, V side by side, heads contiguous inside each) and an additive
 * mask [T, T] → y [B·T, C], heads merged. Differentiable with respect to qkv.
 */
export function fusedAttention(qkv: tf.Tensor2D, B: number, T: number, nHead: number, mask: tf.Tensor2D): tf.Tensor2D {
  const m = asFloatMask(mask);
  const attrs = { B, T, nHead };
  const op = tf.customGrad(((x: tf.Tensor, save: tf.GradSaveFunc) => {
    const [y, P] = tf.engine().runKernel(ATTENTION, { qkv: x, mask: m }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor[];
    save([x, P, m]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) =>
        tf.engine().runKernel(ATTENTION_GRAD, { dy, qkv: saved[0], P: saved[1], mask: saved[2] }, attrs as unknown as tf.NamedAttrMap),
    };
  }) as CustomGradFunc);
  return op(qkv) as tf.Tensor2D;
}

/**
 * T new tokens attending over the in-place KV cache (wasm_kv_store.ts): qkv [B·T, 3C] supplies Q; kt [B, H, hs, cap]
 * and v [B, H, cap, hs] hold S valid positions (the T new ones already written); mask [T, S] → y [B·T, C].
 * Inference only.
 */
export function fusedCachedAttention(
  qkv: tf.Tensor2D, B: number, T: number, nHead: number, mask: tf.Tensor2D, kt: tf.Tensor4D, v: tf.Tensor4D, S: number,
): tf.Tensor2D {
  const attrs = { B, T, S, nHead };
  return tf.engine().runKernel(CACHED_ATTENTION, { qkv, kt, v, mask: asFloatMask(mask) }, attrs as unknown as tf.NamedAttrMap);
}
