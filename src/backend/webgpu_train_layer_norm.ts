/**
 * LayerNorm on `webgpu` as one program forward and two backward, registered under the same kernel names and with the
 * same outputs as the wasm kernels (wasm_layer_norm.ts), so the one registered gradient serves both backends:
 *  - forward {x [..., C], g, b} → [y, stats [N, 2] = (mean, rstd) per row]: one workgroup per row;
 *  - backward {dy, x, g, stats} → [dx, dg, db]: one program over chunks of ROWS rows (dx, and each chunk's partial
 *    column sums of dy·x̂ and dy), then the column sum of the chunks (webgpu_train_column_sum.ts).
 * Replaces ~9 tfjs programs forward and ~20 backward. Same math as layers.ts: y = (x − mean)·rstd·g + b with
 * rstd = 1/sqrt(var + eps), var the biased variance.
 */
import * as tf from '@tensorflow/tfjs';
import { LAYER_NORM, LAYER_NORM_GRAD } from './wasm_layer_norm';
import { sumPartials } from './webgpu_train_column_sum';
import { dispatch, newOutput, WebGpuTrainBackend, WG, wgSum } from './webgpu_train_dispatch';

type KernelArgs = Parameters<tf.KernelFunc>[0];

/** Rows per workgroup of the backward program (its two row reductions share barriers across these rows). */
const ROWS = 8;
/** Most workgroups along x (WebGPU's guaranteed limit per dimension); more go along y. */
const MAX_X = 65535;

/** A grid of n workgroups, and the WGSL index of one. */
export const grid = (n: number): [number, number] => [Math.min(n, MAX_X), Math.ceil(n / MAX_X)];
export const groupIndex = 'wid.y * nw.x + wid.x';

const forward = (C: number) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
@group(0) @binding(4) var<storage, read_write> stats: array<f32>;
struct U { N: u32, eps: f32 }
@group(0) @binding(5) var<uniform> u: U;
const C: u32 = ${C}u;
var<workgroup> red0: array<f32, ${WG}>;
var<workgroup> red1: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let row = ${groupIndex};
  let r = min(row, u.N - 1u); // no early return: barriers follow
  var part0 = 0.0;
  for (var c = tid; c < C; c += ${WG}u) { part0 += x[r * C + c]; }
  ${wgSum('part0', 'sum0', 'red0')}
  let mean = sum0 / f32(C);
  var part1 = 0.0;
  for (var c = tid; c < C; c += ${WG}u) { let d = x[r * C + c] - mean; part1 += d * d; }
  ${wgSum('part1', 'sum1', 'red1')}
  let rstd = inverseSqrt(sum1 / f32(C) + u.eps);
  if (row < u.N) {
    for (var c = tid; c < C; c += ${WG}u) { y[r * C + c] = (x[r * C + c] - mean) * rstd * g[c] + b[c]; }
    if (tid == 0u) { stats[2u * r] = mean; stats[2u * r + 1u] = rstd; }
  }
}
`;

const backward = (C: number) => {
  const steps: string[] = [];
  for (let n = WG / 2; n >= 1; n /= 2) {
    steps.push(`if (tid < ${n}u) { for (var i = 0u; i < R; i++) { s1[i * ${WG}u + tid] += s1[i * ${WG}u + tid + ${n}u]; s2[i * ${WG}u + tid] += s2[i * ${WG}u + tid + ${n}u]; } }\n  workgroupBarrier();`);
  }
  return /* wgsl */ `
@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> g: array<f32>;
@group(0) @binding(3) var<storage, read> stats: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
@group(0) @binding(5) var<storage, read_write> partial: array<f32>;
struct U { N: u32 }
@group(0) @binding(6) var<uniform> u: U;
const C: u32 = ${C}u;
const R: u32 = ${ROWS}u;
var<workgroup> s1: array<f32, ${ROWS * WG}>; // per row: Σ dy·g, then Σ dy·g·x̂ in s2, reduced over the threads together
var<workgroup> s2: array<f32, ${ROWS * WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let chunk = ${groupIndex};
  let r0 = chunk * R;
  for (var i = 0u; i < R; i++) {
    let r = r0 + i;
    var a = 0.0;
    var bsum = 0.0;
    if (r < u.N) {
      let mean = stats[2u * r];
      let rstd = stats[2u * r + 1u];
      for (var c = tid; c < C; c += ${WG}u) {
        let dyg = dy[r * C + c] * g[c];
        a += dyg;
        bsum += dyg * ((x[r * C + c] - mean) * rstd);
      }
    }
    s1[i * ${WG}u + tid] = a;
    s2[i * ${WG}u + tid] = bsum;
  }
  workgroupBarrier();
  ${steps.join('\n  ')}
  for (var c = tid; c < C; c += ${WG}u) {
    var pg = 0.0;
    var pb = 0.0;
    for (var i = 0u; i < R; i++) {
      let r = r0 + i;
      if (r < u.N) {
        let mean = stats[2u * r];
        let rstd = stats[2u * r + 1u];
        let xh = (x[r * C + c] - mean) * rstd;
        let d = dy[r * C + c];
        pg += d * xh;
        pb += d;
        dx[r * C + c] = rstd * (d * g[c] - (s1[i * ${WG}u] + xh * s2[i * ${WG}u]) / f32(C));
      }
    }
    partial[chunk * 2u * C + c] = pg;
    partial[chunk * 2u * C + C + c] = pb;
  }
}
`;
};

/** [rows, C] of a tensor normalised over its last axis. */
function rowsCols(x: tf.TensorInfo): [number, number] {
  const C = x.shape[x.shape.length - 1];
  return [tf.util.sizeFromShape(x.shape) / C, C];
}

function layerNormKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo[] {
  const { x, g, b } = inputs as { x: tf.TensorInfo; g: tf.TensorInfo; b: tf.TensorInfo };
  const be = backend as unknown as WebGpuTrainBackend;
  const [N, C] = rowsCols(x);
  const y = newOutput(be, x.shape);
  const stats = newOutput(be, [N, 2]);
  if (N > 0) dispatch(be, forward(C), [x, g, b, y, stats], [{ type: 'uint32', data: [N] }, { type: 'float32', data: [(attrs as { eps: number }).eps] }], grid(N));
  return [y, stats];
}

function layerNormGradKernel({ inputs, backend }: KernelArgs): tf.TensorInfo[] {
  const { dy, x, g, stats } = inputs as { dy: tf.TensorInfo; x: tf.TensorInfo; g: tf.TensorInfo; stats: tf.TensorInfo };
  const be = backend as unknown as WebGpuTrainBackend;
  const [N, C] = rowsCols(x);
  const chunks = Math.ceil(N / ROWS);
  const dx = newOutput(be, x.shape);
  const partial = newOutput(be, [chunks, 2 * C]);
  dispatch(be, backward(C), [dy, x, g, stats, dx, partial], [{ type: 'uint32', data: [N] }], grid(chunks));
  const [dg, db] = sumPartials(be, partial, C);
  return [dx, dg, db];
}

/** The kernels for `webgpu` (the gradient is registered with the wasm ones, wasm_layer_norm.ts). */
export const webgpuLayerNormKernels: tf.KernelConfig[] = [
  { kernelName: LAYER_NORM, backendName: 'webgpu', kernelFunc: layerNormKernel as unknown as tf.KernelFunc },
  { kernelName: LAYER_NORM_GRAD, backendName: 'webgpu', kernelFunc: layerNormGradKernel as unknown as tf.KernelFunc },
];
