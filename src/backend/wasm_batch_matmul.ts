/**
 * A faster `BatchMatMul` for the `wasm` backend, wrapping the one tfjs-backend-wasm 4.22 registers.
 *
 * The wasm kernel has one fast path (XNNPACK) for a single matrix product without transpose flags; everything else runs
 * a slow generic loop (https://github.com/tensorflow/tfjs/pull/2532). Measured on this 2-core machine:
 *  - `transposeA`/`transposeB` set: 10–20× slower than transposing the operand with the wasm Transpose kernel first
 *    (512² × 512²: 126 ms with transposeB vs 11 ms; docs/backends.md: 257 ms vs 17 ms). Backprop through every matMul
 *    uses the flags, so the wrapper transposes explicitly and calls the original with both flags cleared.
 *  - a batched `a` [..., M, K] times an unbatched `b` (all batch dims 1, e.g. activations [B, T, C] × weights [C, 4C]):
 *    the batch goes through the slow loop although it is one [B·M, K] × [K, N] product. The wrapper folds the batch
 *    into the rows (a reshape, no copy) so that the fast path runs ([16,128,128] × [128,512]: 248 ms vs 12 ms).
 * When the package's kernels are loaded (wasm_native.ts, MTP_WASM_FAST on), every float32 product with an unbatched
 * right operand and a multiple of 8 output columns runs on its own packed GEMM (native/gemm.c) instead: it reads
 * transposed operands in place (no transpose copy: the wasm Transpose of [2048, 512] alone takes ≈ 8 ms), needs no
 * XNNPACK operator and weight re-packing for weights that change every step, and its 4×8 register tile ran 1.1–1.6×
 * faster than XNNPACK on the model's shapes here (2–5× for decoding's few rows).
 * Genuinely batched products (attention's QKᵀ and PV) still take the slow loop; the model runs attention as a fused
 * kernel instead (wasm_attention.ts). Transposed copies are freed before returning.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { nativeKernels } from './wasm_native';

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
    const native = nativeMatMul(args);
    if (native) return native;
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
 * op(a)·op(b) on the native GEMM: float32, b unbatched, N (output columns) a multiple of 8, and a either unbatched or
 * untransposed (its batch folds into rows). Null when not applicable or the kernels are not loaded.
 */
function nativeMatMul(args: Parameters<tf.KernelFunc>[0]): tf.TensorInfo | null {
  const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
  const { transposeA, transposeB } = args.attrs as unknown as tf.BatchMatMulAttrs;
  const native = nativeKernels();
  if (native === null || native.backend !== args.backend || a.dtype !== 'float32' || b.dtype !== 'float32') return null;
  const aBatch = a.shape.slice(0, -2);
  const bBatch = b.shape.slice(0, -2);
  const batch = tf.util.sizeFromShape(aBatch);
  if (tf.util.sizeFromShape(bBatch) !== 1 || (transposeA && batch > 1)) return null;
  const [m, k] = transposeA ? [a.shape[a.shape.length - 1], a.shape[a.shape.length - 2]] : a.shape.slice(-2);
  const n = transposeB ? b.shape[b.shape.length - 2] : b.shape[b.shape.length - 1];
  if (n % 8 !== 0 || m === 0 || k === 0) return null;
  const out = native.backend.makeOutput([...tf.broadcast_util.assertAndGetBroadcastShape(aBatch, bBatch), m, n], 'float32');
  const scratch = native.scratch(4 * native.fn.gemm_scratch(n));
  native.fn.gemm(native.ptr(a), native.ptr(b), native.ptr(out), batch * m, n, k, transposeA ? 1 : 0, transposeB ? 1 : 0, 0, 0, scratch);
  return out;
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
