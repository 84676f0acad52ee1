/**
 * The building blocks of the pre-norm decoder: LayerNorm, causal self-attention with an explicit
 * additive mask and an optional KV cache, the GELU MLP, and the residual block.
 *
 * Pure functions of tensors and a parameter map; callers wrap them in `tf.tidy`.
 * Shapes: B batch, T new tokens, S attended positions (cache + new), C width, H heads, hs = C/H.
 *
 * On the `wasm` backend with this package's kernels loaded (src/backend/wasm_native.ts), LayerNorm, attention,
 * bias + GELU and the output projections with their bias and residual add run as fused kernels with the same math;
 * on `webgpu`, LayerNorm, bias + GELU and attention run as this package's WGSL programs (backend/webgpu_train_kernels.ts);
 * everywhere else, as the plain tfjs ops written here (the reference the kernels are tested against,
 * test/kernels.test.ts, test/perf_wasm_model.test.ts and test/webgpu_train.test.ts).
 */
import * as tf from '@tensorflow/tfjs';
import { nativeKernels } from '../backend/wasm_native';
import { fusedAttention, fusedAttentionSupports, fusedCachedAttention } from '../backend/wasm_attention';
import { fusedLayerNorm } from '../backend/wasm_layer_norm';
import { fusedBiasGelu } from '../backend/wasm_bias_gelu';
import { webgpuTrainKernels } from '../backend/webgpu_train_kernels';
import { webgpuAttentionSupports } from '../backend/webgpu_train_attention';
import { fusedLinear, fusedLinearSupports } from '../backend/wasm_linear';
import { BLOCK_NAMES, BlockWeights, decodeBlockSupports, fusedDecodeBlock } from '../backend/wasm_decode_block';
import type { ParamMap } from './params';
import type { KVCache } from './kv_cache';

/** Looks a parameter up, with an error naming it when absent. */
export function param(params: ParamMap, name: string): tf.Variable {
  const p = params.get(name);
  if (!p) throw new Error(`missing parameter '${name}'`);
  return p;
}

/** LayerNorm over the last axis. x: [..., C]. */
export function layerNorm(x: tf.Tensor, g: tf.Tensor, b: tf.Tensor, eps: number): tf.Tensor {
  if (nativeKernels() || webgpuTrainKernels()) return fusedLayerNorm(x, g, b, eps);
  const mean = tf.mean(x, -1, true);
  const xc = tf.sub(x, mean);
  const variance = tf.mean(tf.square(xc), -1, true);
  return tf.add(tf.mul(tf.mul(xc, tf.rsqrt(tf.add(variance, eps))), g), b);
}

/** GELU, sigmoid approximation x·σ(1.702x) (the PyTorch twin's form). */
export function gelu(x: tf.Tensor): tf.Tensor {
  return tf.mul(x, tf.sigmoid(tf.mul(x, 1.702)));
}

export interface AttentionInput {
  /** Additive mask [T, S]: 0 where attention is allowed, a large negative number elsewhere. */
  mask: tf.Tensor2D;
  /** When present, the new K,V are appended and attention covers cache + new tokens. */
  cache?: KVCache;
  /** Layer index, for the cache. */
  layer: number;
}

/** x [rows, K] · w [K, N] (+ bias [N]) (+ residual [rows, N]): one fused kernel on wasm, plain ops elsewhere. */
export function project(x: tf.Tensor2D, w: tf.Tensor2D, bias?: tf.Tensor1D, residual?: tf.Tensor2D): tf.Tensor2D {
  if (nativeKernels() && fusedLinearSupports(w.shape[1])) return fusedLinear(x, w, bias, residual);
  let y: tf.Tensor2D = tf.matMul(x, w);
  if (bias) y = tf.add(y, bias);
  return residual ? tf.add(residual, y) : y;
}

/** Multi-head causal self-attention. x: [B, T, C] → [B, T, C]. */
export function attention(x: tf.Tensor3D, params: ParamMap, p: string, nHead: number, inp: AttentionInput): tf.Tensor3D {
  const [B, T, C] = x.shape;
  return tf.reshape(attentionRows(tf.reshape(x, [B * T, C]), B, T, params, p, nHead, inp), [B, T, C]);
}

/** attention() on rows, plus `residual` when given: x [B*T, C] → [B*T, C]. */
function attentionRows(
  x: tf.Tensor2D, B: number, T: number, params: ParamMap, p: string, nHead: number, inp: AttentionInput, residual?: tf.Tensor2D,
): tf.Tensor2D {
  const C = x.shape[1];
  const qkv = tf.matMul(x, param(params, `${p}wqkv`)) as tf.Tensor2D; // [B*T, 3C]
  const merged = attendQKV(qkv, B, T, C, nHead, inp); // [B*T, C]
  return project(merged, param(params, `${p}wo`) as tf.Tensor2D, undefined, residual);
}

/** Attention from a QKV projection: qkv [B*T, 3C] → the heads' outputs merged, [B*T, C] (fused on wasm and webgpu, plain ops elsewhere). */
export function attendQKV(qkv: tf.Tensor2D, B: number, T: number, C: number, nHead: number, inp: AttentionInput): tf.Tensor2D {
  const fused = nativeKernels() && fusedAttentionSupports(C, nHead) && fusedHeads(qkv, B, T, nHead, inp);
  if (fused) return fused;
  // on webgpu without a cache (training, evaluation): the fused programs
  if (!inp.cache && webgpuTrainKernels() && webgpuAttentionSupports(C, nHead, T)) return fusedAttention(qkv, B, T, nHead, inp.mask);
  return heads(qkv, B, T, nHead, inp);
}

