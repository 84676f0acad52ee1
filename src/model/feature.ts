/**
 * A feature-level autoregressive drafter on a frozen trunk: EAGLE (Li et al. 2024, "EAGLE: Speculative Sampling
 * Requires Rethinking Feature Uncertainty", §3–4) and the training-time test of EAGLE-3 (Li et al. 2025, §3).
 *
 * The trunk's hidden state fₜ (the last block's output, before the final norm) already holds what the trunk knows
 * about the next token; the drafter learns to continue the trunk's own computation one position ahead:
 *
 *   gₜ  = fₜ                    (features 'last')   or   W_fuse · [f⁽ˡᵒʷ⁾ₜ ; f⁽ᵐⁱᵈ⁾ₜ ; fₜ]   (features 'fused', EAGLE-3)
 *   h′ₜ = [RMSNorm(gₜ) ; RMSNorm(Emb(x[t+1]))] · proj     (proj [2C, C], as DeepSeek-V3's MTP module)
 *   f̂ₜ₊₁ = Blocks(h′)ₜ          (causal attention over the drafter's own rows)
 *   P(x[t+2]) = softmax(OutHead(f̂ₜ₊₁))                   (the trunk's final norm and unembedding, shared, frozen)
 *
 * It drafts further by feeding its own f̂ₜ₊₁ back as the next position's g (with the drafted token's embedding), so one
 * small network drafts any depth. EAGLE's insight is that the feature sequence is more regular than the token
 * sequence, and that giving the drafter the token one step ahead resolves the sampling uncertainty of the feature.
 *
 * Training (the trunk frozen, only the drafter learns): step 0 reads the trunk's true states gₜ; with `unroll` = U > 1,
 * step s = 1..U−1 reads step s−1's predictions, f̂ from the row before (training-time test, EAGLE-3 §3.2), so the
 * drafter learns from the inputs it will see when drafting several tokens ahead. Row (s, t) stands for the depth-s
 * draft after the last committed position a = t − s; it attends to the true rows ≤ a and to the rows (s′, a + s′),
 * s′ = 1..s, exactly the rows a drafting step has at that depth (ttTestMask). Loss, per step and averaged:
 * CE(OutHead(f̂), x[t+2]) + featureWeight · smoothL1(f̂ₜ₊₁, fₜ₊₁) (EAGLE-1 regresses the feature; EAGLE-3 does not).
 *
 * Decoding: the trunk verifies (its features go to the drafter after each forward); the drafter (model/feature_drafter.ts)
 * keeps a KV cache of its rows for committed positions and drafts chains or trees level by level.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackwardMode, FeatureMtp, ModelConfig } from '../config';
import type { Drafter, DrafterOptions, VerifyOptions } from '../decode/drafter';
import { drafterShape } from '../decode/tree_shape';
import { resolveDynamicTree } from '../decode/dynamic_tree';
import { nativeKernels } from '../backend/wasm_native';
import { BlockSlot, decodeBlockSupports, fusedDraftRows } from '../backend/wasm_decode_block';
import { GpuDecodeModel, gpuDecodeModel, WEBGPU_DRAFT_CHAIN_FLAG, webgpuBackend, WebGpuKVStore } from '../backend/webgpu_decode';
import { Rng } from '../util/rng';
import { CacheSet } from './cache_set';
import { FeatureDrafter } from './feature_drafter';
import { KVCache } from './kv_cache';
import type { DecodeOptions, LossAndGrads, LossOutput, MtpModel } from './mtp_model';
import { jointLossAndGrads } from './mtp_model';
import { block, blockWeights, param, project } from './layers';
import { addBlockParams, nextScope, ParamFactory, ParamMap } from './params';
import { rmsNorm } from './rmsnorm';
import { crossEntropy, MASKED, Transformer } from './transformer';

/** The drafter's input projection split for decoding (FeatureModel.draftTables). */
export interface DraftTables {
  /** diag(γ_g)·P_g [C, C]: the state side. */
  projG: tf.Tensor2D;
  /** (γ_e·n(Emb))·P_e [V, C]: the token side of every token. */
  tokenTable: tf.Tensor2D;
}

