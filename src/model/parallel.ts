/**
 * Parallel multi-token heads on a shared trunk (Gloeckle et al. 2024, "Better & Faster Large
 * Language Models via Multi-token Prediction", §2):
 *
 *   P(x[t+i] | x[≤t]) = softmax(f_u(f_hi(f_s(x[≤t])))),  i = 1..k
 *
 * f_s: the shared trunk (embeddings + the first nShared blocks); f_hi: head i, headLayers transformer
 * blocks of its own; f_u: the shared final norm + unembedding. Head 1 is the last headLayers blocks
 * of the standard model, so k = 1 is exactly the plain next-token transformer (same parameter names,
 * same init stream, same logits), and `mtp.kind = 'none'` is built as this class with k = 1.
 *
 * Loss: weighted mean of the k cross-entropies (uniform by default). Two backward modes:
 * - joint: one gradient computation through trunk and all heads;
 * - memory-efficient (their Fig. 2): trunk forward once to z, then head by head: the head's loss,
 *   its gradients and dL/dz (accumulated), freeing that head's activations and logits before the
 *   next; finally one trunk backward with the accumulated dL/dz as upstream gradient. TF.js cannot
 *   keep a recorded graph between gradient calls, so the trunk forward is recomputed for that last
 *   backward (activation recomputation): peak memory holds one head's logits instead of k.
 */
import * as tf from '@tensorflow/tfjs';
import type { ModelConfig, ParallelMtp } from '../config';
import { parallelSharedLayers } from '../config';
import type { CommitInfo, Drafter, DrafterOptions, VerifyOptions } from '../decode/drafter';
import { HeadsDrafter, HeadsSource } from '../decode/heads_drafter';
import { drafterShape } from '../decode/tree_shape';
import { dynamicTreeName, resolveDynamicTree } from '../decode/dynamic_tree';
import { Rng } from '../util/rng';
import { CacheSet } from './cache_set';
import type { BackwardMode } from '../config';
import type { DecodeOptions, LossAndGrads, LossOutput, MtpModel } from './mtp_model';
import { jointLossAndGrads } from './mtp_model';
import { KVCache } from './kv_cache';
import { gpuDecodeModel, webgpuBackend } from '../backend/webgpu_decode';
import { attendQKV, block, layerNorm, mlpRows, param, project } from './layers';
import { addBlockParams, nextScope, ParamFactory, ParamMap } from './params';
import { crossEntropy, Transformer } from './transformer';

export class ParallelModel implements MtpModel {
  readonly trunk: Transformer;
  readonly k: number;
  /** Blocks of the shared trunk f_s. */
  readonly nShared: number;
  readonly headLayers: number;
  /** Loss weight per head, normalised to sum 1. */
  readonly weights: number[];
  /** Variables of f_s, and of each head together with the shared f_u (for the memory-efficient backward). */
  private readonly groups: { shared: tf.Variable[]; heads: tf.Variable[][] };

  constructor(
    readonly config: ModelConfig,
    readonly mtp: ParallelMtp,
  ) {
    this.k = mtp.k;
    this.headLayers = mtp.headLayers;
    this.nShared = parallelSharedLayers(config.nLayer, mtp);
    const raw = mtp.headWeights.length ? mtp.headWeights : new Array(mtp.k).fill(1);
    const total = raw.reduce((a, b) => a + b, 0);
    this.weights = raw.map((w) => w / total);
    const factory = new ParamFactory(new Map(), new Rng(config.seed), nextScope(mtp.k > 1 ? 'parallel' : 'gpt'));
    // The trunk transformer holds f_s and head 1 (its last headLayers blocks) and f_u.
    this.trunk = new Transformer({ ...config, nLayer: this.nShared + this.headLayers, mtp: { kind: 'none' } }, factory);
    const C = config.nEmbd;
    const residStd = config.initStd / Math.sqrt(2 * config.nLayer);
    for (let i = 2; i <= this.k; i++) {
      for (let j = 0; j < this.headLayers; j++) addBlockParams(factory, `h${i}.l${j}.`, C, config.mlpRatio * C, config.initStd, residStd);
    }
    const withPrefix = (p: string) => [...this.params].filter(([n]) => n.startsWith(p)).map(([, v]) => v);
    const layers = (from: number, to: number) => Array.from({ length: to - from }, (_, l) => withPrefix(`l${from + l}.`)).flat();
    const get = (n: string) => this.params.get(n)!;
    const unembed = [get('lnfg'), get('lnfb'), get(config.tieEmbeddings ? 'tokEmb' : 'head')];
    this.groups = {
      shared: [get('tokEmb'), get('posEmb'), ...layers(0, this.nShared)],
      heads: Array.from({ length: this.k }, (_, i) =>
        i === 0 ? [...layers(this.nShared, this.nShared + this.headLayers), ...unembed] : [...withPrefix(`h${i + 1}.`), ...unembed],
      ),
    };
  }

