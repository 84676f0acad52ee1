/**
 * The MLP's bias + GELU on `webgpu`, gelu(h + b) with gelu(z) = z·σ(1.702·z) (layers.ts, the PyTorch twin's sigmoid
 * form), registered under the wasm kernels' names and outputs (wasm_bias_gelu.ts), so their one gradient serves both:
 *  - forward {h [N, F], bias [F]} → out [N, F]: one program, a thread per element;
 *  - backward {dy, h, bias} → [dh, dbias]: one program over chunks of ROWS rows (dh, and each chunk's partial column
 *    sums of dh), then the column sum of the chunks (webgpu_train_column_sum.ts).
 * Replaces an add and three elementwise programs forward, and their gradients plus a reduction backward.
 */
import * as tf from '@tensorflow/tfjs';
import { BIAS_GELU, BIAS_GELU_GRAD } from './wasm_bias_gelu';
import { sumPartials } from './webgpu_train_column_sum';
import { dispatch, newOutput, WebGpuTrainBackend, WG } from './webgpu_train_dispatch';
import { grid, groupIndex } from './webgpu_train_layer_norm';

type KernelArgs = Parameters<tf.KernelFunc>[0];

/** Rows per workgroup of the backward program. */
const ROWS = 16;

const forward = (F: number) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> h: array<f32>;
@group(0) @binding(1) var<storage, read> bias: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
struct U { n: u32 }
@group(0) @binding(3) var<uniform> u: U;
const F: u32 = ${F}u;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let i = (${groupIndex}) * ${WG}u + tid;
  if (i >= u.n) { return; }
  let z = h[i] + bias[i % F];
  out[i] = z * (1.0 / (1.0 + exp(-1.0 * (z * 1.702))));
}
`;

const backward = (F: number) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read> h: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> dh: array<f32>;
@group(0) @binding(4) var<storage, read_write> partial: array<f32>;
struct U { N: u32 }
@group(0) @binding(5) var<uniform> u: U;
const F: u32 = ${F}u;
const R: u32 = ${ROWS}u;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let chunk = ${groupIndex};
  for (var c = tid; c < F; c += ${WG}u) {
    var pb = 0.0;
    for (var i = 0u; i < R; i++) {
      let r = chunk * R + i;
      if (r < u.N) {
        let z = h[r * F + c] + bias[c];
        let s = 1.0 / (1.0 + exp(-1.702 * z));
        let d = dy[r * F + c] * (s + 1.702 * z * s * (1.0 - s));
        dh[r * F + c] = d;
        pb += d;
      }
    }
    partial[chunk * F + c] = pb;
  }
}
`;

function biasGeluKernel({ inputs, backend }: KernelArgs): tf.TensorInfo {
  const { h, bias } = inputs as { h: tf.TensorInfo; bias: tf.TensorInfo };
  const be = backend as unknown as WebGpuTrainBackend;
  const n = tf.util.sizeFromShape(h.shape);
  const F = h.shape[h.shape.length - 1];
  const out = newOutput(be, h.shape);
  if (n > 0) dispatch(be, forward(F), [h, bias, out], [{ type: 'uint32', data: [n] }], grid(Math.ceil(n / WG)));
  return out;
}

function biasGeluGradKernel({ inputs, backend }: KernelArgs): tf.TensorInfo[] {
  const { dy, h, bias } = inputs as { dy: tf.TensorInfo; h: tf.TensorInfo; bias: tf.TensorInfo };
  const be = backend as unknown as WebGpuTrainBackend;
  const F = h.shape[h.shape.length - 1];
  const N = tf.util.sizeFromShape(h.shape) / F;
  const chunks = Math.ceil(N / ROWS);
  const dh = newOutput(be, h.shape);
  const partial = newOutput(be, [chunks, F]);
  dispatch(be, backward(F), [dy, h, bias, dh, partial], [{ type: 'uint32', data: [N] }], grid(chunks));
  const [db] = sumPartials(be, partial);
  return [dh, db];
}

/** The kernels for `webgpu` (the gradient is registered with the wasm ones, wasm_bias_gelu.ts). */
export const webgpuBiasGeluKernels: tf.KernelConfig[] = [
  { kernelName: BIAS_GELU, backendName: 'webgpu', kernelFunc: biasGeluKernel as unknown as tf.KernelFunc },
  { kernelName: BIAS_GELU_GRAD, backendName: 'webgpu', kernelFunc: biasGeluGradKernel as unknown as tf.KernelFunc },
];
