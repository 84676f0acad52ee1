/**
 * The optimiser's work on `webgpu` as three programs per step instead of ~20 tfjs programs per parameter tensor: the
 * global gradient norm (two programs: partial sums of squares, then their sum and square root) and the AdamW update of
 * every parameter (one program), exactly as src/train/adamw.ts computes it, element by element, in the same order of
 * operations (decoupled decay on matrices only, explicit epsilon, bias correction, the clipping scale multiplied into
 * each gradient first).
 *
 * How: the optimiser keeps one packed GPU copy of the parameters, the two moments and the gradients (each parameter a
 * segment of four buffers); gradients are copied in with buffer copies (commands, not programs); after the update each
 * parameter and moment is copied out into a new tensor and assigned to its variable, so tfjs's semantics hold (a
 * variable's old tensor is never written, and anything keyed by tensor identity, such as the fused decoding weights,
 * sees the change). A variable assigned by anyone else (a checkpoint, `AdamW.load`) is copied in again: the packed copy
 * remembers which tensor each segment came from.
 */
import * as tf from '@tensorflow/tfjs';
import { dispatch, encoderForCopies, GBuffer, gpuBuffer, newOutput, toTensor, Uniform, USAGE, webgpuTrainBackend, WebGpuTrainBackend, WG, wgSum } from './webgpu_train_dispatch';

/** Hyper-parameters of one step, as AdamW.apply has them. */
export interface AdamWStep {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1 − beta1^t and 1 − beta2^t. */
  bc1: number;
  bc2: number;
}

/** Workgroups of the first norm program (its partial sums; the second program adds them). */
const NORM_GROUPS = 256;
/** Most workgroups of the update program (each thread strides over the elements). */
const UPDATE_GROUPS = 4096;

const normPartial = /* wgsl */ `
@group(0) @binding(0) var<storage, read> G: array<f32>;
@group(0) @binding(1) var<storage, read_write> partial: array<f32>;
struct U { n: u32 }
@group(0) @binding(2) var<uniform> u: U;
var<workgroup> red: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32, @builtin(num_workgroups) nw: vec3<u32>) {
  var part = 0.0;
  for (var i = wid.x * ${WG}u + tid; i < u.n; i += nw.x * ${WG}u) { let g = G[i]; part += g * g; }
  ${wgSum('part', 'total', 'red')}
  if (tid == 0u) { partial[wid.x] = total; }
}
`;

const normFinal = /* wgsl */ `
@group(0) @binding(0) var<storage, read> partial: array<f32>;
@group(0) @binding(1) var<storage, read_write> norm: array<f32>;
struct U { n: u32 }
@group(0) @binding(2) var<uniform> u: U;
var<workgroup> red: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) tid: u32) {
  var part = 0.0;
  for (var i = tid; i < u.n; i += ${WG}u) { part += partial[i]; }
  ${wgSum('part', 'total', 'red')}
  if (tid == 0u) { norm[0] = sqrt(total); }
}
`;

/** The update over segments (start, end, lr·lrScale as f32 bits, flags: 1 decay, 2 has a gradient this step). */
const update = (segments: number) => /* wgsl */ `
@group(0) @binding(0) var<storage, read_write> P: array<f32>;
@group(0) @binding(1) var<storage, read_write> M: array<f32>;
@group(0) @binding(2) var<storage, read_write> V: array<f32>;
@group(0) @binding(3) var<storage, read> G: array<f32>;
@group(0) @binding(4) var<storage, read> scale: array<f32>;
struct U { n: u32, nseg: u32, beta1: f32, beta2: f32, omb1: f32, omb2: f32, bc1: f32, bc2: f32, eps: f32, wd: f32, segs: array<vec4<u32>, ${segments}> }
@group(0) @binding(5) var<uniform> u: U;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
  let s = scale[0];
  for (var i = gid.x; i < u.n; i += nw.x * ${WG}u) {
    var lo = 0u;
    var hi = u.nseg;
    while (hi - lo > 1u) { let mid = (lo + hi) / 2u; if (u.segs[mid].x <= i) { lo = mid; } else { hi = mid; } }
    let seg = u.segs[lo];
    if ((seg.w & 2u) == 0u) { continue; }
    let g = G[i] * s;
    let m = M[i] * u.beta1 + g * u.omb1;
    let v = V[i] * u.beta2 + (g * g) * u.omb2;
    M[i] = m;
    V[i] = v;
    let p = P[i];
    var step = (m / u.bc1) / (sqrt(v / u.bc2) + u.eps);
    if ((seg.w & 1u) != 0u) { step = step + p * u.wd; }
    P[i] = p - step * bitcast<f32>(seg.z);
  }
}
`;