  get params(): ParamMap {
    return this.trunk.params;
  }

  trainableVariables(): tf.Variable[] {
    return [...this.params.values()];
  }

  /** Head i's blocks (0-based i) over the trunk output z: [B, T, C] → [B, T, C]. */
  private headHidden(i: number, z: tf.Tensor3D, mask: tf.Tensor2D, cache?: KVCache): tf.Tensor3D {
    if (i === 0) return this.trunk.blocks(z, mask, this.nShared, this.nShared + this.headLayers, cache);
    const { nHead, normEps } = this.config;
    let h = z;
    for (let j = 0; j < this.headLayers; j++) {
      h = block(h, this.params, `h${i + 1}.l${j}.`, nHead, normEps, { mask, cache, layer: j });
    }
    return h;
  }

  /** Shared trunk f_s: tokens [B, T] → z [B, T, C] and the mask the heads attend with. */
  private shared(inputs: tf.Tensor2D): { z: tf.Tensor3D; mask: tf.Tensor2D } {
    const { x, mask } = this.trunk.embed(inputs);
    return { z: this.trunk.blocks(x, mask, 0, this.nShared), mask };
  }

  /** Cross-entropy and accuracy of head i against its targets [k, B, T] row i. */
  private headLoss(i: number, z: tf.Tensor3D, mask: tf.Tensor2D, targets: tf.Tensor3D): { loss: tf.Scalar; acc: tf.Scalar } {
    const [, B, T] = targets.shape;
    const logits = this.trunk.unembed(this.headHidden(i, z, mask)); // [B, T, V]
    return crossEntropy(logits, tf.reshape(tf.slice(targets, [i, 0, 0], [1, B, T]), [B, T]) as tf.Tensor2D);
  }

  loss(inputs: tf.Tensor2D, targets: tf.Tensor3D): LossOutput {
    const { z, mask } = this.shared(inputs);
    const heads = Array.from({ length: this.k }, (_, i) => this.headLoss(i, z, mask, targets));
    const loss = tf.addN(heads.map((h, i) => tf.mul(h.loss, this.weights[i]))) as tf.Scalar;
    return { loss, heads };
  }

  lossAndGrads(inputs: tf.Tensor2D, targets: tf.Tensor3D, mode: BackwardMode): LossAndGrads {
    if (mode === 'joint' || this.k === 1) return jointLossAndGrads(this, inputs, targets);
    const grads: tf.NamedTensorMap = {};
    const accumulate = (v: tf.Variable, g: tf.Tensor) => {
      const prev = grads[v.name];
      grads[v.name] = prev ? tf.keep(tf.add(prev, g)) : tf.keep(g);
      prev?.dispose();
    };
    const z = tf.tidy(() => this.shared(inputs).z); // [B, T, C], no tape kept
    let dz: tf.Tensor3D = tf.zerosLike(z);
    const heads: LossOutput['heads'] = [];
    for (let i = 0; i < this.k; i++) {
      tf.tidy(() => {
        const hv = this.groups.heads[i];
        const f = (zIn: tf.Tensor) => {
          const out = this.headLoss(i, zIn as tf.Tensor3D, this.trunk.causalMask(0, inputs.shape[1]), targets);
          heads.push({ loss: tf.keep(out.loss), acc: tf.keep(out.acc) });
          return tf.mul(out.loss, this.weights[i]) as tf.Scalar;
        };
        const { grads: g } = tf.valueAndGrads((zIn: tf.Tensor, ..._v: tf.Tensor[]) => f(zIn))([z, ...hv]);
        const next = tf.keep(tf.add(dz, g[0])) as tf.Tensor3D;
        dz.dispose();
        dz = next;
        hv.forEach((v, j) => accumulate(v, g[j + 1]));
      });
    }
    const sv = this.groups.shared;
    tf.tidy(() => {
      const { grads: g } = tf.valueAndGrads((..._v: tf.Tensor[]) => this.shared(inputs).z)(sv, dz);
      sv.forEach((v, j) => accumulate(v, g[j]));
    });
    tf.dispose([z, dz]);
    const loss = tf.tidy(() => tf.addN(heads.map((h, i) => tf.mul(h.loss, this.weights[i]))) as tf.Scalar);
    return { loss, heads, grads };
  }

