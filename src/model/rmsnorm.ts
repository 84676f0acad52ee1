/**
 * RMSNorm with a learned gain (Zhang & Sennrich 2019), the norm DeepSeek-V3 §2.2 applies to both
 * inputs of every MTP module: y = g · x / sqrt(mean(x²) + eps) over the last axis. No mean
 * subtraction and no bias, unlike the trunk's LayerNorm.
 */
import * as tf from '@tensorflow/tfjs';

/** RMSNorm over the last axis. x: [..., C], g: [C] → [..., C]. */
export function rmsNorm(x: tf.Tensor, g: tf.Tensor, eps: number): tf.Tensor {
  const meanSquare = tf.mean(tf.square(x), -1, true); // [..., 1]
  return tf.mul(tf.mul(x, tf.rsqrt(tf.add(meanSquare, eps))), g);
}
