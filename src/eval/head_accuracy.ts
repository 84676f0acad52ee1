/**
 * Per-head rank accuracies of Medusa heads on evaluation batches: the input of `optimizeTree`
 * (decode/tree.ts, Cai et al. 2024 §2.3.3).
 */
import * as tf from '@tensorflow/tfjs';
import type { Batch } from '../data/batch';
import type { MedusaModel } from '../model/medusa';

/**
 * out[k − 1][i] is the
 * fraction of positions where head k's rank-i token (i < topk) is its target x[t+k+1].
 */
export async function headRankAccuracies(model: MedusaModel, batches: Batch[], topk: number): Promise<number[][]> {
  const K = model.heads;
  const sums = Array.from({ length: K }, () => new Float64Array(topk));
  for (const b of batches) {
    if (b.k < model.k) throw new Error(`headRankAccuracies: batches hold targets for ${b.k} rows, the model needs ${model.k}`);
    const hits = tf.tidy(() => {
      const h = model.hidden(tf.tensor2d(b.inputs, [b.B, b.T], 'int32')); // [B·T, C]
      const targets = tf.tensor2d(b.targets, [b.k, b.B * b.T], 'int32'); // [k, B·T]
      const rows = Array.from({ length: K }, (_, i) => {
        const ranks = tf.topk(model.headLogits(h, i + 1), topk).indices; // [B·T, topk]
        const target = tf.slice(targets, [i + 1, 0], [1, -1]).reshape([-1, 1]); // [B·T, 1]
        return tf.mean(tf.cast(tf.equal(ranks, target), 'float32'), 0); // [topk]
      });
      return tf.stack(rows); // [K, topk]
    });
    const read = await hits.data();
    hits.dispose();
    for (let k = 0; k < K; k++) for (let i = 0; i < topk; i++) sums[k][i] += read[k * topk + i];
  }
  return sums.map((row) => Array.from(row, (s) => s / batches.length));
}
