/**
 * Zero-copy `Identity` and same-dtype `Cast` for the `wasm` backend. tfjs-backend-wasm 4.22 copies the whole buffer
 * for both, and the engine clones (Identity) every tensor a gradient saves for the backward pass
 * (`saveTensorsForBackwardMode`, `tf.customGrad`'s save): in a training step that is hundreds of full copies of
 * activations, and as many extra live buffers. Tensors are immutable in tfjs, so the result can share the input's
 * data with a reference count, as tfjs's cpu and webgl backends and the wasm `Reshape` kernel already do.
 * Active while the MTP_WASM_FAST flag is on (wasm_native.ts); otherwise the original kernels run.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { wasmFastEnabled } from './wasm_native';

const WRAPPED = Symbol.for('mtp-lab.wasm.zeroCopy');

type KernelArgs = Parameters<tf.KernelFunc>[0];

function share(args: KernelArgs): tf.TensorInfo {
  const { x } = args.inputs as { x: tf.TensorInfo };
  (args.backend as BackendWasm).incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
}

function wrap(kernelName: string, canShare: (args: KernelArgs) => boolean): void {
  const original = tf.getKernel(kernelName, 'wasm');
  if (original === undefined) throw new Error(`The wasm ${kernelName} kernel is not registered: import '@tensorflow/tfjs-backend-wasm' first.`);
  if ((original.kernelFunc as { [WRAPPED]?: boolean })[WRAPPED]) return;
  const kernelFunc: tf.KernelFunc = (args) => (wasmFastEnabled() && canShare(args) ? share(args) : original.kernelFunc(args));
  Object.defineProperty(kernelFunc, WRAPPED, { value: true });
  tf.unregisterKernel(kernelName, 'wasm');
  tf.registerKernel({ ...original, kernelFunc });
}

/** Replaces the wasm Identity and Cast kernels by sharing versions (idempotent). */
export function registerZeroCopyKernels(): void {
  const notString = (args: KernelArgs) => (args.inputs.x as tf.TensorInfo).dtype !== 'string';
  wrap(tf.Identity, notString);
  wrap(tf.Cast, (args) => notString(args) && (args.inputs.x as tf.TensorInfo).dtype === (args.attrs as { dtype?: string }).dtype);
}