/** Name prefix of the drafter's parameters: `draft.hnorm`, `draft.proj`, `draft.l0.wqkv`, … */
export const DRAFT_PREFIX = 'draft.';

/** The trunk blocks whose outputs 'fused' features read (EAGLE-3's low, middle and high layers), for nLayer blocks. */
export function fusedLayers(nLayer: number): number[] {
  return [Math.max(0, Math.round(nLayer / 4) - 1), Math.max(0, Math.round(nLayer / 2) - 1), nLayer - 1];
}

/**
 * The training-time-test mask for steps 0..s over T positions: rows and columns ordered (step, position), [(s+1)·T]².
 * Row (r, t) may attend to (0, i) for i ≤ t − r and to (r′, t − r + r′) for r′ = 1..r (its own drafted ancestors and
 * itself). Rows with t < r (no committed position before them) see only the part of that set that exists, themselves
 * included, and are left out of the loss.
 */
export function ttTestMask(s: number, T: number): Float32Array {
  const n = (s + 1) * T;
  const mask = new Float32Array(n * n).fill(MASKED);
  for (let r = 0; r <= s; r++) {
    for (let t = 0; t < T; t++) {
      const row = (r * T + t) * n;
      const a = t - r; // the last committed position of this draft
      if (a >= 0) mask.fill(0, row, row + a + 1);
      for (let r2 = 1; r2 <= r; r2++) if (a + r2 >= 0) mask[row + r2 * T + a + r2] = 0;
    }
  }
  return mask;
}

export class FeatureModel implements MtpModel {
  readonly trunk: Transformer;
  /** Training targets: x[t+1] (the drafter's input token) and x[t+2]. */
  readonly k = 2;
  /** Tokens per step the drafter proposes by default (1 + draftDepth). */
  readonly draftK: number;
  /** The loss reports the trunk's head and each unrolled drafting step. */
  readonly lossHeads: number;
  /** Width of the features the drafter reads (C, or 3C when fused). */
  readonly featureWidth: number;
  private readonly drafterVars: tf.Variable[];

  constructor(
    readonly config: ModelConfig,
    readonly mtp: FeatureMtp,
  ) {
    this.draftK = 1 + mtp.draftDepth;
    this.lossHeads = 1 + mtp.unroll;
    // Same seed stream and names as the plain model first: the trunk equals `createModel({ ...config, mtp: none })`.
    const factory = new ParamFactory(new Map(), new Rng(config.seed), nextScope('feature'));
    this.trunk = new Transformer({ ...config, mtp: { kind: 'none' } }, factory);
    const trunkNames = new Set(factory.params.keys());
    const { nEmbd: C, initStd } = config;
    this.featureWidth = mtp.features === 'fused' ? 3 * C : C;
    if (mtp.features === 'fused') factory.add(`${DRAFT_PREFIX}fuse`, [3 * C, C], initStd);
    factory.add(`${DRAFT_PREFIX}hnorm`, [C], 0, 1);
    factory.add(`${DRAFT_PREFIX}enorm`, [C], 0, 1);
    factory.add(`${DRAFT_PREFIX}proj`, [2 * C, C], initStd);
    const residStd = initStd / Math.sqrt(2 * mtp.layers);
    for (let l = 0; l < mtp.layers; l++) addBlockParams(factory, `${DRAFT_PREFIX}l${l}.`, C, config.mlpRatio * C, initStd, residStd);
    this.drafterVars = [...factory.params].filter(([name]) => !trunkNames.has(name)).map(([, v]) => v);
  }

  get params(): ParamMap {
    return this.trunk.params;
  }

  /** Only the drafter trains: the trunk is the frozen target it drafts for. */
  trainableVariables(): tf.Variable[] {
    return [...this.drafterVars];
  }

