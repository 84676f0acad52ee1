/**
 * The two fixes the `wasm` backend (tfjs-backend-wasm 4.22) needs before training on it (RECIPES.md):
 *  a) a missing `UnsortedSegmentSum` kernel, without which the gradient of `tf.gather` (embeddings) throws;
 *  b) a `BatchMatMul` that transposes explicitly instead of using the slow transpose flags (and folds a batch into rows
 *     when the right operand is unbatched), so that XNNPACK's fast path runs.
 */
import * as tf from '@tensorflow/tfjs';
import { unsortedSegmentSumWasmConfig } from './wasm_segment_sum';
import { wrapWasmBatchMatMul } from './wasm_batch_matmul';

/**
 * Registers both fixes for the `wasm` backend. Idempotent: an existing wasm UnsortedSegmentSum is kept, and
 * BatchMatMul is wrapped once. Call after importing '@tensorflow/tfjs-backend-wasm' (it registers the kernels being
 * wrapped); before or after the backend is initialized both work.
 */
export function registerWasmFixes(): void {
  if (tf.getKernel(tf.UnsortedSegmentSum, 'wasm') === undefined) tf.registerKernel(unsortedSegmentSumWasmConfig);
  wrapWasmBatchMatMul();
}
