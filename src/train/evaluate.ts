/** Validation: mean loss and per-head metrics of a model over fixed batches. */
import * as tf from '@tensorflow/tfjs';
import type { Batch } from '../data/batch';
import type { MtpModel } from '../model/create';
import { lossHeadCount } from '../model/mtp_model';

export interface HeadMetrics {
  loss: number;
  acc: number;
}

export interface EvalResult {
  /** Mean of the training objective (for k = 1: next-token cross-entropy, nats). */
  loss: number;
  /** Per head i: cross-entropy (nats) and top-1 accuracy of predicting x[t+i+1]. */
  heads: HeadMetrics[];
}

/** Averages the model's loss over batches (each with targets for the model's k heads). */
export async function evaluate(model: MtpModel, batches: Batch[]): Promise<EvalResult> {
  const { k } = model;
  const sums = new Float64Array(1 + 2 * lossHeadCount(model));
  for (const b of batches) {
    if (b.k < k) throw new Error(`evaluate: batch has targets for ${b.k} heads, the model has ${k}`);
    const packed = tf.tidy(() => {
      const targets = tf.slice(tf.tensor3d(b.targets, [b.k, b.B, b.T], 'int32'), [0, 0, 0], [k, b.B, b.T]) as tf.Tensor3D;
      const out = model.loss(tf.tensor2d(b.inputs, [b.B, b.T], 'int32'), targets);
      return tf.stack([out.loss, ...out.heads.flatMap((h) => [h.loss, h.acc])]);
    });
    const read = await packed.data();
    packed.dispose();
    read.forEach((x, i) => (sums[i] += x));
  }
  const n = batches.length;
  const heads: HeadMetrics[] = [];
  for (let i = 0; i < lossHeadCount(model); i++) heads.push({ loss: sums[1 + 2 * i] / n, acc: sums[2 + 2 * i] / n });
  return { loss: sums[0] / n, heads };
}
