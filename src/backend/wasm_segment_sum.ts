/**
 * The `UnsortedSegmentSum` kernel for the `wasm` backend, which tfjs-backend-wasm 4.22 lacks. The gradient of
 * `tf.gather` (so every embedding lookup being trained) calls it, and fails on wasm without it (docs/backends.md, wasm;
 * https://github.com/tensorflow/tfjs/issues/8082).
 *
 * A plain JS loop over the wasm heap: x is read and the output written in place through
 * `BackendWasm.typedArrayFromHeap`, with no copies.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';

/**
 * out[s, ...] = sum of x[i, ...] over the i with segmentIds[i] = s, for s in [0, numSegments).
 *
 * segmentIds may have any shape that is a prefix of x's shape (the op passes a rank-1 one); ids outside
 * [0, numSegments) are dropped, as in TensorFlow. The output is float32, like the cpu backend's.
 */
export function unsortedSegmentSumWasm(args: Parameters<tf.KernelFunc>[0]): tf.TensorInfo {
  const backend = args.backend as BackendWasm;
  const { x, segmentIds } = args.inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
  const { numSegments } = args.attrs as unknown as tf.UnsortedSegmentSumAttrs;
  const idsRank = segmentIds.shape.length;
  tf.util.assert(
    segmentIds.shape.every((d, i) => d === x.shape[i]),
    () => `UnsortedSegmentSum: segmentIds shape [${segmentIds.shape}] must be a prefix of x shape [${x.shape}].`,
  );
  const innerShape = x.shape.slice(idsRank);
  const inner = tf.util.sizeFromShape(innerShape);
  const rows = tf.util.sizeFromShape(segmentIds.shape);

  // Allocate first: a malloc may grow the wasm memory, which detaches views taken before it.
  const out = backend.makeOutput([numSegments, ...innerShape], 'float32');
  const outVals = backend.typedArrayFromHeap(out);
  const xVals = backend.typedArrayFromHeap(x);
  const ids = backend.typedArrayFromHeap(segmentIds);
  outVals.fill(0);
  for (let i = 0; i < rows; i++) {
    const s = ids[i];
    if (s < 0 || s >= numSegments) continue;
    const src = i * inner;
    const dst = s * inner;
    for (let j = 0; j < inner; j++) outVals[dst + j] += xVals[src + j];
  }
  return out;
}

/** Kernel registration record for `tf.registerKernel`. */
export const unsortedSegmentSumWasmConfig: tf.KernelConfig = {
  kernelName: tf.UnsortedSegmentSum,
  backendName: 'wasm',
  kernelFunc: unsortedSegmentSumWasm,
};