  /**
   * The trunk over embedded inputs: its last block's output z [B, T, C] and the features the drafter reads [B, T, F]
   * (z itself, or the fused layers' outputs side by side). Appends to `cache` when given.
   */
  trunkFeatures(x: tf.Tensor3D, mask: tf.Tensor2D, cache?: KVCache): { z: tf.Tensor3D; features: tf.Tensor3D } {
    const L = this.config.nLayer;
    if (this.mtp.features === 'last') {
      const z = this.trunk.blocks(x, mask, 0, L, cache);
      return { z, features: z };
    }
    const outs: tf.Tensor3D[] = [];
    let h = x;
    let done = 0; // blocks run so far
    for (const tap of fusedLayers(L)) { // ascending, the last block last
      if (tap + 1 > done) [h, done] = [this.trunk.blocks(h, mask, done, tap + 1, cache), tap + 1];
      outs.push(h);
    }
    return { z: h, features: tf.concat(outs, -1) as tf.Tensor3D };
  }

  /** Trunk features [R, F] → the drafter's input states g [R, C] (the identity for 'last'). */
  inputStates(features: tf.Tensor2D): tf.Tensor2D {
    return this.mtp.features === 'fused' ? project(features, param(this.params, `${DRAFT_PREFIX}fuse`) as tf.Tensor as tf.Tensor2D) : features;
  }

  /**
   * The drafter over rows: g [B, R, C] (true or predicted states), tokens [B, R] (the token one ahead of each row),
   * additive mask [R, S] over its cache + these rows → f̂ [B, R, C], each row's guess at the next position's state.
   * Appends to `cache` when given.
   */
  draftRows(g: tf.Tensor3D, tokens: tf.Tensor2D, mask: tf.Tensor2D, cache?: KVCache): tf.Tensor3D {
    const [B, R, C] = g.shape;
    const { nHead, normEps } = this.config;
    const gn = rmsNorm(g, param(this.params, `${DRAFT_PREFIX}hnorm`), normEps); // [B, R, C]
    const e = rmsNorm(tf.gather(param(this.params, 'tokEmb'), tokens), param(this.params, `${DRAFT_PREFIX}enorm`), normEps); // [B, R, C]
    const both = tf.reshape(tf.concat([gn, e], -1), [B * R, 2 * C]) as tf.Tensor2D; // [B·R, 2C]
    let h = tf.reshape(project(both, param(this.params, `${DRAFT_PREFIX}proj`) as tf.Tensor as tf.Tensor2D), [B, R, C]) as tf.Tensor3D; // h′
    for (let l = 0; l < this.mtp.layers; l++) h = block(h, this.params, `${DRAFT_PREFIX}l${l}.`, nHead, normEps, { mask, cache, layer: l });
    return h;
  }

  /**
   * What drafting can compute once, the weights being fixed meanwhile: with proj split as [P_g ; P_e] (each [C, C]),
   *   h′ = [γ_g·n(g) ; γ_e·n(Emb x)] · proj = n(g) · (diag(γ_g) P_g) + table[x],
   * n(·) being RMSNorm without its gain and table = (γ_e·n(Emb)) · P_e [V, C] the token side for every token. A drafter
   * row then costs one normalisation, one product with a row lookup added, and its blocks. The caller disposes them.
   */
  /** The key of the drafter's fused webgpu state (one per model; the tables of each drafter are copied in on use). */
  private readonly gpuDraftKey = {};

  /**
   * draftStep as the fused webgpu programs (backend/webgpu_decode.ts): the input projection, the drafter's blocks over
   * its own cache kept on the GPU, the final norm and the unembedding, in 2·layers + 2 programs. Null where that path
   * does not apply.
   */
  private draftStepWebGpu(g: tf.Tensor2D, tokens: tf.Tensor1D, mask: tf.Tensor2D, cache: KVCache, tables: DraftTables): { f: tf.Tensor2D; logits: tf.Tensor2D } | null {
    const b = webgpuBackend();
    const ids = b?.tensorMap.get(tokens.dataId).values; // the tokens, made from a JS array, are still on the host
    if (!b || !ids) return null;
    const L = this.mtp.layers;
    const { gpu, store } = this.draftOnGpu(cache) ?? {};
    if (!gpu || !store) return null;
    const R = g.shape[0];
    const out = gpu.forward(store, cache.length, { x: g, tokens: Array.from(ids), mask, draftInput: true, from: 0, to: L, taps: [L], head: true }, this.draftLookup(tables));
    cache.advanceLayers(0, L, R);
    return { f: out.features, logits: out.logits! };
  }

