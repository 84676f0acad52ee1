/**
 * The MLP's bias + GELU, gelu(h + b) with gelu(z) = z·σ(1.702·z) (the PyTorch twin's sigmoid form), as one `wasm`
 * kernel forward and one backward (native/norm_gelu.c) that also sums the bias gradient over rows. Replaces an add,
 * three elementwise ops and, in the backward, their gradients plus a Sum over rows that tfjs-backend-wasm runs as a
 * transpose followed by a reduction.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { nativeKernelsFor } from './wasm_native';

export const BIAS_GELU = 'MtpBiasGelu';
export const BIAS_GELU_GRAD = 'MtpBiasGeluGrad';

type KernelArgs = Parameters<tf.KernelFunc>[0];

/** inputs {h [N, F], bias [F]} → gelu(h + bias) [N, F]. */
function biasGeluKernel({ inputs, backend }: KernelArgs): tf.TensorInfo {
  const { h, bias } = inputs as { h: tf.TensorInfo; bias: tf.TensorInfo };
  const k = nativeKernelsFor(backend);
  const [N, F] = h.shape;
  const out = (backend as BackendWasm).makeOutput(h.shape, 'float32');
  k.fn.bias_gelu_fwd(k.ptr(h), k.ptr(bias), k.ptr(out), N, F);
  return out;
}

/** inputs {dy, h, bias} → [dh [N, F], dbias [F]]. */
function biasGeluGradKernel({ inputs, backend }: KernelArgs): tf.TensorInfo[] {
  const { dy, h, bias } = inputs as { dy: tf.TensorInfo; h: tf.TensorInfo; bias: tf.TensorInfo };
  const k = nativeKernelsFor(backend);
  const [N, F] = h.shape;
  const dh = (backend as BackendWasm).makeOutput(h.shape, 'float32');
  const db = (backend as BackendWasm).makeOutput([F], 'float32');
  k.fn.bias_gelu_bwd(k.ptr(dy), k.ptr(h), k.ptr(bias), k.ptr(dh), k.ptr(db), N, F);
  return [dh, db];
}

/** Registers both kernels for `wasm` and the gradient of the forward one (idempotent). */
export function registerBiasGeluKernels(): void {
  const configs: tf.KernelConfig[] = [
    { kernelName: BIAS_GELU, backendName: 'wasm', kernelFunc: biasGeluKernel as unknown as tf.KernelFunc },
    { kernelName: BIAS_GELU_GRAD, backendName: 'wasm', kernelFunc: biasGeluGradKernel as unknown as tf.KernelFunc },
  ];
  for (const c of configs) if (tf.getKernel(c.kernelName, 'wasm') === undefined) tf.registerKernel(c);
  if (tf.getGradient(BIAS_GELU) === undefined) {
    tf.registerGradient({
      kernelName: BIAS_GELU,
      inputsToSave: ['h', 'bias'],
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
        const [dh, db] = tf.engine().runKernel(BIAS_GELU_GRAD, { dy: dy as tf.Tensor, h: saved[0], bias: saved[1] }) as tf.Tensor[];
        return { h: () => dh, bias: () => db };
      },
    });
  }
}

/** gelu(h + bias) for h [N, F], bias [F]; differentiable in both through the registered gradient. */
export function fusedBiasGelu(h: tf.Tensor2D, bias: tf.Tensor1D): tf.Tensor2D {
  return tf.engine().runKernel(BIAS_GELU, { h, bias }) as tf.Tensor2D;
}