/** One optimiser's packed state on the GPU. */
class Packed {
  readonly P: GBuffer;
  readonly M: GBuffer;
  readonly V: GBuffer;
  readonly G: GBuffer;
  /** Element offset of each parameter's segment, in the optimiser's order; offsets[k + 1] − offsets[k] = its size. */
  readonly offsets: number[];
  readonly n: number;
  /** The tensor (data id) each segment of P, M, V was last copied from or into. */
  readonly from: { P: (object | null)[]; M: (object | null)[]; V: (object | null)[] };
  /** The gradients G holds (their data ids, in the optimiser's order; null where a parameter had none). */
  gradIds: (object | null)[] | null = null;

  constructor(
    readonly backend: WebGpuTrainBackend,
    readonly names: string[],
    sizes: number[],
  ) {
    this.offsets = [0];
    for (const s of sizes) this.offsets.push(this.offsets[this.offsets.length - 1] + s);
    this.n = this.offsets[sizes.length];
    const make = () => backend.device.createBuffer({ size: 4 * this.n, usage: USAGE.STORAGE | USAGE.COPY_SRC | USAGE.COPY_DST });
    [this.P, this.M, this.V, this.G] = [make(), make(), make(), make()];
    const none = () => sizes.map(() => null);
    this.from = { P: none(), M: none(), V: none() };
  }

  dispose(): void {
    // recorded copies and updates may still wait for their submission: submit them before the buffers go
    if (this.backend.commandEncoder) {
      this.backend.endComputePassEncoder();
      this.backend.submitQueue();
    }
    for (const b of [this.P, this.M, this.V, this.G]) b.destroy();
  }
}

const states = new WeakMap<object, Packed>();

/** The packed state of optimiser `key` over `params`, made (again) when the parameter set changed. */
function packedFor(key: object, b: WebGpuTrainBackend, params: Map<string, tf.Variable>): Packed | null {
  const names = [...params.keys()];
  const sizes = [...params.values()].map((p) => p.size);
  const n = sizes.reduce((a, c) => a + c, 0);
  if (n === 0 || 4 * n > b.device.limits.maxStorageBufferBindingSize || params.size > 1000) return null;
  let s = states.get(key);
  if (!s || s.backend !== b || s.names.join('\n') !== names.join('\n') || s.offsets.some((o, k) => k > 0 && o - s!.offsets[k - 1] !== sizes[k - 1])) {
    s?.dispose();
    s = new Packed(b, names, sizes);
    states.set(key, s);
  }
  return s;
}

/** Copies the gradients into G (zeros where a parameter has none), unless G already holds exactly these. */
function packGrads(s: Packed, params: Map<string, tf.Variable>, grads: tf.NamedTensorMap): void {
  const b = s.backend;
  const ids = [...params.values()].map((p) => grads[p.name]?.dataId ?? null);
  if (s.gradIds && s.gradIds.every((id, k) => id === ids[k])) return;
  const present = [...params.values()].map((p) => grads[p.name]).filter((g): g is tf.Tensor => g !== undefined);
  const enc = encoderForCopies(b, present);
  [...params.values()].forEach((p, k) => {
    const g = grads[p.name];
    const at = 4 * s.offsets[k];
    if (g) enc.copyBufferToBuffer(gpuBuffer(b, g), 0, s.G, at, 4 * g.size);
    else enc.clearBuffer(s.G, at, 4 * p.size);
  });
  s.gradIds = ids;
}

/** Whether every gradient belongs to one of the parameters (else the plain ops decide what the norm covers). */
function gradsMatch(params: Map<string, tf.Variable>, grads: tf.NamedTensorMap): boolean {
  const names = new Set([...params.values()].map((p) => p.name));
  return Object.keys(grads).every((n) => names.has(n) && grads[n].dtype === 'float32');
}

/**
 * The global norm ‖g‖₂ over the gradients of optimiser `key`'s parameters as two programs, or null where the fused path
 * does not apply. The gradients stay packed for the update that follows.
 */