  /**
   * A greedy chain drafted on the GPU in one submission (backend/webgpu_decode.ts draftChain): catch-up rows g [n, C]
   * with their tokens stay in `cache`, then depth − 1 rows of the drafter's own predictions; the chain rows are dropped
   * again. Returns the `depth` drafted tokens, or null where that path does not apply.
   */
  async draftChainWebGpu(g: tf.Tensor2D, tokens: number[], cache: KVCache, tables: DraftTables, depth: number): Promise<number[] | null> {
    if (!webgpuBackend() || !tf.env().getBool(WEBGPU_DRAFT_CHAIN_FLAG)) return null;
    const L = this.mtp.layers;
    const { gpu, store } = this.draftOnGpu(cache) ?? {};
    if (!gpu || !store) return null;
    const past = cache.length;
    const n = tokens.length;
    const out = gpu.draftChain(store, past, g, tokens, depth, this.draftLookup(tables));
    cache.advanceLayers(0, L, n);
    const ids = await out.data();
    out.dispose();
    return Array.from(ids);
  }

  /** The drafter's fused webgpu state and `cache`'s GPU store, or null where that path does not apply. */
  private draftOnGpu(cache: KVCache): { gpu: GpuDecodeModel; store: WebGpuKVStore } | null {
    const gpu = gpuDecodeModel(this.gpuDraftKey, { ...this.trunk.decodeShape(), nLayer: this.mtp.layers, draftInput: true, medusaHeads: 0 });
    const store = gpu && cache.gpuStore(gpu);
    return gpu && store ? { gpu, store } : null;
  }

  /** The drafter's parameters by the names the fused programs use (its blocks as l<i>., its tables). */
  private draftLookup(tables: DraftTables): (name: string) => tf.Tensor {
    return (name) =>
      /^l\d+\./.test(name) ? param(this.params, DRAFT_PREFIX + name) : name === 'projG' ? tables.projG : name === 'tokenTable' ? tables.tokenTable : param(this.params, name);
  }

  draftTables(): DraftTables {
    const C = this.config.nEmbd;
    return tf.tidy(() => {
      const proj = param(this.params, `${DRAFT_PREFIX}proj`); // [2C, C]
      const projG = tf.mul(tf.slice(proj, [0, 0], [C, C]), tf.reshape(param(this.params, `${DRAFT_PREFIX}hnorm`), [C, 1])) as tf.Tensor2D;
      const emb = rmsNorm(param(this.params, 'tokEmb'), param(this.params, `${DRAFT_PREFIX}enorm`), this.config.normEps) as tf.Tensor2D; // [V, C]
      return { projG, tokenTable: tf.matMul(emb, tf.slice(proj, [C, 0], [C, C])) as tf.Tensor2D };
    });
  }

  /**
   * draftRows for decoding (batch 1) through `draftTables`, equal to it up to float rounding: g [R, C], tokens [R],
   * mask [R, S] → f̂ [R, C]. Appends to `cache`.
   */
  draftRowsDecoding(g: tf.Tensor2D, tokens: tf.Tensor1D, mask: tf.Tensor2D, cache: KVCache, tables: DraftTables): tf.Tensor2D {
    const [R, C] = g.shape;
    const { nHead, normEps } = this.config;
    const n = tf.mul(g, tf.rsqrt(tf.add(tf.mean(tf.square(g), -1, true), normEps))) as tf.Tensor2D; // n(g) [R, C]
    let h = tf.reshape(project(n, tables.projG, undefined, tf.gather(tables.tokenTable, tokens) as tf.Tensor2D), [1, R, C]) as tf.Tensor3D; // h′
    for (let l = 0; l < this.mtp.layers; l++) h = block(h, this.params, `${DRAFT_PREFIX}l${l}.`, nHead, normEps, { mask, cache, layer: l });
    return tf.reshape(h, [R, C]);
  }

