/**
 * One factory for every variant (DESIGN §3). Each variant exposes the same operations so trainers,
 * decoders and experiments treat them alike; only the algorithms that truly differ branch on kind.
 */
import * as tf from '@tensorflow/tfjs';
import type { ModelConfig } from '../config';
import { validateModel } from '../config';
import type { ParamMap } from './params';
import { crossEntropy, Transformer } from './transformer';

/** Loss of one batch: the scalar to minimise plus per-head loss and top-1 accuracy (for logging). */
export interface LossOutput {
  loss: tf.Scalar;
  heads: { loss: tf.Scalar; acc: tf.Scalar }[];
}

export interface MtpModel {
  readonly config: ModelConfig;
  /** The shared trunk (embeddings, blocks, final norm, unembedding). */
  readonly trunk: Transformer;
  /** Future tokens each position is trained to predict (1 = plain next-token model). */
  readonly k: number;
  /** inputs [B, T] int32, targets [k, B, T] int32 (head i predicts x[t+i+1]) → loss. */
  loss(inputs: tf.Tensor2D, targets: tf.Tensor3D): LossOutput;
  /** Variables the optimiser updates. */
  trainableVariables(): tf.Variable[];
  /** Every named parameter (what a checkpoint holds). */
  readonly params: ParamMap;
  dispose(): void;
}

/** The plain next-token model (mtp.kind = 'none'): the baseline every variant is compared with. */
class BaseModel implements MtpModel {
  readonly trunk: Transformer;
  readonly k = 1;

  constructor(readonly config: ModelConfig) {
    this.trunk = new Transformer(config);
  }

  get params(): ParamMap {
    return this.trunk.params;
  }

  loss(inputs: tf.Tensor2D, targets: tf.Tensor3D): LossOutput {
    const [, B, T] = targets.shape;
    const logits = this.trunk.unembed(this.trunk.trunk(inputs)); // [B, T, V]
    const head = crossEntropy(logits, tf.reshape(tf.slice(targets, [0, 0, 0], [1, B, T]), [B, T]));
    return { loss: head.loss, heads: [head] };
  }

  trainableVariables(): tf.Variable[] {
    return this.trunk.variables();
  }

  dispose(): void {
    this.trunk.dispose();
  }
}

/** Builds the model a config describes. */
export function createModel(config: ModelConfig): MtpModel {
  validateModel(config);
  switch (config.mtp.kind) {
    case 'none':
      return new BaseModel(config);
  }
}