export function fusedGlobalNorm(key: object, params: Map<string, tf.Variable>, grads: tf.NamedTensorMap): tf.Scalar | null {
  const b = webgpuTrainBackend();
  if (!b || !gradsMatch(params, grads)) return null;
  const s = packedFor(key, b, params);
  if (!s) return null;
  packGrads(s, params, grads);
  const groups = Math.min(NORM_GROUPS, Math.ceil(s.n / WG));
  const partial = newOutput(b, [groups]);
  const norm = newOutput(b, []);
  dispatch(b, normPartial, [s.G, partial], [{ type: 'uint32', data: [s.n] }], [groups]);
  dispatch(b, normFinal, [partial, norm], [{ type: 'uint32', data: [groups] }], [1]);
  b.disposeData(partial.dataId); // released after the submission that reads it
  return toTensor(norm) as tf.Scalar;
}

/**
 * One AdamW step of optimiser `key` as one program: parameters, first and second moments (variables keyed by the
 * parameter names), gradients keyed by variable name, each scaled by `gradScale` [] first. Returns false where the
 * fused path does not apply (the caller then runs the plain ops).
 */
export function fusedAdamW(
  key: object,
  params: Map<string, tf.Variable>,
  moments: { m: Map<string, tf.Variable>; v: Map<string, tf.Variable> },
  grads: tf.NamedTensorMap,
  gradScale: tf.Scalar,
  h: AdamWStep,
  lrScale: Map<string, number>,
): boolean {
  const b = webgpuTrainBackend();
  if (!b || !gradsMatch(params, grads) || gradScale.dtype !== 'float32') return false;
  const s = packedFor(key, b, params);
  if (!s) return false;
  packGrads(s, params, grads);
  const vars = [...params.entries()];
  const sources = { P: vars.map(([, p]) => p), M: vars.map(([n]) => moments.m.get(n)!), V: vars.map(([n]) => moments.v.get(n)!) };
  // bring in every segment whose variable was assigned elsewhere since the last step
  const stale = (['P', 'M', 'V'] as const).flatMap((which) => sources[which].map((t, k) => ({ which, t, k })).filter(({ which: w, t, k }) => s.from[w][k] !== t.dataId));
  if (stale.length > 0) {
    const enc = encoderForCopies(b, stale.map((x) => x.t));
    for (const { which, t, k } of stale) {
      enc.copyBufferToBuffer(gpuBuffer(b, t), 0, s[which], 4 * s.offsets[k], 4 * t.size);
      s.from[which][k] = t.dataId;
    }
  }
  const f32bits = (x: number) => new Uint32Array(new Float32Array([x]).buffer)[0];
  const segs: Uniform[] = vars.map(([name, p], k) => ({
    type: 'uint32',
    data: [s.offsets[k], s.offsets[k + 1], f32bits(h.lr * (lrScale.get(name) ?? 1)), (p.rank >= 2 && h.weightDecay > 0 ? 1 : 0) | (grads[p.name] ? 2 : 0)],
  }));
  const f = (x: number): Uniform => ({ type: 'float32', data: [x] });
  const uniforms: Uniform[] = [
    { type: 'uint32', data: [s.n] }, { type: 'uint32', data: [vars.length] },
    f(h.beta1), f(h.beta2), f(1 - h.beta1), f(1 - h.beta2), f(h.bc1), f(h.bc2), f(h.eps), f(h.weightDecay),
    ...segs,
  ];
  dispatch(b, update(vars.length), [s.P, s.M, s.V, s.G, gradScale], uniforms, [Math.min(UPDATE_GROUPS, Math.ceil(s.n / WG))]);
  // each updated segment into a new tensor, assigned to its variable
  const outs = (['P', 'M', 'V'] as const).flatMap((which) => sources[which].map((v, k) => ({ which, v, k, info: newOutput(b, v.shape) })));
  const enc = encoderForCopies(b, [...outs.map((o) => o.info), ...outs.map((o) => o.v)]);
  for (const o of outs) enc.copyBufferToBuffer(s[o.which], 4 * s.offsets[o.k], gpuBuffer(b, o.info), 0, 4 * o.v.size);
  for (const o of outs) {
    const t = toTensor(o.info);
    o.v.assign(t);
    t.dispose();
    s.from[o.which][o.k] = o.v.dataId;
  }
  return true;
}

/** Frees optimiser `key`'s packed state. */
export function disposeFusedAdamW(key: object): void {
  states.get(key)?.dispose();
  states.delete(key);
}
