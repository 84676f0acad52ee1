/**
 * Sequential multi-token-prediction modules (DeepSeek-V3 Technical Report, 2024, §2.2):
 *
 *   h′ᵐᵢ = Mₘ [RMSNorm(hᵐ⁻¹ᵢ) ; RMSNorm(Emb(x[i+m]))],   Mₘ ∈ ℝ^{C×2C}
 *   hᵐ   = TRMₘ(h′ᵐ)                                    (one causal transformer block)
 *   Pᵐᵢ  = softmax(OutHead(hᵐᵢ)), predicting x[i+m+1],   m = 1..D
 *
 * h⁰ is the trunk's output before its final norm (RMSNorm re-normalises it anyway); Emb (the token
 * embedding, no position embedding) and OutHead (the final LayerNorm + unembedding, `trunk.unembed`)
 * are the trunk's own, shared. Mₘ is stored transposed, `mₘ.proj` [2C, C], so h′ = [·;·] · proj.
 *
 * Loss (§2.2, "MTP Training Objective"): L = L_main + (λ/D) Σₘ Lᵐ, λ = `lambda` while the fraction of
 * training done is below `lambdaSwitch` and `lambdaLate` after (DeepSeek-V3: 0.3, then 0.1).
 * Training feeds module m the true token x[i+m] (targets row m−1) and scores it against x[i+m+1]
 * (targets row m), so every position of the batch window trains every module.
 *
 * Parameters come from one seeded stream, trunk first, so the trunk equals the plain model of the
 * same seed; module m adds `mₘ.hnorm`, `mₘ.enorm`, `mₘ.proj` and a block under the prefix `mₘ.`.
 * The trunk alone is the main model: `generate(model.trunk, …)` discards the modules, DeepSeek-V3's
 * default at inference. For self-speculative decoding (model/sequential_drafter.ts) the modules draft,
 * through `trunkStep` and `moduleStep`; each module keeps its own KV cache (`caches.extra[m−1]`).
 */
import * as tf from '@tensorflow/tfjs';
import type { BackwardMode, ModelConfig, SequentialMtp } from '../config';
import type { Drafter, DrafterOptions, VerifyOptions } from '../decode/drafter';
import { drafterShape } from '../decode/tree_shape';
import { resolveDynamicTree } from '../decode/dynamic_tree';
import { Rng } from '../util/rng';
import { SequentialDrafter } from './sequential_drafter';
import { CacheSet } from './cache_set';
import type { DecodeOptions, LossAndGrads, LossOutput, MtpModel } from './mtp_model';
import { jointLossAndGrads } from './mtp_model';
import { KVCache } from './kv_cache';
import { block, param, project } from './layers';
import { addBlockParams, nextScope, ParamFactory, ParamMap } from './params';
import { rmsNorm } from './rmsnorm';
import { crossEntropy, Transformer } from './transformer';
import { gpuDecodeModel, webgpuBackend } from '../backend/webgpu_decode';

/** λ at a fraction of training done (undefined = evaluation, treated as the end of training). */
export function lambdaAt(mtp: SequentialMtp, progress = 1): number {
  return progress < mtp.lambdaSwitch ? mtp.lambda : mtp.lambdaLate;
}

export class SequentialModel implements MtpModel {
  readonly trunk: Transformer;
  /** D, the number of modules. */
  readonly depth: number;
  readonly k: number;

  constructor(
    readonly config: ModelConfig,
    readonly mtp: SequentialMtp,
  ) {
    this.depth = mtp.depth;
    this.k = 1 + mtp.depth;
    const factory = new ParamFactory(new Map(), new Rng(config.seed), nextScope('sequential'));
    this.trunk = new Transformer({ ...config, mtp: { kind: 'none' } }, factory);
    const C = config.nEmbd;
    const residStd = config.initStd / Math.sqrt(2 * config.nLayer);
    for (let m = 1; m <= this.depth; m++) {
      factory.add(`m${m}.hnorm`, [C], 0, 1);
      factory.add(`m${m}.enorm`, [C], 0, 1);
      factory.add(`m${m}.proj`, [2 * C, C], config.initStd);
      addBlockParams(factory, `m${m}.`, C, config.mlpRatio * C, config.initStd, residStd);
    }
  }

