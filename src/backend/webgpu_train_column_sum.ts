/**
 * The second half of a parameter gradient on `webgpu`: a kernel's backward program writes per-chunk partial column
 * sums [G, W] (each chunk of rows summed in its own workgroup, no atomics, a fixed order), and this program adds the G
 * chunks of each column, one workgroup per column, into one output [W] or two [split] and [W − split] (LayerNorm's dγ
 * and dβ come from one partial buffer).
 */
import * as tf from '@tensorflow/tfjs';
import { dispatch, newOutput, WebGpuTrainBackend, WG, wgSum } from './webgpu_train_dispatch';

const program = (two: boolean) => /* wgsl */ `
@group(0) @binding(0) var<storage, read> partial: array<f32>;
@group(0) @binding(1) var<storage, read_write> out0: array<f32>;
${two ? '@group(0) @binding(2) var<storage, read_write> out1: array<f32>;' : ''}
struct U { G: u32, W: u32, split: u32 }
@group(0) @binding(${two ? 3 : 2}) var<uniform> u: U;
var<workgroup> red: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let j = wid.x;
  var part = 0.0;
  for (var i = tid; i < u.G; i += ${WG}u) { part += partial[i * u.W + j]; }
  ${wgSum('part', 'total', 'red')}
  if (tid == 0u) {
    ${two ? 'if (j < u.split) { out0[j] = total; } else { out1[j - u.split] = total; }' : 'out0[j] = total;'}
  }
}
`;

/**
 * Column sums of partial [G, W] (disposed here, after its last use is recorded): one tensor [W] when `split` is
 * absent, else [split] and [W − split].
 */
export function sumPartials(b: WebGpuTrainBackend, partial: tf.TensorInfo, split?: number): tf.TensorInfo[] {
  const [G, W] = partial.shape;
  const outs = split === undefined ? [newOutput(b, [W])] : [newOutput(b, [split]), newOutput(b, [W - split])];
  dispatch(b, program(outs.length === 2), [partial, ...outs], [{ type: 'uint32', data: [G] }, { type: 'uint32', data: [W] }, { type: 'uint32', data: [split ?? W] }], [W]);
  b.disposeData(partial.dataId);
  return outs;
}