  newCaches(heads = this.k): CacheSet {
    if (!Number.isInteger(heads) || heads < 1 || heads > this.k) throw new Error(`newCaches: heads must be an integer in [1, ${this.k}], got ${heads}`);
    return new CacheSet(
      this.trunk.newCache(),
      Array.from({ length: heads - 1 }, () => new KVCache(this.headLayers)),
    );
  }

  decodeLogits(tokens: number[], caches: CacheSet, opts: DecodeOptions = {}): tf.Tensor3D {
    return tf.tidy(() => {
      const input = tf.tensor2d([tokens], [1, tokens.length], 'int32');
      const { x, mask } = this.trunk.embed(input, { cache: caches.trunk, positions: opts.positions, mask: opts.mask });
      const z = this.trunk.blocks(x, mask, 0, this.nShared, caches.trunk); // [1, T, C]
      const heads = 1 + caches.extra.length; // the heads this session decodes with
      const logits = Array.from({ length: heads }, (_, i) => this.trunk.unembed(this.headHidden(i, z, mask, i === 0 ? caches.trunk : caches.extra[i - 1]))); // heads × [1, T, V]
      return tf.concat(logits, 0) as tf.Tensor3D; // [heads, T, V]
    });
  }

  newCache(): KVCache {
    return this.trunk.newCache();
  }

  /** The key of head h's fused webgpu state (2 ≤ h ≤ k). */
  gpuHeadKey(h: number): object {
    if (!this.gpuKeys.has(h)) this.gpuKeys.set(h, {});
    return this.gpuKeys.get(h)!;
  }

  private readonly gpuKeys = new Map<number, object>();

  /** Trunk and head 1 over new tokens [T]: next-token logits [T, V]; features = the shared trunk's output z [T, C]. */
  verifyForward(tokens: number[], cache: KVCache, opts: VerifyOptions = {}): { logits: tf.Tensor2D; features: tf.Tensor2D } {
    const T = tokens.length;
    const to = this.nShared + this.headLayers;
    const fused = this.trunk.decodeFused(cache, { tokens, positions: opts.positions, mask: opts.mask, from: 0, to, taps: [this.nShared], head: true });
    if (fused) return { logits: fused.logits!, features: fused.features };
    const { x, mask } = this.trunk.embed(tf.tensor2d([tokens], [1, T], 'int32'), { cache, ...opts });
    const z = this.trunk.blocks(x, mask, 0, this.nShared, cache); // [1, T, C]
    const h = this.trunk.blocks(z, mask, this.nShared, this.nShared + this.headLayers, cache); // head 1
    return { logits: tf.reshape(this.trunk.unembed(h), [T, this.config.vocabSize]), features: tf.reshape(z, [T, this.config.nEmbd]) };
  }

  /**
   * Heads 2..n over new trunk outputs z [R, C], appending to their caches (caches[i − 1] for head
   * i + 1): their hidden states at the last row, [n − 1, C] (before the shared final norm).
   */
  headsLastRow(z: tf.Tensor2D, caches: KVCache[]): tf.Tensor2D {
    const [R, C] = z.shape;
    const rows = caches.map((cache, i) => {
      const mask = this.trunk.causalMask(cache.length, R);
      const h = this.headHidden(i + 1, tf.reshape(z, [1, R, C]), mask, cache); // [1, R, C]
      return tf.reshape(tf.slice(h, [0, R - 1, 0], [1, 1, C]), [1, C]);
    });
    return tf.concat(rows, 0) as tf.Tensor2D; // [n − 1, C]
  }