  get params(): ParamMap {
    return this.trunk.params;
  }

  trainableVariables(): tf.Variable[] {
    return [...this.params.values()];
  }

  /**
   * Module m (1-based) over T positions: h [B, T, C] (depth m−1's states), tokens [B, T] (x[i+m] at
   * each position i) → hᵐ [B, T, C]. Appends to `cache` when given; mask [T, S] is causal.
   */
  private module(m: number, h: tf.Tensor3D, tokens: tf.Tensor2D, mask: tf.Tensor2D, cache?: KVCache): tf.Tensor3D {
    const [B, T, C] = h.shape;
    const { nHead, normEps } = this.config;
    const p = `m${m}.`;
    const hn = rmsNorm(h, param(this.params, `${p}hnorm`), normEps); // [B, T, C]
    const e = rmsNorm(tf.gather(param(this.params, 'tokEmb'), tokens), param(this.params, `${p}enorm`), normEps); // [B, T, C]
    const both = tf.reshape(tf.concat([hn, e], -1), [B * T, 2 * C]); // [B*T, 2C]
    const merged = tf.reshape(tf.matMul(both as tf.Tensor2D, param(this.params, `${p}proj`)), [B, T, C]) as tf.Tensor3D; // h′ [B, T, C]
    return block(merged, this.params, p, nHead, normEps, { mask, cache, layer: 0 });
  }

  /**
   * inputs [B, T], targets [k, B, T] (row j = x[t+j+1]) → L_main + (λ/D) Σ Lᵐ; heads = [main,
   * module 1, …, module D], each with its cross-entropy and top-1 accuracy.
   */
  loss(inputs: tf.Tensor2D, targets: tf.Tensor3D, progress?: number): LossOutput {
    const [, B, T] = targets.shape;
    const row = (j: number) => tf.reshape(tf.slice(targets, [j, 0, 0], [1, B, T]), [B, T]) as tf.Tensor2D; // [B, T]
    const { x, mask } = this.trunk.embed(inputs);
    let h = this.trunk.blocks(x, mask, 0, this.config.nLayer); // h⁰ [B, T, C]
    const heads = [crossEntropy(this.trunk.unembed(h), row(0))];
    for (let m = 1; m <= this.depth; m++) {
      h = this.module(m, h, row(m - 1), mask); // hᵐ [B, T, C]
      heads.push(crossEntropy(this.trunk.unembed(h), row(m)));
    }
    const lambda = lambdaAt(this.mtp, progress);
    const modules = tf.addN(heads.slice(1).map((hd) => hd.loss)); // Σ Lᵐ
    const loss = tf.add(heads[0].loss, tf.mul(modules, lambda / this.depth)) as tf.Scalar;
    return { loss, heads };
  }

  /**
   * Joint backward through trunk and modules. The memory-efficient mode of the parallel variant
   * (Gloeckle Fig. 2) needs independent heads on one trunk output; chained modules have none.
   */
  lossAndGrads(inputs: tf.Tensor2D, targets: tf.Tensor3D, mode: BackwardMode, progress?: number): LossAndGrads {
    if (mode !== 'joint') throw new Error(`train.backward '${mode}' is not available for mtp.kind 'sequential' (chained modules); use 'joint'`);
    return jointLossAndGrads(this, inputs, targets, progress);
  }

  /** The trunk's cache plus one single-block cache per module (batch 1). */
  newCaches(): CacheSet {
    return new CacheSet(
      this.trunk.newCache(),
      Array.from({ length: this.depth }, () => new KVCache(1)),
    );
  }

