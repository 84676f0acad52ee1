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
import { Rng } from '../util/rng';
import { CacheSet } from './cache_set';
import type { BackwardMode } from '../config';
import type { DecodeOptions, LossAndGrads, LossOutput, MtpModel } from './mtp_model';
import { jointLossAndGrads } from './mtp_model';
import { KVCache } from './kv_cache';
import { block } from './layers';
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
  private headHidden(i: number, z: tf.Tensor3D, mask: tf.Tensor2D, caches?: CacheSet): tf.Tensor3D {
    if (i === 0) return this.trunk.blocks(z, mask, this.nShared, this.nShared + this.headLayers, caches?.trunk);
    const { nHead, normEps } = this.config;
    let h = z;
    for (let j = 0; j < this.headLayers; j++) {
      h = block(h, this.params, `h${i + 1}.l${j}.`, nHead, normEps, { mask, cache: caches?.extra[i - 1], layer: j });
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
      const logits = Array.from({ length: heads }, (_, i) => this.trunk.unembed(this.headHidden(i, z, mask, caches))); // heads × [1, T, V]
      return tf.concat(logits, 0) as tf.Tensor3D; // [heads, T, V]
    });
  }

  dispose(): void {
    this.trunk.dispose();
  }
}
