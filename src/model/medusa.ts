/**
 * Medusa heads (Cai et al. 2024, "Medusa: Simple LLM Inference Acceleration Framework with Multiple
 * Decoding Heads", §2.1.1): K extra heads on the base model's last hidden state h (after the final
 * norm, as HF models expose it). Head k (k = 1..K) predicts x[t+k+1] — the base LM head predicts x[t+1]:
 *
 *   p⁽ᵏ⁾ = softmax(W2ₖ · (SiLU(W1ₖ · h + b1ₖ) + h))
 *
 * W1ₖ and b1ₖ start at zero, so the residual block is the identity, and W2ₖ starts as a copy of the LM
 * head: every head begins as the base model's next-token distribution, shifted by k positions.
 *
 * Training (§2.2): Medusa-1 freezes the trunk and trains the heads only, L = Σₖ λₖ·CEₖ with
 * λₖ = decay^k; Medusa-2 trains jointly, L = L_LM + λ₀·Σₖ λₖ·CEₖ, the heads with a larger learning rate
 * (`lrMultiplier`). Targets [1 + K, B, T]: row 0 is the LM's next token, row k head k's x[t+k+1].
 *
 * This follows the paper. FasterDecoding/Medusa (medusa/model/medusa_model.py) differs in two details:
 * its ResBlock zero-initialises only W1's weight (the bias keeps PyTorch's default uniform init, so
 * the heads do not start exactly as the LM head), and `[ResBlock(hidden)] * medusa_num_layers` repeats
 * one module object, so a head with several layers shares their weights. It copies the LM head into W2
 * as the paper says.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackwardMode, MedusaMtp, ModelConfig } from '../config';
import type { CommitInfo, Drafter, DrafterOptions, VerifyOptions } from '../decode/drafter';
import { HeadsDrafter, HeadsSource } from '../decode/heads_drafter';
import { drafterShape } from '../decode/tree_shape';
import { dynamicTreeName, resolveDynamicTree } from '../decode/dynamic_tree';
import { Rng } from '../util/rng';
import { CacheSet } from './cache_set';
import type { KVCache } from './kv_cache';
import type { DecodeOptions, LossAndGrads, LossOutput, MtpModel } from './mtp_model';
import { jointLossAndGrads } from './mtp_model';
import { layerNorm, param, project } from './layers';
import { nextScope, ParamFactory, ParamMap } from './params';
import { crossEntropy, Transformer } from './transformer';
import { gpuDecodeModel, webgpuBackend } from '../backend/webgpu_decode';

/** Name prefix of head k's parameters (1-based): `medusa1.w1`, `medusa1.b1`, `medusa1.w2`, … */
export const HEAD_PREFIX = 'medusa';

export class MedusaModel implements MtpModel {
  readonly trunk: Transformer;
  /** 1 + K: the LM head plus K Medusa heads. */
  readonly k: number;
  /** K, the Medusa heads. */
  readonly heads: number;
  /** λₖ = decay^k for k = 1..K. */
  readonly lambdas: number[];
  private readonly headVars: tf.Variable[];

  constructor(
    readonly config: ModelConfig,
    readonly mtp: MedusaMtp,
  ) {
    this.heads = mtp.heads;
    this.k = 1 + mtp.heads;
    this.lambdas = Array.from({ length: mtp.heads }, (_, i) => mtp.decay ** (i + 1));
    // Same seed stream and names as the plain model: the trunk equals `createModel({ ...config, mtp: none })`.
    const factory = new ParamFactory(new Map(), new Rng(config.seed), nextScope('medusa'));
    this.trunk = new Transformer({ ...config, mtp: { kind: 'none' } }, factory);
    this.trunk.decodeHeads = mtp.heads; // the fused webgpu programs run the heads too (MedusaHeads.logits)
    const { nEmbd: C, vocabSize: V } = config;
    this.headVars = [];
    for (let k = 1; k <= this.heads; k++) {
      const p = `${HEAD_PREFIX}${k}.`;
      this.headVars.push(factory.add(`${p}w1`, [C, C], 0, 0), factory.add(`${p}b1`, [C], 0, 0), factory.add(`${p}w2`, [C, V], 0, 0));
    }
    this.initHeads();
  }

