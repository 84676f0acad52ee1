/**
 * Fast paths for two reductions/lookups of every training step on the `wasm` backend, wrapping tfjs-backend-wasm's
 * kernels and deferring to them for every other case:
 *  - `GatherV2` along axis 0 (embedding lookups): whole rows copied with `copyWithin` over the heap. The wasm kernel
 *    copies element by element through generic strides (≈ 8 ms for 2,048 rows of 128 floats, vs ≈ 0.2 ms).
 *  - `Sum` over leading axes (bias and position-embedding gradients, i.e. column sums of [rows, C]): one pass with the
 *    native `col_sum`. The wasm kernel transposes the input first, a full copy ([2048, 512]: ≈ 7 ms vs ≈ 1 ms).
 * Active while the MTP_WASM_FAST flag is on and the native kernels are loaded (wasm_native.ts).
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { emscripten, nativeKernels, wasmFastEnabled } from './wasm_native';

const WRAPPED = Symbol.for('mtp-lab.wasm.gatherSum');

type KernelArgs = Parameters<tf.KernelFunc>[0];

/** Rows of x [D, ...] picked by int32 indices (any shape) → [...indices.shape, ...x.shape.slice(1)]; null if not applicable. */
function gatherRows({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo | null {
  const { x, indices } = inputs as { x: tf.TensorInfo; indices: tf.TensorInfo };
  const { axis, batchDims } = attrs as unknown as tf.GatherV2Attrs;
  if (tf.util.parseAxisParam(axis, x.shape)[0] !== 0 || (batchDims ?? 0) !== 0) return null;
  if (indices.dtype !== 'int32' || (x.dtype !== 'float32' && x.dtype !== 'int32')) return null;
  const wasm = backend as BackendWasm;
  const D = x.shape[0];
  const row = tf.util.sizeFromShape(x.shape.slice(1));
  const n = tf.util.sizeFromShape(indices.shape);
  const out = wasm.makeOutput([...indices.shape, ...x.shape.slice(1)], x.dtype);
  const heap = emscripten(wasm).HEAP32;
  const idx = wasm.getMemoryOffset(indices.dataId) >> 2;
  const src = wasm.getMemoryOffset(x.dataId) >> 2;
  const dst = wasm.getMemoryOffset(out.dataId) >> 2;
  for (let i = 0; i < n; i++) {
    const r = heap[idx + i];
    if (!(r >= 0 && r < D)) {
      wasm.disposeData(out.dataId);
      throw new Error(`GatherV2: the index value ${r} is not in [0, ${D - 1}]`);
    }
    heap.copyWithin(dst + i * row, src + r * row, src + (r + 1) * row);
  }
  return out;
}

/** Sum of float32 x over its leading axes [0, r) (r < rank) → column sums; null if not applicable. */
function sumLeading({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo | null {
  const { x } = inputs as { x: tf.TensorInfo };
  const { axis, keepDims } = attrs as unknown as tf.SumAttrs;
  const native = nativeKernels();
  if (native === null || native.backend !== backend || x.dtype !== 'float32') return null;
  const axes = [...tf.util.parseAxisParam(axis, x.shape)].sort((a, b) => a - b);
  const r = axes.length;
  if (r === 0 || r >= x.shape.length || axes.some((a, i) => a !== i)) return null;
  const rest = x.shape.slice(r);
  const C = tf.util.sizeFromShape(rest);
  if (C === 0 || tf.util.sizeFromShape(x.shape) === 0) return null;
  const out = native.backend.makeOutput(keepDims ? [...axes.map(() => 1), ...rest] : rest, 'float32');
  native.fn.col_sum(native.ptr(x), native.ptr(out), tf.util.sizeFromShape(x.shape) / C, C);
  return out;
}

function wrap(kernelName: string, fast: (args: KernelArgs) => tf.TensorInfo | null): void {
  const original = tf.getKernel(kernelName, 'wasm');
  if (original === undefined) throw new Error(`The wasm ${kernelName} kernel is not registered: import '@tensorflow/tfjs-backend-wasm' first.`);
  if ((original.kernelFunc as { [WRAPPED]?: boolean })[WRAPPED]) return;
  const kernelFunc: tf.KernelFunc = (args) => (wasmFastEnabled() ? fast(args) : null) ?? original.kernelFunc(args);
  Object.defineProperty(kernelFunc, WRAPPED, { value: true });
  tf.unregisterKernel(kernelName, 'wasm');
  tf.registerKernel({ ...original, kernelFunc });
}

/** Wraps the wasm GatherV2 and Sum kernels with the fast paths (idempotent). */
export function registerGatherSumKernels(): void {
  wrap(tf.GatherV2, gatherRows);
  wrap(tf.Sum, sumLeading);
}
