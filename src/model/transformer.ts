/**
 * The reference decoder-only transformer: the trunk every MTP variant shares.
 *
 * Pre-norm GPT: token + learned position embeddings, nLayer residual blocks, final LayerNorm,
 * unembedding (untied by default, tied to the token embedding when configured). Attention takes an
 * explicit additive mask and explicit position ids, so tree decoding can give tokens non-contiguous
 * positions and a tree-shaped mask; with a KV cache, a forward over T new tokens attends to the
 * cached S₀ positions plus the new ones.
 */
import * as tf from '@tensorflow/tfjs';
import type { ModelConfig } from '../config';
import { validateModel } from '../config';
import { Rng } from '../util/rng';
import { KVCache } from './kv_cache';
import { DecodeShape, FusedForward, gpuDecodeModel, webgpuBackend } from '../backend/webgpu_decode';
import { block, decodeBlockRows, layerNorm, param } from './layers';
import { webgpuTrainKernels } from '../backend/webgpu_train_kernels';
import { fusedCrossEntropy } from '../backend/webgpu_train_cross_entropy';
import { createTrunkParams, nextScope, ParamFactory, ParamMap } from './params';

/** Additive mask value for blocked attention (finite, so fully-masked rows stay finite). */
export const MASKED = -1e9;

export interface ForwardOptions {
  /** Cache to attend to and append the new tokens' K,V to. */
  cache?: KVCache;
  /** Position ids of the new tokens [T]; default: cache length + 0..T-1. */
  positions?: number[];
  /** Additive mask [T, S] with S = cache length + T; default: causal. */
  mask?: tf.Tensor2D;
}

export class Transformer {
  readonly params: ParamMap;
  readonly scope: string;
  /** Causal additive mask [blockSize, blockSize], sliced per call. */
  private readonly causal: tf.Tensor2D;
  /** Medusa heads the fused webgpu decoding programs also hold (set by MedusaModel); 0 for none. */
  decodeHeads = 0;

  /** Creates the trunk's parameters; pass a factory to add them to a variant's shared map. */
  constructor(readonly config: ModelConfig, factory?: ParamFactory) {
    validateModel(config);
    const f = factory ?? new ParamFactory(new Map(), new Rng(config.seed), nextScope('gpt'));
    this.params = f.params;
    this.scope = f.scope;
    createTrunkParams(config, f);
    this.causal = causalMask(config.blockSize);
  }

  /** Fresh, empty KV cache for this model. */
  newCache(): KVCache {
    return new KVCache(this.config.nLayer);
  }

  /**
   * Token + position embeddings of new tokens, and the additive mask they attend with.
   * tokens: [B, T] int32 → x: [B, T, C], mask: [T, S] with S = cache length + T.
   */
  embed(tokens: tf.Tensor2D, opts: ForwardOptions = {}): { x: tf.Tensor3D; mask: tf.Tensor2D } {
    const { blockSize } = this.config;
    const T = tokens.shape[1];
    const past = opts.cache ? opts.cache.length : 0;
    const positions = opts.positions ?? Array.from({ length: T }, (_, i) => past + i);
    if (positions.length !== T) throw new Error(`positions has ${positions.length} entries for ${T} tokens`);
    for (const p of positions) {
      if (!Number.isInteger(p) || p < 0 || p >= blockSize) {
        throw new Error(`position ${p} outside the position table [0, ${blockSize}); decoders must slide the context`);
      }
    }
    const S = past + T;
    let mask = opts.mask;
    if (mask) {
      if (mask.shape[0] !== T || mask.shape[1] !== S) throw new Error(`mask must be [${T}, ${S}], got [${mask.shape}]`);
    } else {
      mask = this.causalMask(past, T);
    }
    const pos = tf.tensor1d(positions, 'int32');
    // [B, T, C] = token embedding + position embedding (broadcast over B)
    const x = tf.add(tf.gather(param(this.params, 'tokEmb'), tokens), tf.gather(param(this.params, 'posEmb'), pos)) as tf.Tensor3D;
    return { x, mask };
  }

  /** Causal additive mask [T, past + T] for T new tokens after `past` cached ones. */
  causalMask(past: number, T: number): tf.Tensor2D {
    if (past + T > this.config.blockSize) throw new Error(`sequence of ${past + T} tokens exceeds blockSize ${this.config.blockSize}`);
    return this.causal.slice([past, 0], [T, past + T]);
  }