  /**
   * A Medusa model on a trained trunk (for Medusa-1 on a plain checkpoint): copies every trunk
   * parameter by name from `base` (a plain model, or any variant whose trunk has the same names and
   * shapes), then initialises the heads from the copied LM head.
   */
  static fromTrunk(base: { config: ModelConfig; params: ParamMap }, mtp: MedusaMtp): MedusaModel {
    const model = new MedusaModel({ ...base.config, mtp }, mtp);
    try {
      for (const [name, v] of model.trunk.params) {
        if (name.startsWith(HEAD_PREFIX)) continue;
        const src = base.params.get(name);
        if (!src || src.shape.join() !== v.shape.join()) {
          throw new Error(`MedusaModel.fromTrunk: the base model lacks trunk parameter '${name}' of shape [${v.shape}]${src ? `, it has [${src.shape}]` : ''}`);
        }
        v.assign(src);
      }
    } catch (e) {
      model.dispose();
      throw e;
    }
    model.initHeads();
    return model;
  }

  get params(): ParamMap {
    return this.trunk.params;
  }

  /** Resets every head to the paper's init: W1ₖ = 0, b1ₖ = 0, W2ₖ = the LM head [C, V]. */
  initHeads(): void {
    tf.tidy(() => {
      const lm = this.lmMatrix();
      for (let k = 1; k <= this.heads; k++) {
        const p = `${HEAD_PREFIX}${k}.`;
        for (const n of ['w1', 'b1']) param(this.params, p + n).assign(tf.zerosLike(param(this.params, p + n)));
        param(this.params, `${p}w2`).assign(lm);
      }
    });
  }

  /** Variables the optimiser updates: the heads only for Medusa-1 (frozen trunk), everything for Medusa-2. */
  trainableVariables(): tf.Variable[] {
    return this.mtp.frozenTrunk ? [...this.headVars] : [...this.params.values()];
  }

  /** Medusa-2 trains the heads `headLrMultiplier` times faster than the trunk (§2.2.2). */
  lrMultiplier(name: string): number {
    return !this.mtp.frozenTrunk && name.startsWith(HEAD_PREFIX) ? this.mtp.headLrMultiplier : 1;
  }

  /** The LM head as [C, V] (the transposed token embedding when tied). */
  private lmMatrix(): tf.Tensor2D {
    return this.config.tieEmbeddings ? (tf.transpose(param(this.params, 'tokEmb')) as tf.Tensor2D) : (param(this.params, 'head') as tf.Tensor as tf.Tensor2D);
  }

  /** Last hidden state h = LN_f(trunk(x)): z [B, T, C] → h [B·T, C]. */
  private finalHidden(z: tf.Tensor3D): tf.Tensor2D {
    const [B, T, C] = z.shape;
    const h = layerNorm(z, param(this.params, 'lnfg'), param(this.params, 'lnfb'), this.config.normEps);
    return tf.reshape(h, [B * T, C]);
  }

  /** Base next-token logits, h [B·T, C] → [B·T, V], computed exactly as Transformer.unembed does. */
  private baseLogits(h: tf.Tensor2D): tf.Tensor2D {
    return this.config.tieEmbeddings ? tf.matMul(h, param(this.params, 'tokEmb'), false, true) : tf.matMul(h, param(this.params, 'head'));
  }

  /** Head k's logits (1-based): h [B·T, C] → W2ₖ(SiLU(W1ₖh + b1ₖ) + h) [B·T, V]. */
  headLogits(h: tf.Tensor2D, k: number): tf.Tensor2D {
    const p = `${HEAD_PREFIX}${k}.`;
    const a = tf.add(tf.matMul(h, param(this.params, `${p}w1`)), param(this.params, `${p}b1`)); // [B·T, C]
    const r = tf.add(tf.mul(a, tf.sigmoid(a)), h) as tf.Tensor2D; // SiLU + residual, [B·T, C]
    return tf.matMul(r, param(this.params, `${p}w2`)); // [B·T, V]
  }