  /**
   * One drafting step (batch 1): g [R, C], tokens [R], mask [R, S] over `cache` + these rows → the next states f̂ [R, C]
   * and their logits [R, V] (the trunk's output head). On wasm with the package's kernels, one kernel (fusedDraftRows);
   * elsewhere draftRowsDecoding and the trunk's unembedding. Appends to `cache`. Call inside tf.tidy.
   */
  draftStep(g: tf.Tensor2D, tokens: tf.Tensor1D, mask: tf.Tensor2D, cache: KVCache, tables: DraftTables): { f: tf.Tensor2D; logits: tf.Tensor2D } {
    const fused = this.draftStepWebGpu(g, tokens, mask, cache, tables);
    if (fused) return fused;
    const { nEmbd: C, nHead, mlpRatio, normEps, tieEmbeddings } = this.config;
    if (nativeKernels() && decodeBlockSupports(C, nHead, mlpRatio * C)) {
      const slots = Array.from({ length: this.mtp.layers }, (_, l) => cache.slotForBlock(l, 1, g.shape[0], nHead, C / nHead));
      if (slots.every((x) => x !== null)) {
        const blocks = Array.from({ length: this.mtp.layers }, (_, l) => blockWeights(this.params, `${DRAFT_PREFIX}l${l}.`));
        const head = param(this.params, tieEmbeddings ? 'tokEmb' : 'head');
        const w = { ...tables, lnfg: param(this.params, 'lnfg'), lnfb: param(this.params, 'lnfb'), head, tied: tieEmbeddings, blocks };
        return fusedDraftRows(g, tokens, mask, w, slots as BlockSlot[], nHead, normEps);
      }
    }
    const f = this.draftRowsDecoding(g, tokens, mask, cache, tables);
    return { f, logits: tf.reshape(this.trunk.unembed(tf.expandDims(f, 0) as tf.Tensor3D), [g.shape[0], this.config.vocabSize]) as tf.Tensor2D };
  }

  /**
   * inputs [B, T], targets [2, B, T] (x[t+1], x[t+2]) → the drafter's loss; heads = [the trunk's next-token head (for
   * reference: it does not train), drafting step 1, …, step U], each step's cross-entropy and top-1 accuracy on the
   * rows that have a committed position before them.
   */
  loss(inputs: tf.Tensor2D, targets: tf.Tensor3D): LossOutput {
    const [, B, T] = targets.shape;
    const C = this.config.nEmbd;
    const U = this.mtp.unroll;
    const row = (j: number) => tf.reshape(tf.slice(targets, [j, 0, 0], [1, B, T]), [B, T]) as tf.Tensor2D; // [B, T]
    const { x, mask } = this.trunk.embed(inputs);
    const { z, features } = this.trunkFeatures(x, mask); // [B, T, C], [B, T, F]
    const heads = [crossEntropy(this.trunk.unembed(z), row(0))];
    const g0 = tf.reshape(this.inputStates(tf.reshape(features, [B * T, this.featureWidth]) as tf.Tensor2D), [B, T, C]) as tf.Tensor3D;
    const next = row(0); // x[t+1]: each row's input token
    const steps: tf.Scalar[] = [];
    const inputs3: tf.Tensor3D[] = [g0]; // step r's input states
    for (let s = 0; s < U; s++) {
      // steps 0..s in one forward (their rows attend across steps); only step s's rows are new
      const g = tf.concat(inputs3, 1) as tf.Tensor3D; // [B, (s+1)·T, C]
      const tokens = tf.concat(Array.from({ length: s + 1 }, () => next), 1) as tf.Tensor2D; // [B, (s+1)·T]
      const out = this.draftRows(g, tokens, tf.tensor2d(ttTestMask(s, T), [(s + 1) * T, (s + 1) * T]));
      const fs = tf.slice(out, [0, s * T, 0], [B, T, C]) as tf.Tensor3D; // step s: f̂ₜ₊₁ at row t [B, T, C]
      const valid = T - s; // rows t ≥ s have a committed position before them
      const tail = tf.slice(fs, [0, s, 0], [B, valid, C]) as tf.Tensor3D;
      const ce = crossEntropy(this.trunk.unembed(tail), tf.slice(row(1), [0, s], [B, valid]) as tf.Tensor2D);
      heads.push(ce);
      let lossS: tf.Scalar = ce.loss;
      if (this.mtp.featureWeight > 0 && valid > 1) {
        // f̂ at rows s..T−2 against the trunk's true states at s+1..T−1
        const pred = tf.slice(fs, [0, s, 0], [B, valid - 1, C]);
        const truth = tf.slice(z, [0, s + 1, 0], [B, valid - 1, C]);
        lossS = tf.add(lossS, tf.mul(smoothL1(pred, truth), this.mtp.featureWeight)) as tf.Scalar;
      }
      steps.push(lossS);
      // the next step reads these predictions one row later: row t gets f̂ from row t − 1 (row 0: zeros, never scored)
      if (s + 1 < U) inputs3.push(tf.concat([tf.zeros([B, 1, C]), tf.slice(fs, [0, 0, 0], [B, T - 1, C])], 1) as tf.Tensor3D);
    }
    return { loss: tf.div(tf.addN(steps), U) as tf.Scalar, heads };
  }

