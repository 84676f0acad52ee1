/**
 * Multi-head attention on `webgpu`, softmax(scale·Q·Kᵀ + mask)·V, as one program forward and two backward, registered
 * under the wasm kernels' names and outputs (wasm_attention.ts: `fusedAttention` calls them through tf.customGrad on
 * either backend):
 *  - forward {qkv [B·T, 3C], mask [T, T]} → [y [B·T, C] (heads merged), P [B, H, T, Sp]] (Sp = T rounded up to 4,
 *    as on wasm; P is kept for the backward): one workgroup per (batch row, head, query);
 *  - backward {dy, qkv, P} → dqkv [B·T, 3C]: per (b, h, query i) dS_i = P_i ⊙ (dP_i − P_i·dP_i) with dP_i = dy_i·Vᵀ,
 *    written out, and dq_i = scale·dS_i·K; then per (b, h, key j) dk_j = scale·Σ_i dS_ij q_i and dv_j = Σ_i P_ij dy_i.
 * Q, K and V are read straight out of the fused projection and Y written with heads merged, so the head split and
 * merge (slices, transposes), the batched matMuls, the scale, the mask add and the softmax — and all their gradients —
 * are gone: about 25 tfjs programs per block forward and backward. The mask is any additive [T, T] (causal in
 * training); a masked key gets P = 0 and so no gradient.
 */
import * as tf from '@tensorflow/tfjs';
import { ATTENTION, ATTENTION_GRAD } from './wasm_attention';
import { dispatch, f32, newOutput, WebGpuTrainBackend, WG, wgSum } from './webgpu_train_dispatch';
import { grid, groupIndex } from './webgpu_train_layer_norm';

type KernelArgs = Parameters<tf.KernelFunc>[0];

interface AttentionAttrs {
  B: number;
  T: number;
  nHead: number;
}

/** Longest sequence the programs hold (a row of scores in workgroup memory). */
const MAX_T = 1024;

/** Whether the programs handle this geometry. */
export function webgpuAttentionSupports(C: number, nHead: number, T: number): boolean {
  return C % nHead === 0 && T >= 1 && T <= MAX_T;
}

const round4 = (n: number) => (n + 3) & ~3;

function header(C: number, H: number, T: number): string {
  const hs = C / H;
  return /* wgsl */ `
const C: u32 = ${C}u;
const C3: u32 = ${3 * C}u;
const HS: u32 = ${hs}u;
const NH: u32 = ${H}u;
const T: u32 = ${T}u;
const SP: u32 = ${round4(T)}u;
const SCALE: f32 = ${f32(1 / Math.sqrt(hs))};
struct U { n: u32 }
`;
}

/** The (batch row, head, position) a workgroup works on, and whether it is one (the grid may hold a few extra). */
const position = /* wgsl */ `
  let idx0 = ${groupIndex};
  let valid = idx0 < u.n;
  let idx = min(idx0, u.n - 1u);
  let pos = idx % T;
  let h = (idx / T) % NH;
  let b = idx / (T * NH);
  let bh = b * NH + h;
`;

const forward = (C: number, H: number, T: number) => {
  const maxSteps: string[] = [];
  for (let n = WG / 2; n >= 1; n /= 2) maxSteps.push(`if (tid < ${n}u) { red0[tid] = max(red0[tid], red0[tid + ${n}u]); }\n  workgroupBarrier();`);
  return /* wgsl */ `${header(C, H, T)}
@group(0) @binding(0) var<storage, read> qkv: array<f32>;
@group(0) @binding(1) var<storage, read> mask: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> P: array<f32>;
@group(0) @binding(4) var<uniform> u: U;
var<workgroup> q: array<f32, ${C / H}>;
var<workgroup> p: array<f32, ${T}>;
var<workgroup> red0: array<f32, ${WG}>;
var<workgroup> red1: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  ${position}
  let i = pos;
  let row = b * T + i;
  for (var d = tid; d < HS; d += ${WG}u) { q[d] = qkv[row * C3 + h * HS + d]; }
  workgroupBarrier();
  var mx = -3.0e38;
  for (var j = tid; j < T; j += ${WG}u) {
    let kb = (b * T + j) * C3 + C + h * HS;
    var dot = 0.0;
    for (var d = 0u; d < HS; d++) { dot += q[d] * qkv[kb + d]; }
    let s = dot * SCALE + mask[i * T + j];
    p[j] = s;
    mx = max(mx, s);
  }
  red0[tid] = mx;
  workgroupBarrier();
  ${maxSteps.join('\n  ')}
  let m = red0[0];
  var part = 0.0;
  for (var j = tid; j < T; j += ${WG}u) { let e = exp(p[j] - m); p[j] = e; part += e; }
  ${wgSum('part', 'total', 'red1')}
  for (var j = tid; j < T; j += ${WG}u) {
    let pj = p[j] / total;
    p[j] = pj;
    if (valid) { P[(bh * T + i) * SP + j] = pj; }
  }
  workgroupBarrier();
  for (var d = tid; d < HS; d += ${WG}u) {
    var acc = 0.0;
    for (var j = 0u; j < T; j++) { acc += p[j] * qkv[(b * T + j) * C3 + 2u * C + h * HS + d]; }
    if (valid) { y[row * C + h * HS + d] = acc; }
  }
}
`;
};

