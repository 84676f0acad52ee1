/**
 * A whole transformer block of a decoding forward as one tfjs kernel on `wasm`: the same native routines the block's
 * fused ops call one kernel each (LayerNorm, the QKV product, the in-place KV-cache write, attention over the cache,
 * the output projection with its residual, LayerNorm, the MLP product, bias + GELU, the second product with its bias
 * and residual), called in the same order on the same inputs, so the result has the same bits. What it saves is the
 * per-kernel cost of the tfjs engine (≈ 10 kernels and their tensors per block): a decoding forward of a small model is
 * mostly that cost, and a speculative step adds the drafter's own forwards to it.
 *
 * Decoding only (a KV cache kept in place, no gradient); layers.ts uses it when the cache and the shapes allow.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { fusedAttentionSupports } from './wasm_attention';
import { fusedLinearSupports } from './wasm_linear';
import { nativeKernelsFor } from './wasm_native';

export const DECODE_BLOCK = 'MtpDecodeBlock';

/** tfjs flag: false runs decoding blocks op by op (for comparisons within one process). */
export const DECODE_BLOCK_FLAG = 'MTP_WASM_DECODE_BLOCK';
tf.env().registerFlag(DECODE_BLOCK_FLAG, () => true);

interface DecodeBlockAttrs {
  /** Rows per batch entry (new tokens). */
  T: number;
  nHead: number;
  eps: number;
  /** Cache positions before the new tokens, and attended positions after them. */
  past: number;
  S: number;
}

type KernelArgs = Parameters<tf.KernelFunc>[0];

const round4 = (n: number) => (n + 3) & ~3;

/** The block's weights, by their names in layers.ts. */
export interface BlockWeights {
  ln1g: tf.Tensor;
  ln1b: tf.Tensor;
  wqkv: tf.Tensor;
  wo: tf.Tensor;
  ln2g: tf.Tensor;
  ln2b: tf.Tensor;
  w1: tf.Tensor;
  b1: tf.Tensor;
  w2: tf.Tensor;
  b2: tf.Tensor;
}

function decodeBlockKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo {
  const w = inputs as unknown as Record<keyof BlockWeights | 'x' | 'mask' | 'kt' | 'v', tf.TensorInfo>;
  const { T, nHead: H, eps, past, S } = attrs as unknown as DecodeBlockAttrs;
  const k = nativeKernelsFor(backend);
  const [R, C] = w.x.shape;
  const B = R / T;
  const F = w.w1.shape[1];
  const hs = C / H;
  const cap = w.kt.shape[3];
  const out = (backend as BackendWasm).makeOutput([R, C], 'float32');
  // scratch, in floats: h [R, C] | qkv [R, 3C] | att [R, C] | x1 [R, C] | hid [R, F] | g [R, F] | stats [2R] | attention | gemm
  const attnFloats = T * round4(S) + 2 * T;
  const gemmFloats = k.fn.gemm_scratch(Math.max(3 * C, F, C));
  const sizes = [R * C, 3 * R * C, R * C, R * C, R * F, R * F, 2 * R, attnFloats, gemmFloats].map(round4);
  const base = k.scratch(4 * sizes.reduce((a, b) => a + b, 0));
  const [h, qkv, att, x1, hid, g, stats, as, gs] = sizes.reduce<number[]>((at, _, i) => [...at, i === 0 ? base : at[i - 1] + 4 * sizes[i - 1]], []);
  const p = (t: tf.TensorInfo) => k.ptr(t);
  const f = k.fn;
  f.ln_fwd(p(w.x), p(w.ln1g), p(w.ln1b), h, stats, R, C, eps);
  f.gemm(h, p(w.wqkv), qkv, R, 3 * C, C, 0, 0, 0, 0, gs);
  f.kv_write(qkv + 4 * C, T * 3 * C, 3 * C, hs, B, T, H, hs, p(w.kt), cap, past, 1);
  f.kv_write(qkv + 8 * C, T * 3 * C, 3 * C, hs, B, T, H, hs, p(w.v), cap, past, 0);
  f.attn_fwd_cached(qkv, p(w.kt), p(w.v), att, p(w.mask), B, H, T, S, hs, cap, T * 3 * C, 3 * C, T * C, C, 1 / Math.sqrt(hs), as);
  f.gemm(att, p(w.wo), x1, R, C, C, 0, 0, 0, p(w.x), gs);
  f.ln_fwd(x1, p(w.ln2g), p(w.ln2b), h, stats, R, C, eps);
  f.gemm(h, p(w.w1), hid, R, F, C, 0, 0, 0, 0, gs);
  f.bias_gelu_fwd(hid, p(w.b1), g, R, F);
  f.gemm(g, p(w.w2), p(out), R, C, F, 0, 0, p(w.b2), x1, gs);
  return out;
}

/** Registers the kernel (and a gradient that refuses: decoding only). Idempotent. */
export function registerDecodeBlockKernel(): void {
  if (tf.getKernel(DECODE_BLOCK, 'wasm') === undefined) {
    tf.registerKernel({ kernelName: DECODE_BLOCK, backendName: 'wasm', kernelFunc: decodeBlockKernel as unknown as tf.KernelFunc });
  }
  if (tf.getGradient(DECODE_BLOCK) === undefined) {
    tf.registerGradient({
      kernelName: DECODE_BLOCK,
      gradFunc: () => {
        throw new Error('the fused decoding block has no gradient: train with forwards that use no KV cache');
      },
    });
  }
}

/** True when a block of width C, nHead heads and MLP width F can run as one kernel. */
export function decodeBlockSupports(C: number, nHead: number, F: number): boolean {
  return tf.env().getBool(DECODE_BLOCK_FLAG) && fusedAttentionSupports(C, nHead) && fusedLinearSupports(C) && fusedLinearSupports(3 * C) && fusedLinearSupports(F);
}

/**
 * x [B·T, C] → the block's output [B·T, C], appending the T new tokens' keys and values at `slot.past` in the cache
 * buffers (kt [B, H, hs, cap], v [B, H, cap, hs]); mask [T, S] additive, float32.
 */
export function fusedDecodeBlock(
  x: tf.Tensor2D, weights: BlockWeights, mask: tf.Tensor2D, slot: { kt: tf.Tensor4D; v: tf.Tensor4D; past: number; S: number }, T: number, nHead: number, eps: number,
): tf.Tensor2D {
  const attrs: DecodeBlockAttrs = { T, nHead, eps, past: slot.past, S: slot.S };
  const m = mask.dtype === 'float32' ? mask : tf.cast(mask, 'float32');
  return tf.engine().runKernel(DECODE_BLOCK, { x, mask: m, kt: slot.kt, v: slot.v, ...weights } as unknown as tf.NamedTensorMap, attrs as unknown as tf.NamedAttrMap) as tf.Tensor2D;
}
