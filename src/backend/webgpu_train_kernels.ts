/**
 * Whether the model's fused training kernels run on `webgpu` now, registering them on first use: LayerNorm, bias + GELU
 * and attention under the wasm kernels' names (one gradient each serves both backends), and the cross-entropy over the
 * vocabulary (webgpu only). The model code calls the same fused ops on either backend (layers.ts, transformer.ts) and
 * the plain tfjs ops elsewhere, or when MTP_WEBGPU_TRAIN is false.
 */
import * as tf from '@tensorflow/tfjs';
import { registerAttentionKernels } from './wasm_attention';
import { registerBiasGeluKernels } from './wasm_bias_gelu';
import { registerLayerNormKernels } from './wasm_layer_norm';
import { webgpuAttentionKernels } from './webgpu_train_attention';
import { webgpuBiasGeluKernels } from './webgpu_train_bias_gelu';
import { registerCrossEntropyGradient, webgpuCrossEntropyKernels } from './webgpu_train_cross_entropy';
import { webgpuTrainBackend } from './webgpu_train_dispatch';
import { webgpuLayerNormKernels } from './webgpu_train_layer_norm';

let registered = false;

/** True when the active backend is webgpu with the fused training programs on (and able to run them). */
export function webgpuTrainKernels(): boolean {
  if (!webgpuTrainBackend()) return false;
  if (!registered) {
    for (const k of [...webgpuLayerNormKernels, ...webgpuBiasGeluKernels, ...webgpuAttentionKernels, ...webgpuCrossEntropyKernels]) if (tf.getKernel(k.kernelName, k.backendName) === undefined) tf.registerKernel(k);
    registerLayerNormKernels(); // the gradients, shared with wasm
    registerBiasGeluKernels();
    registerAttentionKernels(); // also the gradient of attention over a cache: an error, as on wasm
    registerCrossEntropyGradient();
    registered = true;
  }
  return true;
}