  /** Gradients of the drafter only (the trunk is frozen). */
  lossAndGrads(inputs: tf.Tensor2D, targets: tf.Tensor3D, mode: BackwardMode, progress?: number): LossAndGrads {
    if (mode !== 'joint') throw new Error(`train.backward '${mode}' is not available for mtp.kind 'feature'; use 'joint'`);
    return jointLossAndGrads(this, inputs, targets, progress);
  }

  /** The trunk's cache only: the drafter keeps its own while drafting. */
  newCaches(): CacheSet {
    return new CacheSet(this.trunk.newCache());
  }

  /** The trunk's next-token logits [1, T, V] (the drafter's predictions need tokens a forward does not yet know). */
  decodeLogits(tokens: number[], caches: CacheSet, opts: DecodeOptions = {}): tf.Tensor3D {
    return tf.tidy(() => tf.expandDims(this.verifyForward(tokens, caches.trunk, opts).logits, 0) as tf.Tensor3D);
  }

  newCache(): KVCache {
    return this.trunk.newCache();
  }

  /** Trunk over new tokens [T]: next-token logits [T, V] and the features [T, F] the drafter reads. */
  verifyForward(tokens: number[], cache: KVCache, opts: VerifyOptions = {}): { logits: tf.Tensor2D; features: tf.Tensor2D } {
    const T = tokens.length;
    const L = this.config.nLayer;
    const taps = this.mtp.features === 'last' ? [L] : fusedLayers(L).map((l) => l + 1);
    if (new Set(taps).size === taps.length) {
      const fused = this.trunk.decodeFused(cache, { tokens, positions: opts.positions, mask: opts.mask, from: 0, to: L, taps, head: true });
      if (fused) return { logits: fused.logits!, features: fused.features };
    }
    const { x, mask } = this.trunk.embed(tf.tensor2d([tokens], [1, T], 'int32'), { ...opts, cache });
    const { z, features } = this.trunkFeatures(x, mask, cache);
    return { logits: tf.reshape(this.trunk.unembed(z), [T, this.config.vocabSize]), features: tf.reshape(features, [T, this.featureWidth]) };
  }

  /** Autoregressive drafting with the drafter: a chain (default draftDepth deep), a fixed tree, or a dynamic tree (EAGLE-2). */
  drafter(opts: DrafterOptions = {}): Drafter {
    if (opts.dynamic) return new FeatureDrafter(this, { dynamic: resolveDynamicTree('feature drafter', opts, Infinity) });
    return new FeatureDrafter(this, { choices: drafterShape('feature drafter', Math.max(this.draftK, opts.k ?? 0, 1 + treeDepth(opts)), { k: opts.k ?? (opts.tree ? undefined : this.draftK), tree: opts.tree }) });
  }

  dispose(): void {
    this.trunk.dispose();
  }
}

/** Depth of a tree given as rank paths (0 without one). */
function treeDepth(opts: DrafterOptions): number {
  return opts.tree ? Math.max(0, ...opts.tree.map((p) => p.length)) : 0;
}

/** Mean smooth-L1 (Huber, δ = 1) distance between two tensors of one shape. */
function smoothL1(a: tf.Tensor, b: tf.Tensor): tf.Scalar {
  const d = tf.abs(tf.sub(a, b));
  const m = tf.minimum(d, 1); // ½d² below 1, d − ½ above
  return tf.mean(tf.add(tf.mul(tf.square(m), 0.5), tf.sub(d, m))) as tf.Scalar;
}