/** Attention of the heads on the fused wasm kernels: qkv [B*T, 3C] → [B*T, C]; null when the cache keeps plain tensors. */
function fusedHeads(qkv: tf.Tensor2D, B: number, T: number, nHead: number, inp: AttentionInput): tf.Tensor2D | null {
  if (!inp.cache) return fusedAttention(qkv, B, T, nHead, inp.mask);
  const kv = inp.cache.appendQKV(inp.layer, qkv, B, T, nHead); // kt: [B, H, hs, cap], v: [B, H, cap, hs]; S valid
  return kv && fusedCachedAttention(qkv, B, T, nHead, inp.mask, kv.kt, kv.v, kv.S);
}

/** Attention of the heads in plain tfjs ops: qkv [B*T, 3C] → [B*T, C]. */
function heads(qkv: tf.Tensor2D, B: number, T: number, nHead: number, inp: AttentionInput): tf.Tensor2D {
  const C = qkv.shape[1] / 3;
  const hs = C / nHead;
  const [q, k, v] = tf.split(qkv, 3, 1).map(
    (t) => tf.transpose(tf.reshape(t, [B, T, nHead, hs]), [0, 2, 1, 3]) as tf.Tensor4D, // [B, H, T, hs]
  );
  const kv = inp.cache ? inp.cache.append(inp.layer, k, v) : { k, v }; // [B, H, S, hs]
  const scores = tf.mul(tf.matMul(q, kv.k, false, true), 1 / Math.sqrt(hs)); // [B, H, T, S]
  const att = tf.softmax(tf.add(scores, inp.mask)); // [B, H, T, S]
  const y = tf.matMul(att, kv.v); // [B, H, T, hs]
  return tf.reshape(tf.transpose(y, [0, 2, 1, 3]), [B * T, C]); // [B*T, C]
}

/** Position-wise MLP: C → mlpRatio·C → C with GELU. x: [B, T, C]. */
export function mlp(x: tf.Tensor3D, params: ParamMap, p: string): tf.Tensor3D {
  const [B, T, C] = x.shape;
  return tf.reshape(mlpRows(tf.reshape(x, [B * T, C]), params, p), [B, T, C]);
}

/** mlp() on rows, plus `residual` when given: x [B*T, C] → [B*T, C]. */
export function mlpRows(x: tf.Tensor2D, params: ParamMap, p: string, residual?: tf.Tensor2D): tf.Tensor2D {
  const h = tf.matMul(x, param(params, `${p}w1`)) as tf.Tensor2D; // [B*T, 4C]
  const b1 = param(params, `${p}b1`) as tf.Tensor1D;
  const g = nativeKernels() || webgpuTrainKernels() ? fusedBiasGelu(h, b1) : (gelu(tf.add(h, b1)) as tf.Tensor2D); // [B*T, 4C]
  return project(g, param(params, `${p}w2`) as tf.Tensor2D, param(params, `${p}b2`) as tf.Tensor1D, residual); // [B*T, C]
}

/** Pre-norm residual block: x + attn(LN(x)), then + mlp(LN(·)). x: [B, T, C]; works on rows [B*T, C] inside. */
export function block(x: tf.Tensor3D, params: ParamMap, p: string, nHead: number, eps: number, inp: AttentionInput): tf.Tensor3D {
  const [B, T, C] = x.shape;
  const x0 = tf.reshape(x, [B * T, C]) as tf.Tensor2D; // [B*T, C]
  const fused = decodeBlockRows(x0, params, p, nHead, eps, inp, B, T);
  if (fused) return tf.reshape(fused, [B, T, C]);
  const h1 = layerNorm(x0, param(params, `${p}ln1g`), param(params, `${p}ln1b`), eps) as tf.Tensor2D;
  const x1 = attentionRows(h1, B, T, params, p, nHead, inp, x0); // x0 + attn(h1)
  const h2 = layerNorm(x1, param(params, `${p}ln2g`), param(params, `${p}ln2b`), eps) as tf.Tensor2D;
  return tf.reshape(mlpRows(h2, params, p, x1), [B, T, C]); // x1 + mlp(h2)
}

/**
 * The block on rows x [B·T, C] as one wasm kernel over a KV cache kept in place (decoding): its output rows, or null
 * when that path does not apply (no cache, a cache of plain tensors, another backend, unsupported shapes).
 */
export function decodeBlockRows(x: tf.Tensor2D, params: ParamMap, p: string, nHead: number, eps: number, inp: AttentionInput, B: number, T: number): tf.Tensor2D | null {
  const C = x.shape[1];
  if (!inp.cache || !nativeKernels() || !decodeBlockSupports(C, nHead, param(params, `${p}w1`).shape[1] ?? 0)) return null;
  const slot = inp.cache.slotForBlock(inp.layer, B, T, nHead, C / nHead);
  if (!slot) return null;
  return fusedDecodeBlock(x, blockWeights(params, p), inp.mask, slot, T, nHead, eps);
}

/** The weights of the block whose parameters are named `<p><name>`. */
export function blockWeights(params: ParamMap, p: string): BlockWeights {
  return Object.fromEntries(BLOCK_NAMES.map((n) => [n, param(params, p + n)])) as unknown as BlockWeights;
}