  /** Blocks [from, to) over x: [B, T, C] → [B, T, C], appending to the cache's layers when given. */
  blocks(x: tf.Tensor3D, mask: tf.Tensor2D, from: number, to: number, cache?: KVCache): tf.Tensor3D {
    const { nHead, normEps } = this.config;
    const [B, T, C] = x.shape;
    if (cache && B === 1 && from < to) {
      // decoding on webgpu: the fused programs, two per block
      const fused = this.decodeFused(cache, { x: tf.reshape(x, [T, C]), mask, from, to, taps: [to], head: false });
      if (fused) return tf.reshape(fused.features, [1, T, C]) as tf.Tensor3D;
    }
    let l = from;
    if (cache && from < to) {
      // decoding on wasm: each block one kernel, on rows [B·T, C] from the first block to the last
      let rows = tf.reshape(x, [B * T, C]) as tf.Tensor2D;
      for (let next: tf.Tensor2D | null; l < to && (next = decodeBlockRows(rows, this.params, `l${l}.`, nHead, normEps, { mask, cache, layer: l }, B, T)); l++) rows = next;
      if (l > from) x = tf.reshape(rows, [B, T, C]) as tf.Tensor3D;
    }
    for (; l < to; l++) x = block(x, this.params, `l${l}.`, nHead, normEps, { mask, cache, layer: l });
    return x;
  }

  /**
   * Runs embeddings and every block over new tokens. tokens: [B, T] int32 → z: [B, T, C] (before
   * the final norm). Appends to `cache` when given.
   */
  trunk(tokens: tf.Tensor2D, opts: ForwardOptions = {}): tf.Tensor3D {
    const { x, mask } = this.embed(tokens, opts);
    return this.blocks(x, mask, 0, this.config.nLayer, opts.cache);
  }

  /** Final norm + unembedding. z: [B, T, C] → logits [B, T, V]. */
  unembed(z: tf.Tensor3D): tf.Tensor3D {
    const [B, T, C] = z.shape;
    const h = layerNorm(z, param(this.params, 'lnfg'), param(this.params, 'lnfb'), this.config.normEps);
    const flat = tf.reshape(h, [B * T, C]) as tf.Tensor2D;
    const logits = this.config.tieEmbeddings
      ? tf.matMul(flat, param(this.params, 'tokEmb'), false, true)
      : tf.matMul(flat, param(this.params, 'head')); // [B*T, V]
    return tf.reshape(logits, [B, T, this.config.vocabSize]);
  }

  /** The model's shape for the fused webgpu decoding programs. */
  decodeShape(): DecodeShape {
    const c = this.config;
    return { vocab: c.vocabSize, positions: c.blockSize, nLayer: c.nLayer, C: c.nEmbd, nHead: c.nHead, F: c.mlpRatio * c.nEmbd, tied: c.tieEmbeddings, eps: c.normEps, draftInput: false, medusaHeads: this.decodeHeads };
  }

  /**
   * A decoding forward as the fused webgpu programs (backend/webgpu_decode.ts), appending to `cache`: the features
   * [T, width] (the rows after each block in `taps`, side by side, or the normalised last rows) and, with `head`, the
   * logits [T, V]. Null where that path does not apply (another backend, a cache kept as tensors, shapes the device
   * cannot hold); callers then run the plain ops. Call inside tf.tidy.
   */
  decodeFused(cache: KVCache, f: FusedForward): { features: tf.Tensor2D; logits: tf.Tensor2D | null } | null {
    if (!webgpuBackend()) return null;
    if (f.taps.some((t) => !Number.isInteger(t) || t <= f.from || t > f.to) || new Set(f.taps).size !== f.taps.length) return null;
    const T = f.tokens?.length ?? f.x!.shape[0];
    if (T === 0) return null;
    if (f.tokens) {
      const positions = f.positions ?? f.tokens.map((_, i) => cache.length + i);
      if (positions.length !== T) throw new Error(`positions has ${positions.length} entries for ${T} tokens`);
      for (const p of positions) {
        if (!Number.isInteger(p) || p < 0 || p >= this.config.blockSize) throw new Error(`position ${p} outside the position table [0, ${this.config.blockSize}); decoders must slide the context`);
      }
      for (const t of f.tokens) if (!Number.isInteger(t) || t < 0 || t >= this.config.vocabSize) throw new Error(`token ${t} is outside the vocabulary [0, ${this.config.vocabSize})`);
    }
    if (f.mask && (f.mask.shape[0] !== T || f.mask.shape[1] !== cache.length + T)) throw new Error(`mask must be [${T}, ${cache.length + T}], got [${f.mask.shape}]`);
    const model = gpuDecodeModel(this.params, this.decodeShape());
    const store = model && cache.gpuStore(model);
    if (!model || !store) return null;
    const out = model.forward(store, cache.length, f, (name) => param(this.params, name));
    cache.advanceLayers(f.from, f.to, T);
    return out;
  }