  /** h [B·T, C] for tokens [B, T] (training: fresh causal forward, no cache). */
  hidden(inputs: tf.Tensor2D): tf.Tensor2D {
    return this.finalHidden(this.trunk.trunk(inputs));
  }

  loss(inputs: tf.Tensor2D, targets: tf.Tensor3D): LossOutput {
    const [rows, B, T] = targets.shape;
    if (rows < this.k) throw new Error(`medusa loss: targets hold ${rows} rows, the model needs 1 + K = ${this.k}`);
    const V = this.config.vocabSize;
    const h = this.hidden(inputs); // [B·T, C]
    const row = (i: number) => tf.reshape(tf.slice(targets, [i, 0, 0], [1, B, T]), [B, T]) as tf.Tensor2D;
    const as3d = (x: tf.Tensor2D) => tf.reshape(x, [B, T, V]) as tf.Tensor3D;
    const heads = [crossEntropy(as3d(this.baseLogits(h)), row(0))];
    for (let k = 1; k <= this.heads; k++) heads.push(crossEntropy(as3d(this.headLogits(h, k)), row(k)));
    const medusa = tf.addN(heads.slice(1).map((x, i) => tf.mul(x.loss, this.lambdas[i]))) as tf.Scalar; // Σₖ λₖ·CEₖ
    const loss = this.mtp.frozenTrunk ? medusa : (tf.add(heads[0].loss, tf.mul(medusa, this.mtp.lambda0)) as tf.Scalar);
    return { loss, heads };
  }

  lossAndGrads(inputs: tf.Tensor2D, targets: tf.Tensor3D, _mode: BackwardMode): LossAndGrads {
    return jointLossAndGrads(this, inputs, targets);
  }

  /** The heads hold no attention, so the trunk's cache is the only one. */
  newCaches(): CacheSet {
    return new CacheSet(this.trunk.newCache());
  }

  /**
   * Decoding forward over new tokens (batch 1), appending to the caches: the base logits [T, V] and
   * the last hidden state h [T, C], from which `headsLogits` gives the drafts of any row. Tree
   * decoding needs the heads at one node per step only, so it asks for them separately.
   */
  decodeHidden(tokens: number[], caches: CacheSet, opts: DecodeOptions = {}): { logits: tf.Tensor2D; hidden: tf.Tensor2D } {
    return tf.tidy(() => {
      const L = this.config.nLayer;
      const fused = this.trunk.decodeFused(caches.trunk, { tokens, positions: opts.positions, mask: opts.mask, from: 0, to: L, taps: [], head: true, normedFeatures: true });
      if (fused) return { logits: fused.logits!, hidden: fused.features };
      const input = tf.tensor2d([tokens], [1, tokens.length], 'int32');
      const hidden = this.finalHidden(this.trunk.trunk(input, { cache: caches.trunk, positions: opts.positions, mask: opts.mask })); // [T, C]
      return { logits: this.baseLogits(hidden), hidden };
    });
  }

  /** Every head's logits at hidden rows h [T, C] → [K, T, V]. */
  headsLogits(hidden: tf.Tensor2D): tf.Tensor3D {
    return tf.tidy(() => tf.stack(Array.from({ length: this.heads }, (_, i) => this.headLogits(hidden, i + 1))) as tf.Tensor3D);
  }

  /** Logits [1 + K, T, V]: row 0 the base model's next token, row k head k's x[t+k+1]. */
  decodeLogits(tokens: number[], caches: CacheSet, opts: DecodeOptions = {}): tf.Tensor3D {
    return tf.tidy(() => {
      const { logits, hidden } = this.decodeHidden(tokens, caches, opts);
      return tf.concat([tf.expandDims(logits, 0), this.headsLogits(hidden)], 0) as tf.Tensor3D; // [1 + K, T, V]
    });
  }