  /**
   * Trunk forward over new tokens [T] (batch 1), appending to `caches.trunk`: h⁰ [1, T, C] and the
   * next-token logits [1, T, V]. Call inside tf.tidy.
   */
  trunkStep(tokens: tf.Tensor1D, caches: CacheSet, opts: DecodeOptions = {}): { hidden: tf.Tensor3D; logits: tf.Tensor3D } {
    const input = tf.reshape(tokens, [1, tokens.shape[0]]) as tf.Tensor2D; // [1, T]
    const { x, mask } = this.trunk.embed(input, { cache: caches.trunk, positions: opts.positions, mask: opts.mask });
    const hidden = this.trunk.blocks(x, mask, 0, this.config.nLayer, caches.trunk); // [1, T, C]
    return { hidden, logits: this.trunk.unembed(hidden) };
  }

  /**
   * Module m (1-based) over T new positions after those in its cache `caches.extra[m−1]` (batch 1):
   * hidden [1, T, C] = depth m−1's states there, tokens [T] = x[i+m] at each position i (true or
   * drafted) → hᵐ [1, T, C] and the logits [V] of the last position (its guess at x[i+m+1]).
   * Appends to the module's cache. Call inside tf.tidy.
   */
  moduleStep(m: number, hidden: tf.Tensor3D, tokens: tf.Tensor1D, caches: CacheSet): { hidden: tf.Tensor3D; last: tf.Tensor1D } {
    if (!Number.isInteger(m) || m < 1 || m > this.depth) throw new Error(`moduleStep: m must be an integer in [1, ${this.depth}], got ${m}`);
    const [, T, C] = hidden.shape;
    const cache = caches.extra[m - 1];
    const h = this.module(m, hidden, tf.reshape(tokens, [1, T]) as tf.Tensor2D, this.trunk.causalMask(cache.length, T), cache); // [1, T, C]
    const lastState = tf.slice(h, [0, T - 1, 0], [1, 1, C]) as tf.Tensor3D; // [1, 1, C]
    return { hidden: h, last: tf.reshape(this.trunk.unembed(lastState), [this.config.vocabSize]) as tf.Tensor1D };
  }

  /**
   * Head 0 only: the trunk's next-token logits [1, T, V] over new tokens, appending to the trunk's
   * cache. The modules cannot be run here: module m at position i needs the token at i+m, which a
   * decoding forward does not yet know (decode/sequential.ts drafts with `moduleStep`). So decoders
   * that read k rows of heads (blockwise, unverified emission, speculative sampling) see one row.
   */
  decodeLogits(tokens: number[], caches: CacheSet, opts: DecodeOptions = {}): tf.Tensor3D {
    return tf.tidy(() => this.trunkStep(tf.tensor1d(tokens, 'int32'), caches, opts).logits);
  }

  newCache(): KVCache {
    return this.trunk.newCache();
  }

  /** Trunk over new tokens [T]: next-token logits [T, V]; features = h⁰ [T, C], what module 1 reads. */
  verifyForward(tokens: number[], cache: KVCache, opts: VerifyOptions = {}): { logits: tf.Tensor2D; features: tf.Tensor2D } {
    return this.trunk.verifyForward(tokens, cache, opts);
  }

  /**
   * What decoding with module m can compute once, its weights being fixed meanwhile: with the
   * projection split as Mₘ = [P_h ; P_e] (each [C, C]),
   *   h′ = [g_h·n(h) ; g_e·n(Emb x)] · Mₘ = n(h) · (diag(g_h) P_h) + table[x],
   * where n(·) is RMSNorm without its gain and table = (g_e·n(Emb)) · P_e [V, C] holds the token side for
   * every token. A module step then costs one normalisation, one product and one row lookup before its
   * block. The caller disposes the tensors.
   */
  moduleTables(m: number): { projH: tf.Tensor2D; tokenTable: tf.Tensor2D } {
    const C = this.config.nEmbd;
    const p = `m${m}.`;
    return tf.tidy(() => {
      const proj = param(this.params, `${p}proj`); // [2C, C]
      const projH = tf.mul(tf.slice(proj, [0, 0], [C, C]), tf.reshape(param(this.params, `${p}hnorm`), [C, 1])) as tf.Tensor2D; // diag(g_h)·P_h
      const emb = rmsNorm(param(this.params, 'tokEmb'), param(this.params, `${p}enorm`), this.config.normEps) as tf.Tensor2D; // [V, C]
      return { projH, tokenTable: tf.matMul(emb, tf.slice(proj, [C, 0], [C, C])) };
    });
  }