  /**
   * Blockwise / tree drafting with heads 2..k (Gloeckle et al. 2024 §3.2; Stern et al. 2018): head
   * d + 1 drafts depth d. Heads 2..k run once per step over the newly committed positions only — their
   * caches need exactly those — and are unembedded at the last one, so rejected drafts cost them nothing.
   * `dynamic`: an EAGLE-2 tree ranked by the product of the heads' probabilities along each path.
   */
  drafter(opts: DrafterOptions = {}): Drafter {
    if (opts.dynamic) {
      const dynamic = resolveDynamicTree('parallel heads', opts, this.k - 1);
      return new HeadsDrafter(dynamicTreeName('parallel heads', dynamic), new ParallelHeads(this, dynamic.depth), { dynamic }, this.config.vocabSize);
    }
    const choices = drafterShape('parallel heads', this.k, opts);
    const depth = choices.reduce((m, p) => Math.max(m, p.length), 0);
    const kind = choices.length === depth ? 'chain' : `${choices.length + 1}-node tree`;
    return new HeadsDrafter(`parallel heads ${kind} k=${depth + 1}`, new ParallelHeads(this, depth), choices, this.config.vocabSize);
  }

  dispose(): void {
    this.trunk.dispose();
  }
}

/**
 * Heads 2..n+1 of a parallel model as a drafting source. Each step they take in the newly committed
 * rows of the shared trunk's output z (their KV caches need every committed position) and give logits
 * at the last one only.
 *
 * With one block per head (the default) the heads run batched: their first LayerNorm gain and bias are
 * folded into one QKV weight for all heads, LN(z)·W_h = n(z)·(diag(g_h) W_h) + b_h W_h with n(z) the
 * gain-free normalisation, so one product gives every head's Q, K, V; one KV cache holds the heads as
 * its batch, so one attention call serves them all; and the rest of each block (output projection,
 * MLP) runs at the last row only, the one whose output is used. Deeper heads run head by head.
 */
class ParallelHeads implements HeadsSource {
  forwards = 0;
  private caches: KVCache[];
  /** The batched path's folded weights (one block per head). */
  private readonly folded: { wqkv: tf.Tensor2D; bqkv: tf.Tensor1D; ones: tf.Tensor1D; zeros: tf.Tensor1D } | null;

  constructor(
    private readonly model: ParallelModel,
    readonly heads: number,
  ) {
    const batched = model.headLayers === 1 && heads > 0;
    this.caches = batched ? [new KVCache(1)] : Array.from({ length: heads }, () => new KVCache(model.headLayers));
    this.folded = batched ? tf.tidy(() => foldHeads(model, heads)) : null;
  }

  logits(info: CommitInfo, depth: number): tf.Tensor2D {
    if (info.reset) for (const c of [...this.caches, ...(this.gpuCaches ?? [])]) c.dispose();
    const rows = info.rows;
    const contiguous = rows.every((r, i) => r === rows[0] + i);
    const z = (contiguous ? tf.slice(info.features, [rows[0], 0], [rows.length, -1]) : tf.gather(info.features, tf.tensor1d(rows as number[], 'int32'))) as tf.Tensor2D; // [R, C]
    this.forwards += 1;
    const fused = this.logitsWebGpu(z, depth);
    if (fused) return fused;
    const h = this.folded ? this.batchedLastRow(z, depth) : this.model.headsLastRow(z, this.caches.slice(0, depth)); // [depth, C]
    return tf.reshape(this.model.trunk.unembed(tf.reshape(h, [1, depth, -1]) as tf.Tensor3D), [depth, -1]) as tf.Tensor2D; // [depth, V]
  }

  dispose(): void {
    for (const c of [...this.caches, ...(this.gpuCaches ?? [])]) c.dispose();
    if (this.folded) tf.dispose(Object.values(this.folded));
  }

  /** Per head, its cache on the fused webgpu path (made on first use there). */
  private gpuCaches: KVCache[] | null = null;

