/**
 * The mean softmax cross-entropy over the vocabulary on `webgpu` (the loss of every head, model/transformer.ts), as two
 * programs forward and one backward:
 *  - forward {logits [N, V], targets [N] int32} → [loss [] = mean over rows of (lse − logit[target]), lse [N]]: one
 *    workgroup per row (max, log-sum-exp and the row's loss), then one workgroup for the mean of the N row losses;
 *  - backward {dy [], logits, targets, lse} → dlogits [N, V] = (softmax − one-hot)·dy/N: one workgroup per row.
 * A target outside [0, V) has an all-zero one-hot, as in the plain composition: its row adds 0 to the sum (still
 * counted in N) and gets a zero gradient. Replaces the plain logSoftmax, one-hot, product, sums, mean and negation
 * forward and their gradients backward.
 */
import * as tf from '@tensorflow/tfjs';
import { dispatch, newOutput, WebGpuTrainBackend, WG, wgSum } from './webgpu_train_dispatch';
import { grid, groupIndex } from './webgpu_train_layer_norm';

export const CROSS_ENTROPY = 'MtpCrossEntropy';
export const CROSS_ENTROPY_GRAD = 'MtpCrossEntropyGrad';

type KernelArgs = Parameters<tf.KernelFunc>[0];

/** The workgroup max of each thread's `part` into `total` through workgroup array `r`, like `wgSum`. */
function wgMax(part: string, total: string, r: string): string {
  const steps: string[] = [];
  for (let n = WG / 2; n >= 1; n /= 2) steps.push(`if (tid < ${n}u) { ${r}[tid] = max(${r}[tid], ${r}[tid + ${n}u]); }\n  workgroupBarrier();`);
  return `${r}[tid] = ${part};\n  workgroupBarrier();\n  ${steps.join('\n  ')}\n  let ${total} = ${r}[0];\n  workgroupBarrier();`;
}

const rows = (V: number) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> targets: array<i32>;
@group(0) @binding(2) var<storage, read_write> rowLoss: array<f32>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;
struct U { N: u32 }
@group(0) @binding(4) var<uniform> u: U;
const V: u32 = ${V}u;
var<workgroup> redMax: array<f32, ${WG}>;
var<workgroup> redSum: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let row = ${groupIndex};
  let r = min(row, u.N - 1u); // no early return: barriers follow
  let base = r * V;
  var m = logits[base]; // a member of the row: threads past V keep it
  for (var c = tid; c < V; c += ${WG}u) { m = max(m, logits[base + c]); }
  ${wgMax('m', 'mx', 'redMax')}
  var s = 0.0;
  for (var c = tid; c < V; c += ${WG}u) { s += exp(logits[base + c] - mx); }
  ${wgSum('s', 'total', 'redSum')}
  if (tid == 0u && row < u.N) {
    let l = mx + log(total);
    lse[r] = l;
    let t = targets[r];
    var loss = 0.0;
    if (t >= 0 && t < i32(V)) { loss = l - logits[base + u32(t)]; }
    rowLoss[r] = loss;
  }
}
`;

const mean = /* wgsl */ `
@group(0) @binding(0) var<storage, read> rowLoss: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
struct U { N: u32 }
@group(0) @binding(2) var<uniform> u: U;
var<workgroup> red: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) tid: u32) {
  var part = 0.0;
  for (var i = tid; i < u.N; i += ${WG}u) { part += rowLoss[i]; }
  ${wgSum('part', 'total', 'red')}
  if (tid == 0u) { out[0] = total / f32(u.N); }
}
`;

const backward = (V: number) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> dy: array<f32>;
@group(0) @binding(1) var<storage, read> logits: array<f32>;
@group(0) @binding(2) var<storage, read> targets: array<i32>;
@group(0) @binding(3) var<storage, read> lse: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
struct U { N: u32 }
@group(0) @binding(5) var<uniform> u: U;
const V: u32 = ${V}u;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let r = ${groupIndex};
  if (r >= u.N) { return; }
  let base = r * V;
  let t = targets[r];
  let g = dy[0] / f32(u.N);
  let l = lse[r];
  let valid = t >= 0 && t < i32(V);
  for (var c = tid; c < V; c += ${WG}u) {
    var d = 0.0;
    if (valid) { d = (exp(logits[base + c] - l) - select(0.0, 1.0, i32(c) == t)) * g; }
    dx[base + c] = d;
  }
}
`;

function crossEntropyKernel({ inputs, backend }: KernelArgs): tf.TensorInfo[] {
  const { logits, targets } = inputs as { logits: tf.TensorInfo; targets: tf.TensorInfo };
  const be = backend as unknown as WebGpuTrainBackend;
  const [N, V] = logits.shape;
  const loss = newOutput(be, []);
  const lse = newOutput(be, [N]);
  const rowLoss = newOutput(be, [N]);
  dispatch(be, rows(V), [logits, targets, rowLoss, lse], [{ type: 'uint32', data: [N] }], grid(N));
  dispatch(be, mean, [rowLoss, loss], [{ type: 'uint32', data: [N] }], [1]);
  be.disposeData(rowLoss.dataId);
  return [loss, lse];
}

function crossEntropyGradKernel({ inputs, backend }: KernelArgs): tf.TensorInfo {
  const { dy, logits, targets, lse } = inputs as { dy: tf.TensorInfo; logits: tf.TensorInfo; targets: tf.TensorInfo; lse: tf.TensorInfo };
  const be = backend as unknown as WebGpuTrainBackend;
  const [N, V] = logits.shape;
  const dx = newOutput(be, logits.shape);
  dispatch(be, backward(V), [dy, logits, targets, lse, dx], [{ type: 'uint32', data: [N] }], grid(N));
  return dx;
}

/** The kernels for `webgpu`. */
export const webgpuCrossEntropyKernels: tf.KernelConfig[] = [
  { kernelName: CROSS_ENTROPY, backendName: 'webgpu', kernelFunc: crossEntropyKernel as unknown as tf.KernelFunc },
  { kernelName: CROSS_ENTROPY_GRAD, backendName: 'webgpu', kernelFunc: crossEntropyGradKernel as unknown as tf.KernelFunc },
];

/** Registers the gradient of the forward kernel (idempotent): logits only; targets are indices. */
export function registerCrossEntropyGradient(): void {
  if (tf.getGradient(CROSS_ENTROPY) !== undefined) return;
  tf.registerGradient({
    kernelName: CROSS_ENTROPY,
    inputsToSave: ['logits', 'targets'],
    outputsToSave: [false, true],
    gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
      const [logits, targets, lse] = saved;
      const dLoss = (dy as tf.Tensor[])[0];
      return {
        logits: () => tf.engine().runKernel(CROSS_ENTROPY_GRAD, { dy: dLoss, logits, targets, lse }) as tf.Tensor,
        targets: () => tf.zeros(targets.shape),
      };
    },
  });
}

/** Mean over rows of −log softmax(logits)[target] for logits [N, V], targets [N] (int32); differentiable in the logits. */
export function fusedCrossEntropy(logits: tf.Tensor2D, targets: tf.Tensor1D): tf.Scalar {
  const [loss, lse] = tf.engine().runKernel(CROSS_ENTROPY, { logits, targets: targets.dtype === 'int32' ? targets : tf.cast(targets, 'int32') }) as tf.Tensor[];
  lse.dispose(); // the tape keeps its own copy for the gradient
  return loss as tf.Scalar;
}