/** Per (b, h, query i): dS_i (written out) and dq_i. */
const backwardRows = (C: number, H: number, T: number) => /* wgsl */ `${header(C, H, T)}
@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> P: array<f32>;
@group(0) @binding(3) var<storage, read_write> dS: array<f32>;
@group(0) @binding(4) var<storage, read_write> dqkv: array<f32>;
@group(0) @binding(5) var<uniform> u: U;
var<workgroup> dyi: array<f32, ${C / H}>;
var<workgroup> ds: array<f32, ${T}>;
var<workgroup> red0: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  ${position}
  let i = pos;
  let row = b * T + i;
  let pRow = (bh * T + i) * SP;
  for (var d = tid; d < HS; d += ${WG}u) { dyi[d] = dy[row * C + h * HS + d]; }
  workgroupBarrier();
  var part = 0.0;
  for (var j = tid; j < T; j += ${WG}u) {
    let vb = (b * T + j) * C3 + 2u * C + h * HS;
    var dp = 0.0;
    for (var d = 0u; d < HS; d++) { dp += dyi[d] * qkv[vb + d]; }
    ds[j] = dp;
    part += P[pRow + j] * dp;
  }
  ${wgSum('part', 'D', 'red0')}
  for (var j = tid; j < T; j += ${WG}u) {
    let s = P[pRow + j] * (ds[j] - D);
    ds[j] = s;
    if (valid) { dS[pRow + j] = s; }
  }
  workgroupBarrier();
  for (var d = tid; d < HS; d += ${WG}u) {
    var acc = 0.0;
    for (var j = 0u; j < T; j++) { acc += ds[j] * qkv[(b * T + j) * C3 + C + h * HS + d]; }
    if (valid) { dqkv[row * C3 + h * HS + d] = acc * SCALE; }
  }
}
`;

/** Per (b, h, key j): dk_j and dv_j, a thread per output column. */
const backwardKeys = (C: number, H: number, T: number) => /* wgsl */ `${header(C, H, T)}
@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;
@group(0) @binding(2) var<storage, read> P: array<f32>;
@group(0) @binding(3) var<storage, read> dS: array<f32>;
@group(0) @binding(4) var<storage, read_write> dqkv: array<f32>;
@group(0) @binding(5) var<uniform> u: U;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  ${position}
  let j = pos;
  if (!valid) { return; }
  for (var t = tid; t < 2u * HS; t += ${WG}u) {
    var acc = 0.0;
    if (t < HS) {
      for (var i = 0u; i < T; i++) { acc += dS[(bh * T + i) * SP + j] * qkv[(b * T + i) * C3 + h * HS + t]; }
      dqkv[(b * T + j) * C3 + C + h * HS + t] = acc * SCALE;
    } else {
      let d = t - HS;
      for (var i = 0u; i < T; i++) { acc += P[(bh * T + i) * SP + j] * dy[(b * T + i) * C + h * HS + d]; }
      dqkv[(b * T + j) * C3 + 2u * C + h * HS + d] = acc;
    }
  }
}
`;

function attentionKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo[] {
  const { qkv, mask } = inputs as { qkv: tf.TensorInfo; mask: tf.TensorInfo };
  const { B, T, nHead } = attrs as unknown as AttentionAttrs;
  const be = backend as unknown as WebGpuTrainBackend;
  const C = qkv.shape[1] / 3;
  const y = newOutput(be, [B * T, C]);
  const P = newOutput(be, [B, nHead, T, round4(T)]);
  const n = B * nHead * T;
  if (n > 0) dispatch(be, forward(C, nHead, T), [qkv, mask, y, P], [{ type: 'uint32', data: [n] }], grid(n));
  return [y, P];
}

function attentionGradKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo {
  const { dy, qkv, P } = inputs as { dy: tf.TensorInfo; qkv: tf.TensorInfo; P: tf.TensorInfo };
  const { B, T, nHead } = attrs as unknown as AttentionAttrs;
  const be = backend as unknown as WebGpuTrainBackend;
  const C = qkv.shape[1] / 3;
  const dqkv = newOutput(be, qkv.shape);
  const n = B * nHead * T;
  if (n === 0) return dqkv;
  const dS = newOutput(be, P.shape);
  dispatch(be, backwardRows(C, nHead, T), [dy, qkv, P, dS, dqkv], [{ type: 'uint32', data: [n] }], grid(n));
  dispatch(be, backwardKeys(C, nHead, T), [dy, qkv, P, dS, dqkv], [{ type: 'uint32', data: [n] }], grid(n));
  be.disposeData(dS.dataId); // released after the submission that reads it
  return dqkv;
}

/** The kernels for `webgpu` (wasm_attention.ts's fusedAttention differentiates them through tf.customGrad). */
export const webgpuAttentionKernels: tf.KernelConfig[] = [
  { kernelName: ATTENTION, backendName: 'webgpu', kernelFunc: attentionKernel as unknown as tf.KernelFunc },
  { kernelName: ATTENTION_GRAD, backendName: 'webgpu', kernelFunc: attentionGradKernel as unknown as tf.KernelFunc },
];
