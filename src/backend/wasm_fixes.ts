/**
 * What the `wasm` backend (tfjs-backend-wasm 4.22) needs before training on it (docs/backends.md, wasm):
 *  a) a missing `UnsortedSegmentSum` kernel, without which the gradient of `tf.gather` (embeddings) throws;
 *  b) a `BatchMatMul` that transposes explicitly instead of using the slow transpose flags (and folds a batch into rows
 *     when the right operand is unbatched), so that XNNPACK's fast path runs;
 * and what makes it fast (switchable with the MTP_WASM_FAST flag, wasm_native.ts):
 *  c) zero-copy `Identity`/`Cast` (gradients clone every tensor they save);
 *  d) fast `GatherV2` along axis 0 and `Sum` over leading axes;
 *  e) this package's GEMM for BatchMatMul (wasm_batch_matmul.ts) and fused kernels — attention, LayerNorm,
 *     bias + GELU, linear + bias + residual — on its own SIMD module (wasm_native.ts), used by src/model/layers.ts
 *     once `loadNativeKernels()` has bound them to the backend.
 */
import * as tf from '@tensorflow/tfjs';
import { unsortedSegmentSumWasmConfig } from './wasm_segment_sum';
import { wrapWasmBatchMatMul } from './wasm_batch_matmul';
import { registerZeroCopyKernels } from './wasm_zero_copy';
import { registerGatherSumKernels } from './wasm_gather_sum';
import { registerAttentionKernels } from './wasm_attention';
import { registerLayerNormKernels } from './wasm_layer_norm';
import { registerBiasGeluKernels } from './wasm_bias_gelu';
import { registerLinearKernel } from './wasm_linear';
import { registerDecodeBlockKernel } from './wasm_decode_block';

/**
 * Registers every fix and kernel for the `wasm` backend. Idempotent: an existing wasm UnsortedSegmentSum is kept, and
 * wrapped kernels are wrapped once. Call after importing '@tensorflow/tfjs-backend-wasm' (it registers the kernels being
 * wrapped); before or after the backend is initialized both work.
 */
export function registerWasmFixes(): void {
  if (tf.getKernel(tf.UnsortedSegmentSum, 'wasm') === undefined) tf.registerKernel(unsortedSegmentSumWasmConfig);
  wrapWasmBatchMatMul();
  registerZeroCopyKernels();
  registerGatherSumKernels();
  registerAttentionKernels();
  registerLayerNormKernels();
  registerBiasGeluKernels();
  registerLinearKernel();
  registerDecodeBlockKernel();
}
