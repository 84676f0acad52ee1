/**
 * The interface every variant implements (docs/algorithms.md, the model interface), so trainers, decoders and
 * experiments treat them alike, and the joint backward they share. Kept apart from the factory (create.ts) so the
 * variant files can import it without an import cycle.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackwardMode, ModelConfig } from '../config';
import type { Drafter, DrafterOptions, VerifyTarget } from '../decode/drafter';
import type { CacheSet } from './cache_set';
import type { ParamMap } from './params';
import type { Transformer } from './transformer';

/** Loss of one batch: the scalar to minimise plus per-head loss and top-1 accuracy (for logging). */
export interface LossOutput {
  loss: tf.Scalar;
  heads: { loss: tf.Scalar; acc: tf.Scalar }[];
}


export interface LossAndGrads extends LossOutput {
  /** Gradient per trainable variable, keyed by tf.Variable name. */
  grads: tf.NamedTensorMap;
}

export interface DecodeOptions {
  /** Position ids of the new tokens (default: contiguous after the cache). */
  positions?: number[];
  /** Additive attention mask [T, S] (default: causal). */
  mask?: tf.Tensor2D;
}

export interface MtpModel extends VerifyTarget {
  readonly config: ModelConfig;
  /** The trunk (embeddings, blocks, final norm, unembedding); its full forward is the next-token model. */
  readonly trunk: Transformer;
  /** Future tokens each position is trained to predict (1 = plain next-token model). */
  readonly k: number;
  /** Tokens per step its drafter proposes by default when that is not k (an autoregressive drafter: any depth). */
  readonly draftK?: number;
  /** Entries of LossOutput.heads when that is not k (the feature drafter reports each unrolled drafting step). */
  readonly lossHeads?: number;
  /** Every named parameter (what a checkpoint holds). */
  readonly params: ParamMap;
  /**
   * inputs [B, T] int32, targets [k, B, T] int32 (head i predicts x[t+i+1]) → loss. `progress` is the
   * fraction of training done (0..1), for loss weights that follow a schedule; evaluation passes 1.
   */
  loss(inputs: tf.Tensor2D, targets: tf.Tensor3D, progress?: number): LossOutput;
  /** Loss and gradients of the trainable variables (caller disposes grads, loss and head tensors). */
  lossAndGrads(inputs: tf.Tensor2D, targets: tf.Tensor3D, mode: BackwardMode, progress?: number): LossAndGrads;
  /** Learning-rate multiplier of a parameter (by its name in `params`); absent = 1 for all. */
  lrMultiplier?(name: string): number;
  /** Variables the optimiser updates. */
  trainableVariables(): tf.Variable[];
  /**
   * Empty caches for one decoding session (batch 1). `heads`: how many heads the session decodes with
   * (default all); heads beyond it are then not computed by decodeLogits.
   */
  newCaches(heads?: number): CacheSet;
  /**
   * Decoding forward over new tokens (batch 1), appending to the caches: logits of every head the
   * caches were made for, [heads, T, V], head 0 being the next-token distribution. Inside tf.tidy;
   * the caller disposes.
   */
  decodeLogits(tokens: number[], caches: CacheSet, opts?: DecodeOptions): tf.Tensor3D;
  /**
   * The variant's drafter for the decoding engine (decode/engine.ts): it proposes draft trees from
   * the variant's extra heads or modules, k − 1 deep at most (k default: the model's k).
   */
  drafter(opts?: DrafterOptions): Drafter;
  dispose(): void;
}

/** How many heads a model's loss reports (what training logs and evaluation average). */
export function lossHeadCount(model: MtpModel): number {
  return model.lossHeads ?? model.k;
}

/** Joint backward: one gradient computation through the whole loss. */
export function jointLossAndGrads(model: MtpModel, inputs: tf.Tensor2D, targets: tf.Tensor3D, progress = 1): LossAndGrads {
  let heads: LossOutput['heads'] = [];
  const { value, grads } = tf.variableGrads(() => {
    const out = model.loss(inputs, targets, progress);
    heads = out.heads.map((h) => ({ loss: tf.keep(h.loss), acc: tf.keep(h.acc) }));
    return out.loss;
  }, model.trainableVariables());
  return { loss: value, heads, grads };
}
