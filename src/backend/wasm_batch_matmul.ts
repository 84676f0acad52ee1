/**
 * A faster `BatchMatMul` for the `wasm` backend, wrapping the one tfjs-backend-wasm 4.22 registers.
 *
 * The wasm kernel has one fast path (XNNPACK) for a single matrix product without transpose flags; everything else runs
 * a slow generic loop (https://github.com/tensorflow/tfjs/pull/2532). Measured on this 2-core machine:
 *  - `transposeA`/`transposeB` set: 10–20× slower than transposing the operand with the wasm Transpose kernel first
 *    (512² × 512²: 126 ms with transposeB vs 11 ms; RECIPES.md: 257 ms vs 17 ms). Backprop through every matMul uses
 *    the flags, so the wrapper transposes explicitly and calls the original with both flags cleared.
 *  - a batched `a` [..., M, K] times an unbatched `b` (all batch dims 1, e.g. activations [B, T, C] × weights [C, 4C]):
 *    the batch goes through the slow loop although it is one [B·M, K] × [K, N] product. The wrapper folds the batch
 *    into the rows (a reshape, no copy) so that the fast path runs ([16,128,128] × [128,512]: 248 ms vs 12 ms).
 * Genuinely batched products (attention's QKᵀ and PV) still take the slow loop; RECIPES.md notes that as not fixed.
 * Transposed copies are freed before returning.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

/** Marks a kernel function as this wrapper, so that wrapping twice is detected. */
const WRAPPED = Symbol.for('mtp-lab.wasm.fastBatchMatMul');

type KernelBackendArg = Parameters<tf.KernelFunc>[0]['backend'];

/** True when the `BatchMatMul` kernel registered for wasm is already this wrapper. */
export function isWasmBatchMatMulWrapped(): boolean {
  const current = tf.getKernel(tf.BatchMatMul, 'wasm');
  return current !== undefined && (current.kernelFunc as { [WRAPPED]?: boolean })[WRAPPED] === true;
}

/** The same data seen with another shape of equal size (the wasm kernels reshape by reading shapes only). */
function withShape(x: tf.TensorInfo, shape: number[]): tf.TensorInfo {
  return { dataId: x.dataId, dtype: x.dtype, shape };
}

/**
 * Builds the wrapped kernel function from the original wasm BatchMatMul and Transpose kernel functions.
 * Calls that need neither a transpose nor a batch fold go straight to the original.
 */
export function fastBatchMatMul(original: tf.KernelFunc, transpose: tf.KernelFunc): tf.KernelFunc {
  const swapLastTwo = (x: tf.TensorInfo, backend: KernelBackendArg): tf.TensorInfo => {
    const rank = x.shape.length;
    const perm = Array.from({ length: rank }, (_, i) => i);
    perm[rank - 2] = rank - 1;
    perm[rank - 1] = rank - 2;
    return transpose({ inputs: { x }, backend, attrs: { perm } }) as tf.TensorInfo;
  };

  const wrapped: tf.KernelFunc = (args) => {
    const attrs = args.attrs as unknown as tf.BatchMatMulAttrs;
    const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
    const aBatch = a.shape.slice(0, -2);
    const bBatch = b.shape.slice(0, -2);
    const foldBatch = tf.util.sizeFromShape(bBatch) === 1 && tf.util.sizeFromShape(aBatch) > 1;
    if (!attrs.transposeA && !attrs.transposeB && !foldBatch) return original(args);

    const backend = args.backend;
    const temps: tf.TensorInfo[] = [];
    try {
      let aIn = a;
      let bIn = b;
      if (attrs.transposeA) temps.push((aIn = swapLastTwo(a, backend)));
      if (attrs.transposeB) temps.push((bIn = swapLastTwo(b, backend)));
      const cleared = { ...args.attrs, transposeA: false, transposeB: false };
      if (!foldBatch) return original({ inputs: { a: aIn, b: bIn }, backend, attrs: cleared });

      const [m, k] = aIn.shape.slice(-2);
      const n = bIn.shape[bIn.shape.length - 1];
      const rows = tf.util.sizeFromShape(aBatch) * m;
      const out = original({
        inputs: { a: withShape(aIn, [rows, k]), b: withShape(bIn, [k, n]) },
        backend,
        attrs: cleared,
      }) as tf.TensorInfo;
      const outBatch = tf.broadcast_util.assertAndGetBroadcastShape(aBatch, bBatch);
      return withShape(out, [...outBatch, m, n]);
    } finally {
      for (const t of temps) (backend as BackendWasm).disposeData(t.dataId);
    }
  };
  Object.defineProperty(wrapped, WRAPPED, { value: true });
  return wrapped;
}

/**
 * Replaces the registered wasm `BatchMatMul` with the wrapper, keeping the original's setup function (it binds the
 * wasm export the original calls). Idempotent. Requires '@tensorflow/tfjs-backend-wasm' to be imported.
 */
export function wrapWasmBatchMatMul(): void {
  if (isWasmBatchMatMulWrapped()) return;
  const original = tf.getKernel(tf.BatchMatMul, 'wasm');
  const transpose = tf.getKernel(tf.Transpose, 'wasm');
  if (original === undefined || transpose === undefined) {
    throw new Error(
      "The wasm BatchMatMul/Transpose kernels are not registered: import '@tensorflow/tfjs-backend-wasm' first.",
    );
  }
  tf.unregisterKernel(tf.BatchMatMul, 'wasm');
  tf.registerKernel({ ...original, kernelFunc: fastBatchMatMul(original.kernelFunc, transpose.kernelFunc) });
}