  /**
   * Final norm + unembedding of decoding rows h [R, C] → logits [R, V] (no gradient: drafters' heads): one fused program
   * on webgpu, Transformer.unembed elsewhere. Call inside tf.tidy.
   */
  decodeUnembed(h: tf.Tensor2D): tf.Tensor2D {
    const gpu = webgpuBackend() && gpuDecodeModel(this.params, this.decodeShape());
    if (gpu) return gpu.headRows(h, (name) => param(this.params, name));
    return tf.reshape(this.unembed(tf.expandDims(h, 0) as tf.Tensor3D), [h.shape[0], this.config.vocabSize]) as tf.Tensor2D;
  }

  /**
   * Decoding forward (batch 1) for the decoding engine: tokens [T] appended to `cache` → next-token
   * logits [T, V] and the features its drafters read, here the last block's output z [T, C] (before
   * the final norm). Call inside tf.tidy.
   */
  verifyForward(tokens: number[], cache: KVCache, opts: Omit<ForwardOptions, 'cache'> = {}): { logits: tf.Tensor2D; features: tf.Tensor2D } {
    const L = this.config.nLayer;
    const fused = this.decodeFused(cache, { tokens, positions: opts.positions, mask: opts.mask, from: 0, to: L, taps: [L], head: true });
    if (fused) return { logits: fused.logits!, features: fused.features };
    const T = tokens.length;
    const z = this.trunk(tf.tensor2d([tokens], [1, T], 'int32'), { ...opts, cache }); // [1, T, C]
    return { logits: tf.reshape(this.unembed(z), [T, this.config.vocabSize]), features: tf.reshape(z, [T, this.config.nEmbd]) };
  }

  /** Next-token logits [B, T, V] for tokens [B, T] (inside tf.tidy; cache tensors survive). */
  forward(tokens: tf.Tensor2D, opts: ForwardOptions = {}): tf.Tensor3D {
    return tf.tidy(() => this.unembed(this.trunk(tokens, opts)));
  }

  /** Trainable variables in creation order. */
  variables(): tf.Variable[] {
    return [...this.params.values()];
  }

  dispose(): void {
    for (const v of this.params.values()) v.dispose();
    this.params.clear();
    this.causal.dispose();
  }
}

/** Additive causal mask [T, T]: row i may attend to columns j ≤ i. */
export function causalMask(T: number): tf.Tensor2D {
  const m = new Float32Array(T * T);
  for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) m[i * T + j] = MASKED;
  return tf.tensor2d(m, [T, T]);
}

/**
 * Mean over rows of −log softmax(logits)[target] for logits [N, V] and int targets [N] (nats): two fused programs forward
 * and one backward on webgpu (backend/webgpu_train_cross_entropy.ts), the plain tfjs ops elsewhere.
 */
export function meanCrossEntropy(logits: tf.Tensor2D, targets: tf.Tensor1D): tf.Scalar {
  if (webgpuTrainKernels()) return fusedCrossEntropy(logits, targets);
  const logp = tf.logSoftmax(logits); // [N, V]
  return tf.neg(tf.mean(tf.sum(tf.mul(logp, tf.oneHot(targets, logits.shape[1])), 1))) as tf.Scalar;
}

/**
 * Mean cross-entropy of logits [B, T, V] against int targets [B, T] (nats), with top-1 accuracy.
 */
export function crossEntropy(logits: tf.Tensor3D, targets: tf.Tensor2D): { loss: tf.Scalar; acc: tf.Scalar } {
  const [B, T, V] = logits.shape;
  const flat = tf.reshape(logits, [B * T, V]) as tf.Tensor2D;
  const t = tf.reshape(targets, [B * T]) as tf.Tensor1D;
  const loss = meanCrossEntropy(flat, t);
  const acc = tf.mean(tf.cast(tf.equal(tf.argMax(flat, 1), t), 'float32')) as tf.Scalar;
  return { loss, acc };
}
