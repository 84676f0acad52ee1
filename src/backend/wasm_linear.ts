/**
 * A linear layer with its bias and residual connection, y = x·W (+ b) (+ r), as one `wasm` kernel: the package's
 * GEMM (native/gemm.c) adds the bias row and the residual matrix while it stores each output tile. Replaces a matMul
 * and up to two Adds, each a pass over [rows, N] and a kernel dispatch (≈ 5–10 µs of tfjs glue apiece, which is most
 * of an Add when decoding a few tokens). The gradient is registered: dx = dy·Wᵀ, dW = xᵀ·dy (both on the same GEMM
 * through BatchMatMul), db = Σ_rows dy, dr = dy.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { nativeKernelsFor } from './wasm_native';

export const LINEAR = 'MtpLinear';

type KernelArgs = Parameters<tf.KernelFunc>[0];

/** inputs {x [M, K], w [K, N], bias? [N], residual? [M, N]} → y [M, N]. */
function linearKernel({ inputs, backend }: KernelArgs): tf.TensorInfo {
  const { x, w, bias, residual } = inputs as { x: tf.TensorInfo; w: tf.TensorInfo; bias?: tf.TensorInfo; residual?: tf.TensorInfo };
  const k = nativeKernelsFor(backend);
  const [M, K] = x.shape;
  const N = w.shape[1];
  const y = (backend as BackendWasm).makeOutput([M, N], 'float32');
  const scratch = k.scratch(4 * k.fn.gemm_scratch(N));
  k.fn.gemm(k.ptr(x), k.ptr(w), k.ptr(y), M, N, K, 0, 0, bias ? k.ptr(bias) : 0, residual ? k.ptr(residual) : 0, scratch);
  return y;
}

/** Registers the kernel for `wasm` and its gradient (idempotent). */
export function registerLinearKernel(): void {
  if (tf.getKernel(LINEAR, 'wasm') === undefined) {
    tf.registerKernel({ kernelName: LINEAR, backendName: 'wasm', kernelFunc: linearKernel as unknown as tf.KernelFunc });
  }
  if (tf.getGradient(LINEAR) === undefined) {
    tf.registerGradient({
      kernelName: LINEAR,
      inputsToSave: ['x', 'w'],
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
        const g = dy as tf.Tensor2D;
        const [x, w] = saved as tf.Tensor2D[];
        return {
          x: () => tf.matMul(g, w, false, true),
          w: () => tf.matMul(x, g, true, false),
          bias: () => tf.sum(g, 0),
          residual: () => tf.reshape(g, g.shape),
        };
      },
    });
  }
}

/** True when the kernel handles this output width (a multiple of 8, as the GEMM's tiles). */
export function fusedLinearSupports(N: number): boolean {
  return N % 8 === 0;
}

/** x [M, K] · w [K, N] (+ bias [N]) (+ residual [M, N]) → [M, N], float32; differentiable in every input. */
export function fusedLinear(x: tf.Tensor2D, w: tf.Tensor2D, bias?: tf.Tensor1D, residual?: tf.Tensor2D): tf.Tensor2D {
  const inputs: tf.NamedTensorMap = { x, w };
  if (bias) inputs.bias = bias;
  if (residual) inputs.residual = residual;
  return tf.engine().runKernel(LINEAR, inputs) as tf.Tensor2D;
}