  /**
   * Heads 2..depth+1 as the fused webgpu programs (backend/webgpu_decode.ts): each head's blocks over the new rows z
   * [R, C] on its own cache kept on the GPU, then the shared head at the last row: [depth, V]. Null where that path does
   * not apply.
   */
  private logitsWebGpu(z: tf.Tensor2D, depth: number): tf.Tensor2D | null {
    if (!webgpuBackend()) return null;
    const m = this.model;
    const L = m.headLayers;
    this.gpuCaches ??= Array.from({ length: this.heads }, () => new KVCache(L));
    const rows: tf.Tensor2D[] = [];
    for (let i = 0; i < depth; i++) {
      const h = i + 2;
      const gpu = gpuDecodeModel(m.gpuHeadKey(h), { ...m.trunk.decodeShape(), nLayer: L, draftInput: false, medusaHeads: 0 });
      const cache = this.gpuCaches[i];
      const store = gpu && cache.gpuStore(gpu);
      if (!gpu || !store) {
        tf.dispose(rows);
        return null;
      }
      const lookup = (name: string) => (/^l\d+\./.test(name) ? param(m.params, `h${h}.${name}`) : param(m.params, name));
      const out = gpu.forward(store, cache.length, { x: z, from: 0, to: L, taps: [L], head: true, lastRowLogits: true }, lookup);
      cache.advanceLayers(0, L, z.shape[0]);
      rows.push(out.logits!);
    }
    return rows.length === 1 ? rows[0] : (tf.concat(rows, 0) as tf.Tensor2D); // [depth, V]
  }

  /** One-block heads 2..n+1 batched over new rows z [R, C] → their outputs at the last row [n, C]. */
  private batchedLastRow(z: tf.Tensor2D, n: number): tf.Tensor2D {
    const { nHead, normEps, nEmbd: C } = this.model.config;
    const f = this.folded!;
    const R = z.shape[0];
    const cache = this.caches[0];
    const qkv = project(layerNorm(z, f.ones, f.zeros, normEps) as tf.Tensor2D, f.wqkv, f.bqkv); // [R, n·3C]
    const byHead = tf.reshape(tf.transpose(tf.reshape(qkv, [R, n, 3 * C]), [1, 0, 2]), [n * R, 3 * C]) as tf.Tensor2D; // heads as the batch, [n·R, 3C]
    const att = attendQKV(byHead, n, R, C, nHead, { mask: this.model.trunk.causalMask(cache.length, R), cache, layer: 0 }); // [n·R, C]
    const last = tf.reshape(tf.slice(tf.reshape(att, [n, R, C]), [0, R - 1, 0], [n, 1, C]), [n, C]); // [n, C]
    const zLast = tf.slice(z, [R - 1, 0], [1, C]) as tf.Tensor2D; // [1, C]
    const out = tf.split(last, n, 0).map((a, i) => {
      const p = `h${i + 2}.l0.`;
      const x1 = project(a as tf.Tensor2D, param(this.model.params, `${p}wo`) as tf.Tensor as tf.Tensor2D, undefined, zLast); // z + attention
      const h2 = layerNorm(x1, param(this.model.params, `${p}ln2g`), param(this.model.params, `${p}ln2b`), normEps) as tf.Tensor2D;
      return mlpRows(h2, this.model.params, p, x1); // [1, C]
    });
    return tf.concat(out, 0) as tf.Tensor2D; // [n, C]
  }
}

/** Heads 2..n+1's first LayerNorm folded into one QKV weight [C, n·3C] and bias [n·3C] (see ParallelHeads). */
function foldHeads(model: ParallelModel, n: number): { wqkv: tf.Tensor2D; bqkv: tf.Tensor1D; ones: tf.Tensor1D; zeros: tf.Tensor1D } {
  const C = model.config.nEmbd;
  const get = (name: string) => param(model.params, name);
  const heads = Array.from({ length: n }, (_, i) => `h${i + 2}.l0.`);
  const w = heads.map((p) => tf.mul(tf.reshape(get(`${p}ln1g`), [C, 1]), get(`${p}wqkv`))); // diag(g_h)·W_h [C, 3C]
  const b = heads.map((p) => tf.reshape(tf.matMul(tf.reshape(get(`${p}ln1b`), [1, C]), get(`${p}wqkv`) as tf.Tensor as tf.Tensor2D), [3 * C])); // b_h·W_h [3C]
  return { wqkv: tf.concat(w, 1) as tf.Tensor2D, bqkv: tf.concat(b) as tf.Tensor1D, ones: tf.ones([C]), zeros: tf.zeros([C]) };
}