  newCache(): KVCache {
    return this.trunk.newCache();
  }

  /** Trunk over new tokens [T]: base logits [T, V]; features = the last hidden state h [T, C] the heads read. */
  verifyForward(tokens: number[], cache: KVCache, opts: VerifyOptions = {}): { logits: tf.Tensor2D; features: tf.Tensor2D } {
    const { logits, hidden } = this.decodeHidden(tokens, new CacheSet(cache), opts);
    return { logits, features: hidden };
  }

  /**
   * Medusa tree (or chain) drafting (§2.1.2): Medusa head d drafts depth d from the hidden state of
   * the last accepted node only — the heads hold no attention, so they never run on rejected drafts.
   * `dynamic`: an EAGLE-2 tree ranked by the product of the heads' probabilities along each path.
   */
  drafter(opts: DrafterOptions = {}): Drafter {
    if (opts.dynamic) {
      const dynamic = resolveDynamicTree('medusa', opts, this.heads);
      return new HeadsDrafter(dynamicTreeName('medusa', dynamic), new MedusaHeads(this, dynamic.depth), { dynamic }, this.config.vocabSize);
    }
    const choices = drafterShape('medusa', this.k, opts);
    const depth = choices.reduce((m, p) => Math.max(m, p.length), 0);
    const kind = choices.length === depth ? 'chain' : `${choices.length + 1}-node tree`;
    const source = new MedusaHeads(this, depth);
    return new HeadsDrafter(`medusa ${kind} k=${depth + 1}`, source, choices, this.config.vocabSize);
  }

  dispose(): void {
    this.trunk.dispose();
  }
}

/**
 * Medusa heads 1..n as a drafting source: their logits at the last committed row's hidden state h.
 * All heads read the same h, so their first layers run as one product with the W1ₖ side by side,
 * W1 = [W1₁ … W1ₙ] [C, n·C], SiLU and the residual on all at once; the W2ₖ stay per head.
 */
class MedusaHeads implements HeadsSource {
  forwards = 0;
  private readonly w1: tf.Tensor2D;
  private readonly b1: tf.Tensor1D;

  constructor(
    private readonly model: MedusaModel,
    readonly heads: number,
  ) {
    const p = (k: number, n: string) => param(model.params, `${HEAD_PREFIX}${k}.${n}`);
    const ks = Array.from({ length: heads }, (_, i) => i + 1);
    [this.w1, this.b1] = tf.tidy(() => [tf.concat(ks.map((k) => p(k, 'w1')), 1) as tf.Tensor2D, tf.concat(ks.map((k) => p(k, 'b1'))) as tf.Tensor1D]);
  }

  logits(info: CommitInfo, n: number): tf.Tensor2D {
    this.forwards += 1;
    const trunk = this.model.trunk;
    const gpu = webgpuBackend() && gpuDecodeModel(trunk.params, trunk.decodeShape()); // one program for every head
    if (gpu) return gpu.medusaLogits(info.features, info.rows[info.rows.length - 1], n, (name) => param(trunk.params, name));
    const C = this.model.config.nEmbd;
    const h = tf.slice(info.features, [info.rows[info.rows.length - 1], 0], [1, -1]) as tf.Tensor2D; // [1, C]
    const a = tf.reshape(project(h, this.w1, this.b1), [n, C]); // W1ₖh + b1ₖ for every head, [n, C]
    const r = tf.add(tf.mul(a, tf.sigmoid(a)), h) as tf.Tensor2D; // SiLU + residual, [n, C]
    const rows = tf.split(r, n, 0).map((x, i) => tf.matMul(x as tf.Tensor2D, param(this.model.params, `${HEAD_PREFIX}${i + 1}.w2`) as tf.Tensor as tf.Tensor2D));
    return tf.concat(rows, 0) as tf.Tensor2D; // [n, V]
  }

  dispose(): void {
    tf.dispose([this.w1, this.b1]);
  }
}
