/**
 * The building blocks of the pre-norm decoder: LayerNorm, causal self-attention with an explicit
 * additive mask and an optional KV cache, the GELU MLP, and the residual block.
 *
 * Pure functions of tensors and a parameter map; callers wrap them in `tf.tidy`.
 * Shapes: B batch, T new tokens, S attended positions (cache + new), C width, H heads, hs = C/H.
 */
import * as tf from '@tensorflow/tfjs';
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

/** Multi-head causal self-attention. x: [B, T, C] → [B, T, C]. */
export function attention(x: tf.Tensor3D, params: ParamMap, p: string, nHead: number, inp: AttentionInput): tf.Tensor3D {
  const [B, T, C] = x.shape;
  const hs = C / nHead;
  const qkv = tf.matMul(tf.reshape(x, [B * T, C]), param(params, `${p}wqkv`)); // [B*T, 3C]
  const [q, k, v] = tf.split(qkv, 3, 1).map(
    (t) => tf.transpose(tf.reshape(t, [B, T, nHead, hs]), [0, 2, 1, 3]) as tf.Tensor4D, // [B, H, T, hs]
  );
  const kv = inp.cache ? inp.cache.append(inp.layer, k, v) : { k, v }; // [B, H, S, hs]
  const scores = tf.mul(tf.matMul(q, kv.k, false, true), 1 / Math.sqrt(hs)); // [B, H, T, S]
  const att = tf.softmax(tf.add(scores, inp.mask)); // [B, H, T, S]
  const y = tf.matMul(att, kv.v); // [B, H, T, hs]
  const merged = tf.reshape(tf.transpose(y, [0, 2, 1, 3]), [B * T, C]); // [B*T, C]
  return tf.reshape(tf.matMul(merged, param(params, `${p}wo`)), [B, T, C]);
}

/** Position-wise MLP: C → mlpRatio·C → C with GELU. x: [B, T, C]. */
export function mlp(x: tf.Tensor3D, params: ParamMap, p: string): tf.Tensor3D {
  const [B, T, C] = x.shape;
  const h = tf.add(tf.matMul(tf.reshape(x, [B * T, C]), param(params, `${p}w1`)), param(params, `${p}b1`)); // [B*T, 4C]
  const out = tf.add(tf.matMul(gelu(h) as tf.Tensor2D, param(params, `${p}w2`)), param(params, `${p}b2`)); // [B*T, C]
  return tf.reshape(out, [B, T, C]);
}

/** Pre-norm residual block: x + attn(LN(x)), then + mlp(LN(·)). x: [B, T, C]. */
export function block(x: tf.Tensor3D, params: ParamMap, p: string, nHead: number, eps: number, inp: AttentionInput): tf.Tensor3D {
  const h1 = layerNorm(x, param(params, `${p}ln1g`), param(params, `${p}ln1b`), eps) as tf.Tensor3D;
  const x1 = tf.add(x, attention(h1, params, p, nHead, inp)) as tf.Tensor3D;
  const h2 = layerNorm(x1, param(params, `${p}ln2g`), param(params, `${p}ln2b`), eps) as tf.Tensor3D;
  return tf.add(x1, mlp(h2, params, p)) as tf.Tensor3D;
}