  /**
   * Module m (1-based) over R rows with an explicit mask, through its `moduleTables` (the drafter's
   * path; equal to the training-time module up to float rounding): hidden [R, C] = depth m−1's states,
   * tokens [R] = the token m places ahead of each row, mask [R, S] additive over the module's cache +
   * these rows → hᵐ [R, C]. Appends to `cache`. Call inside tf.tidy.
   */
  moduleRows(m: number, hidden: tf.Tensor2D, tokens: tf.Tensor1D, mask: tf.Tensor2D, cache: KVCache, tables: { projH: tf.Tensor2D; tokenTable: tf.Tensor2D }): tf.Tensor2D {
    if (!Number.isInteger(m) || m < 1 || m > this.depth) throw new Error(`moduleRows: m must be an integer in [1, ${this.depth}], got ${m}`);
    const fused = this.moduleRowsWebGpu(m, hidden, tokens, mask, cache, tables);
    if (fused) return fused;
    const [R, C] = hidden.shape;
    const n = tf.mul(hidden, tf.rsqrt(tf.add(tf.mean(tf.square(hidden), -1, true), this.config.normEps))) as tf.Tensor2D; // n(h) [R, C]
    const merged = project(n, tables.projH, undefined, tf.gather(tables.tokenTable, tokens)); // h′ [R, C]
    const h = block(tf.reshape(merged, [1, R, C]), this.params, `m${m}.`, this.config.nHead, this.config.normEps, { mask, cache, layer: 0 }); // [1, R, C]
    return tf.reshape(h, [R, C]);
  }

  /** Keys of each module's fused webgpu state. */
  private readonly gpuKeys = new Map<number, object>();

  /**
   * moduleRows as the fused webgpu programs (backend/webgpu_decode.ts; the same input rule as the feature drafter's:
   * n(h)·projH + tokenTable[token], then the module's block over its cache kept on the GPU). Null where that path does
   * not apply.
   */
  private moduleRowsWebGpu(m: number, hidden: tf.Tensor2D, tokens: tf.Tensor1D, mask: tf.Tensor2D, cache: KVCache, tables: { projH: tf.Tensor2D; tokenTable: tf.Tensor2D }): tf.Tensor2D | null {
    const b = webgpuBackend();
    const ids = b?.tensorMap.get(tokens.dataId).values; // made from a JS array: still on the host
    if (!b || !ids) return null;
    if (!this.gpuKeys.has(m)) this.gpuKeys.set(m, {});
    const gpu = gpuDecodeModel(this.gpuKeys.get(m)!, { ...this.trunk.decodeShape(), nLayer: 1, draftInput: true, medusaHeads: 0 });
    const store = gpu && cache.gpuStore(gpu);
    if (!gpu || !store) return null;
    const lookup = (name: string) =>
      name.startsWith('l0.') ? param(this.params, `m${m}.${name.slice(3)}`) : name === 'projG' ? tables.projH : name === 'tokenTable' ? tables.tokenTable : param(this.params, name);
    const out = gpu.forward(store, cache.length, { x: hidden, tokens: Array.from(ids), mask, draftInput: true, from: 0, to: 1, taps: [1], head: false }, lookup);
    cache.advanceLayers(0, 1, hidden.shape[0]);
    return out.features;
  }

  /**
   * Self-speculative drafting with the modules (DeepSeek-V3 §2.2 used at inference), chain or tree; `dynamic`: an
   * EAGLE-2 tree ranked by the modules' cumulative log-probability along each path.
   */
  drafter(opts: DrafterOptions = {}): Drafter {
    if (opts.dynamic) return new SequentialDrafter(this, { dynamic: resolveDynamicTree('sequential modules', opts, this.depth) });
    return new SequentialDrafter(this, drafterShape('sequential modules', this.k, opts));
  }

  dispose(): void {
    this.trunk.dispose();
  }
}
