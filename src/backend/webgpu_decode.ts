/**
 * Decoding forwards on `webgpu` as a few WGSL programs per step, written straight into the tfjs backend's command
 * stream: the trunk's embeddings, every block, the final LayerNorm and the unembedding, over a KV cache that stays on
 * the GPU and is written in place.
 *
 * Why: through tfjs ops a decoding forward of a small model is ~100–200 programs, each costing the host ~100 µs to
 * issue (uniforms, bind groups, pipeline lookup, engine bookkeeping); the GPU itself is idle most of the step. Here a
 * forward over T new tokens is 2 programs per block and one for the head, issued with bind groups and pipelines made
 * once per model, and one queue submission.
 *
 * The programs (one row per workgroup row; WG threads per workgroup; shapes baked in as constants):
 * - `qkv`  (per block; grid ⌈3C/WG⌉ × T): LayerNorm 1 of row t (the embeddings on the first block of a trunk
 *   forward), its product with W_qkv; q goes to scratch, k and v into the cache at slot past + t;
 * - `rest` (per block; grid T): attention of row t over cache slots [0, S) (additive mask, or causal), the output
 *   projection + residual, LayerNorm 2, the MLP (bias + GELU, second product + bias + residual), the row written
 *   back in place, and copied to the features when this block is a tap;
 * - `head` (grid ⌈V/WG⌉ × T): the final LayerNorm and the unembedding → logits (and the normalised row as features
 *   when asked).
 * Every row is computed by one workgroup in a fixed order whatever T is, and masked positions add exact zeros, so a
 * token's logits have the same bits whether it is fed alone, with drafts or in a prefill: greedy speculative decoding
 * stays token-identical to plain decoding on this path too.
 *
 * Buffers: one packed copy of the model's weights (refreshed when a parameter's tensor changes), an `io` buffer
 * (step header, tokens, positions, mask), scratch activations, and per KV cache one buffer [layer][k|v][slot][C].
 * Inputs and outputs are tfjs tensors; everything is encoded into the backend's command encoder, which is submitted
 * at the end of each call, so ordering with tfjs's own programs holds.
 *
 * Decoding only (no gradients). Uses tfjs-backend-webgpu 4.22 internals (its command encoder, tensor map and buffer
 * upload), typed locally below.
 */
import * as tf from '@tensorflow/tfjs';

/** tfjs flag: false runs decoding forwards on webgpu as plain tfjs ops (for comparisons within one process). */
export const WEBGPU_DECODE_FLAG = 'MTP_WEBGPU_DECODE';
tf.env().registerFlag(WEBGPU_DECODE_FLAG, () => true);

/** Threads per workgroup (within WebGPU's compatibility-mode limit of 128). */
const WG = 128;
/** Additive mask value of blocked attention (model/transformer.ts MASKED). */
const MASKED = -1e9;
/**
 * Cache slots beyond the context window: a tree step's rejected siblings take slots until the gather, so a cache may
 * hold up to window + tree nodes entries (sparse63, the largest bundled tree, needs 63).
 */
const TREE_SLOTS = 128;

/** Cache slots (and rows per forward) the fused programs hold. */
export function fusedSlots(s: DecodeShape): number {
  return s.positions + TREE_SLOTS;
}

// GPUBufferUsage / GPUShaderStage / GPUMapMode bits (fixed by the WebGPU specification).
const USAGE = { MAP_READ: 0x1, COPY_SRC: 0x4, COPY_DST: 0x8, UNIFORM: 0x40, STORAGE: 0x80 };
const COMPUTE_STAGE = 0x4;

// ---- the parts of WebGPU and of the tfjs webgpu backend used here ----

interface GBuffer {
  size: number;
  destroy(): void;
}
type GBindGroup = object;
type GLayout = object;
interface GPipeline {
  getBindGroupLayout(i: number): GLayout;
}
interface GPass {
  setPipeline(p: GPipeline): void;
  setBindGroup(i: number, g: GBindGroup): void;
  dispatchWorkgroups(x: number, y?: number): void;
  end(): void;
}
interface GEncoder {
  beginComputePass(): GPass;
  copyBufferToBuffer(src: GBuffer, srcOffset: number, dst: GBuffer, dstOffset: number, size: number): void;
}
interface GDevice {
  limits: { maxComputeWorkgroupStorageSize: number; maxStorageBufferBindingSize: number };
  queue: { writeBuffer(b: GBuffer, offset: number, data: ArrayBufferView | ArrayBuffer, dataOffset?: number, size?: number): void };
  createBuffer(d: { size: number; usage: number }): GBuffer;
  createShaderModule(d: { code: string }): object;
  createBindGroupLayout(d: { entries: object[] }): GLayout;
  createPipelineLayout(d: { bindGroupLayouts: GLayout[] }): GLayout;
  createComputePipeline(d: { layout: GLayout; compute: { module: object; entryPoint: string } }): GPipeline;
  createBindGroup(d: { layout: GLayout; entries: { binding: number; resource: { buffer: GBuffer } }[] }): GBindGroup;
  pushErrorScope(filter: 'validation'): void;
  popErrorScope(): Promise<{ message: string } | null>;
}
interface TensorData {
  values: ArrayLike<number> | null;
  resource?: unknown;
}
interface WebGPUBackendLike {
  device: GDevice;
  commandEncoder: GEncoder | null;
  tensorMap: { get(dataId: object): TensorData };
  ensureCommandEncoderReady(): void;
  endComputePassEncoder(): void;
  submitQueue(): void;
  uploadToGPU(dataId: object): void;
  makeTensorInfo(shape: number[], dtype: 'float32'): tf.TensorInfo;
}

/** The model's shape, as the programs need it. */
export interface DecodeShape {
  vocab: number;
  /** Rows of the position table (the context window). */
  positions: number;
  nLayer: number;
  C: number;
  nHead: number;
  /** MLP width. */
  F: number;
  tied: boolean;
  eps: number;
  /**
   * The feature drafter's input (model/feature.ts draftStep): rows are its states g, and h′ = n(g)·projG +
   * tokenTable[token] is formed before the blocks (parameters 'projG' and 'tokenTable').
   */
  draftInput: boolean;
  /** Medusa heads the `medusa` program can run (parameters 'medusa<k>.w1', 'b1', 'w2'); 0 for none. */
  medusaHeads: number;
}

/** The parameters the programs read, by their names in model/params.ts. */
export type ParamLookup = (name: string) => tf.Tensor;

/** What one fused forward computes. */
export interface FusedForward {
  /** New tokens [T] (the trunk's embeddings are computed in the first block), or */
  tokens?: number[];
  /** their input rows [T, C] (blocks `from`.. over rows computed elsewhere). */
  x?: tf.Tensor;
  /** Position ids [T] (default past + 0..T-1); used with `tokens`. */
  positions?: number[];
  /** Additive mask [T, S] over the cache + new rows; default causal. */
  mask?: tf.Tensor;
  /** Blocks [from, to). */
  from: number;
  to: number;
  /** With `x`: the rows are a feature drafter's states g and `tokens` its tokens (DecodeShape.draftInput). */
  draftInput?: boolean;
  /** Blocks after which the rows are copied out, side by side, as the features [T, taps·C]. */
  taps: number[];
  /** Also the final LayerNorm + unembedding → logits [T, V]. */
  head: boolean;
  /** With `head`: the features are the normalised last rows instead of the taps. */
  normedFeatures?: boolean;
}

/** The backend as the fused path needs it, or null when the active backend is not webgpu or the path is off. */
export function webgpuBackend(): WebGPUBackendLike | null {
  if (tf.getBackend() !== 'webgpu' || !tf.env().getBool(WEBGPU_DECODE_FLAG)) return null;
  return tf.backend() as unknown as WebGPUBackendLike;
}

/** Floats of workgroup memory the `rest` program needs (attention scores, the rows it keeps, the reduction). */
function sharedFloats(s: DecodeShape): number {
  return Math.max(s.nHead * fusedSlots(s), s.F) + 3 * s.C + 2 * WG;
}

/** Whether the fused programs can run this shape on this device. */
export function fusedDecodeSupports(s: DecodeShape, device: GDevice): boolean {
  return s.C % s.nHead === 0 && 4 * sharedFloats(s) <= device.limits.maxComputeWorkgroupStorageSize;
}

// ---- packed weights: [tokEmb V·C][posEmb P·C][per block: ln1g ln1b wqkv wo ln2g ln2b w1 b1 w2 b2][lnfg lnfb][head C·V] ----

const BLOCK_PARAMS = ['ln1g', 'ln1b', 'wqkv', 'wo', 'ln2g', 'ln2b', 'w1', 'b1', 'w2', 'b2'] as const;

function layout(s: DecodeShape) {
  const { C, F, vocab: V, positions: P, nLayer } = s;
  const sizes: Record<(typeof BLOCK_PARAMS)[number], number> = { ln1g: C, ln1b: C, wqkv: 3 * C * C, wo: C * C, ln2g: C, ln2b: C, w1: C * F, b1: F, w2: F * C, b2: C };
  const inBlock: Record<string, number> = {};
  let at = 0;
  for (const n of BLOCK_PARAMS) [inBlock[n], at] = [at, at + sizes[n]];
  const blockStride = at;
  const tok = 0;
  const pos = V * C;
  const blocks = pos + P * C;
  const lnfg = blocks + nLayer * blockStride;
  const lnfb = lnfg + C;
  const head = lnfb + C;
  const projG = head + (s.tied ? 0 : C * V);
  const table = projG + (s.draftInput ? C * C : 0);
  const medusa = table + (s.draftInput ? V * C : 0);
  const medusaStride = C * C + C + C * V; // per head: w1 [C, C], b1 [C], w2 [C, V]
  const total = medusa + s.medusaHeads * medusaStride;
  const entries: { name: string; offset: number; size: number }[] = [
    { name: 'tokEmb', offset: tok, size: V * C },
    { name: 'posEmb', offset: pos, size: P * C },
  ];
  for (let l = 0; l < nLayer; l++) for (const n of BLOCK_PARAMS) entries.push({ name: `l${l}.${n}`, offset: blocks + l * blockStride + inBlock[n], size: sizes[n] });
  entries.push({ name: 'lnfg', offset: lnfg, size: C }, { name: 'lnfb', offset: lnfb, size: C });
  if (!s.tied) entries.push({ name: 'head', offset: head, size: C * V });
  if (s.draftInput) entries.push({ name: 'projG', offset: projG, size: C * C }, { name: 'tokenTable', offset: table, size: V * C });
  for (let k = 1; k <= s.medusaHeads; k++) {
    const at = medusa + (k - 1) * medusaStride;
    entries.push({ name: `medusa${k}.w1`, offset: at, size: C * C }, { name: `medusa${k}.b1`, offset: at + C * C, size: C }, { name: `medusa${k}.w2`, offset: at + C * C + C, size: C * V });
  }
  return { inBlock, blockStride, tok, pos, blocks, lnfg, lnfb, head, projG, table, medusa, medusaStride, total, entries };
}

// ---- io buffer (32-bit words): header, per-layer tap columns, tokens, positions, mask ----
const H_T = 0; // rows this call
const H_PAST = 1; // cache slots before them
const H_S = 2; // slots attended: past + T
const H_CAUSAL = 3; // 1: causal mask, 0: the mask below
const H_EMBED = 4; // block that embeds the tokens, or NONE
const H_NORMTAP = 5; // head: column of the normalised rows in the features, or NONE
const H_FW = 6; // features row width
const H_GATHER_N = 7; // KV gather: slots moved
const H_GATHER_DST = 8; // KV gather: first destination slot
const H_ROW = 9; // medusa: the row of the features the heads read
const HEADER = 16;
const NONE = 0xffffffff;

function ioLayout(s: DecodeShape) {
  const n = fusedSlots(s);
  const taps = HEADER;
  const tokens = taps + s.nLayer;
  const positions = tokens + n;
  const mask = positions + n;
  return { taps, tokens, positions, mask, words: mask + n * n };
}

// ---- scratch activations (floats), N = fusedSlots rows: Z [N, C] (the residual stream), Q [N, C], features [N, L·C], logits [N, V] ----
function actLayout(s: DecodeShape) {
  const { C, nLayer, vocab: V } = s;
  const P = fusedSlots(s);
  const z = 0;
  const q = P * C;
  const feat = q + P * C;
  const logits = feat + P * nLayer * C;
  const medusa = logits + P * V;
  return { z, q, feat, logits, medusa, total: medusa + s.medusaHeads * V };
}

// ---- WGSL ----

export function shaders(s: DecodeShape): Record<'qkv' | 'rest' | 'head' | 'gather' | 'draftIn' | 'medusa', string> {
  const { C, F, nHead: H, vocab: V } = s;
  const hs = C / H;
  const w = layout(s);
  const io = ioLayout(s);
  const act = actLayout(s);
  const N = fusedSlots(s);
  const SH = Math.max(H * N, F);
  const f = (x: number) => (Number.isInteger(x) ? `${x}.0` : `${x}`);
  const common = /* wgsl */ `
const C: u32 = ${C}u;
const F: u32 = ${F}u;
const HS: u32 = ${hs}u;
const NH: u32 = ${H}u;
const V: u32 = ${V}u;
const N: u32 = ${N}u; // cache slots per (layer, keys | values) plane
const WG: u32 = ${WG}u;
const EPS: f32 = ${f(s.eps)};
const MASKED: f32 = ${f(MASKED)};
const NONE: u32 = ${NONE}u;
const W_TOK: u32 = ${w.tok}u;
const W_POS: u32 = ${w.pos}u;
const W_BLOCKS: u32 = ${w.blocks}u;
const W_STRIDE: u32 = ${w.blockStride}u;
const W_LNFG: u32 = ${w.lnfg}u;
const W_LNFB: u32 = ${w.lnfb}u;
const W_HEAD: u32 = ${w.head}u;
const W_PROJG: u32 = ${w.projG}u;
const W_TABLE: u32 = ${w.table}u;
const W_MEDUSA: u32 = ${w.medusa}u;
const W_MEDUSA_STRIDE: u32 = ${w.medusaStride}u;
const IO_TAPS: u32 = ${io.taps}u;
const IO_TOK: u32 = ${io.tokens}u;
const IO_POS: u32 = ${io.positions}u;
const IO_MASK: u32 = ${io.mask}u;
const A_Z: u32 = ${act.z}u;
const A_Q: u32 = ${act.q}u;
const A_FEAT: u32 = ${act.feat}u;
const A_LOGITS: u32 = ${act.logits}u;
const A_MEDUSA: u32 = ${act.medusa}u;

@group(0) @binding(0) var<storage, read> io: array<u32>;
@group(0) @binding(1) var<storage, read> W: array<f32>;
@group(0) @binding(2) var<storage, read_write> kv: array<f32>;
@group(0) @binding(3) var<storage, read_write> act: array<f32>;
struct Layer { index: u32, kvBase: u32, }
@group(1) @binding(0) var<uniform> layer: Layer;

var<workgroup> red0: array<f32, ${WG}>; // a LayerNorm's two reductions, one array each (reusing one array for both
var<workgroup> red1: array<f32, ${WG}>; // gave wrong sums on Mesa's llvmpipe through Dawn's OpenGL ES path)

`;
  // The sum over the workgroup of each thread's `part`, into `total`, in a fixed order. Unrolled, with every barrier
  // in main's top-level flow (OpenGL ES compute, which Dawn's software path runs on, allows barriers nowhere else).
  const wgSum = (part: string, total: string, r: string) => {
    const steps: string[] = [];
    for (let n = WG / 2; n >= 1; n /= 2) steps.push(`if (tid < ${n}u) { ${r}[tid] = ${r}[tid] + ${r}[tid + ${n}u]; }\n  workgroupBarrier();`);
    return `${r}[tid] = ${part};\n  workgroupBarrier();\n  ${steps.join('\n  ')}\n  let ${total} = ${r}[0];`;
  };
  // LayerNorm of row[0..C) in place (g, b at W offsets), as layers.ts: (x − mean)·rsqrt(var + eps)·g + b
  let lnCount = 0;
  const layerNorm = (row: string, g: string, b: string) => {
    const n = lnCount++;
    return /* wgsl */ `
  var part${n} = 0.0;
  for (var c = tid; c < C; c += WG) { part${n} += ${row}[c]; }
  ${wgSum(`part${n}`, `sum${n}`, 'red0')}
  let mean${n} = sum${n} / f32(C);
  var dev${n} = 0.0;
  for (var c = tid; c < C; c += WG) { let d = ${row}[c] - mean${n}; dev${n} += d * d; }
  ${wgSum(`dev${n}`, `sq${n}`, 'red1')}
  let rstd${n} = inverseSqrt(sq${n} / f32(C) + EPS);
  for (var c = tid; c < C; c += WG) { ${row}[c] = (${row}[c] - mean${n}) * rstd${n} * W[${g} + c] + W[${b} + c]; }
  workgroupBarrier();`;
  };
  const qkv = /* wgsl */ `${common}
var<workgroup> xs: array<f32, ${C}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let t = wid.y;
  let past = io[${H_PAST}];
  let base = W_BLOCKS + layer.index * W_STRIDE;
  let embed = io[${H_EMBED}] == layer.index;
  for (var c = tid; c < C; c += WG) {
    var v: f32;
    if (embed) {
      v = W[W_TOK + io[IO_TOK + t] * C + c] + W[W_POS + io[IO_POS + t] * C + c];
      if (wid.x == 0u) { act[A_Z + t * C + c] = v; }
    } else {
      v = act[A_Z + t * C + c];
    }
    xs[c] = v;
  }
  workgroupBarrier();
  ${layerNorm('xs', `base + ${w.inBlock.ln1g}u`, `base + ${w.inBlock.ln1b}u`)}
  let j = wid.x * WG + tid;
  if (j < 3u * C) {
    let wq = base + ${w.inBlock.wqkv}u + j;
    var acc = 0.0;
    for (var k = 0u; k < C; k++) { acc += xs[k] * W[wq + k * 3u * C]; }
    let slot = past + t;
    if (j < C) {
      act[A_Q + t * C + j] = acc;
    } else if (j < 2u * C) {
      kv[layer.kvBase + slot * C + j - C] = acc;
    } else {
      kv[layer.kvBase + N * C + slot * C + j - 2u * C] = acc;
    }
  }
}
`;
  const rest = /* wgsl */ `${common}
var<workgroup> sh: array<f32, ${SH}>; // attention probabilities [NH][N], then the MLP's hidden row [F]
var<workgroup> qs: array<f32, ${C}>; // q, then LayerNorm 2 of x1
var<workgroup> att: array<f32, ${C}>;
var<workgroup> x1: array<f32, ${C}>;
var<workgroup> stat: array<f32, ${2 * H}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let t = wid.x;
  let past = io[${H_PAST}];
  let S = io[${H_S}];
  let causal = io[${H_CAUSAL}] == 1u;
  let base = W_BLOCKS + layer.index * W_STRIDE;
  let kBase = layer.kvBase;
  let vBase = layer.kvBase + N * C;
  for (var c = tid; c < C; c += WG) { qs[c] = act[A_Q + t * C + c]; }
  workgroupBarrier();
  // scores of every head over slots [0, S), plus the additive mask
  let scale = ${f(1 / Math.sqrt(hs))};
  for (var i = tid; i < NH * S; i += WG) {
    let h = i / S;
    let j = i % S;
    var m = 0.0;
    if (causal) { if (j > past + t) { m = MASKED; } } else { m = bitcast<f32>(io[IO_MASK + t * S + j]); }
    var dot = 0.0;
    for (var d = 0u; d < HS; d++) { dot += qs[h * HS + d] * kv[kBase + j * C + h * HS + d]; }
    sh[h * N + j] = dot * scale + m;
  }
  workgroupBarrier();
  if (tid < NH) {
    var mx = sh[tid * N];
    for (var j = 1u; j < S; j++) { mx = max(mx, sh[tid * N + j]); }
    var sum = 0.0;
    for (var j = 0u; j < S; j++) { sum += exp(sh[tid * N + j] - mx); }
    stat[2u * tid] = mx;
    stat[2u * tid + 1u] = sum;
  }
  workgroupBarrier();
  for (var i = tid; i < NH * S; i += WG) {
    let h = i / S;
    let j = i % S;
    sh[h * N + j] = exp(sh[h * N + j] - stat[2u * h]) / stat[2u * h + 1u];
  }
  workgroupBarrier();
  for (var c = tid; c < C; c += WG) {
    let h = c / HS;
    var acc = 0.0;
    for (var j = 0u; j < S; j++) { acc += sh[h * N + j] * kv[vBase + j * C + c]; }
    att[c] = acc;
  }
  workgroupBarrier();
  // x1 = x + att · Wo
  for (var c = tid; c < C; c += WG) {
    var acc = 0.0;
    let wo = base + ${w.inBlock.wo}u + c;
    for (var k = 0u; k < C; k++) { acc += att[k] * W[wo + k * C]; }
    x1[c] = act[A_Z + t * C + c] + acc;
    qs[c] = x1[c];
  }
  workgroupBarrier();
  ${layerNorm('qs', `base + ${w.inBlock.ln2g}u`, `base + ${w.inBlock.ln2b}u`)}
  // hidden = GELU(LN2(x1) · W1 + b1), GELU as x·σ(1.702x)
  for (var n = tid; n < F; n += WG) {
    var acc = 0.0;
    let w1 = base + ${w.inBlock.w1}u + n;
    for (var k = 0u; k < C; k++) { acc += qs[k] * W[w1 + k * F]; }
    let a = acc + W[base + ${w.inBlock.b1}u + n];
    sh[n] = a * (1.0 / (1.0 + exp(-1.702 * a)));
  }
  workgroupBarrier();
  // out = x1 + hidden · W2 + b2, in place; copied to the features when this block is a tap
  let tap = io[IO_TAPS + layer.index];
  for (var c = tid; c < C; c += WG) {
    var acc = 0.0;
    let w2 = base + ${w.inBlock.w2}u + c;
    for (var k = 0u; k < F; k++) { acc += sh[k] * W[w2 + k * C]; }
    let out = x1[c] + (acc + W[base + ${w.inBlock.b2}u + c]);
    act[A_Z + t * C + c] = out;
    if (tap != NONE) { act[A_FEAT + t * io[${H_FW}] + tap + c] = out; }
  }
}
`;
  const head = /* wgsl */ `${common}
var<workgroup> xs: array<f32, ${C}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let t = wid.y;
  for (var c = tid; c < C; c += WG) { xs[c] = act[A_Z + t * C + c]; }
  workgroupBarrier();
  ${layerNorm('xs', 'W_LNFG', 'W_LNFB')}
  let normTap = io[${H_NORMTAP}];
  if (normTap != NONE && wid.x == 0u) {
    for (var c = tid; c < C; c += WG) { act[A_FEAT + t * io[${H_FW}] + normTap + c] = xs[c]; }
  }
  let j = wid.x * WG + tid;
  if (j < V) {
    var acc = 0.0;
    ${s.tied ? 'for (var k = 0u; k < C; k++) { acc += xs[k] * W[W_TOK + j * C + k]; }' : 'for (var k = 0u; k < C; k++) { acc += xs[k] * W[W_HEAD + k * V + j]; }'}
    act[A_LOGITS + t * V + j] = acc;
  }
}
`;
  // KV gather: slots io[IO_TOK + i] (increasing, each ≥ its destination) move to dst + i, for every layer's keys and
  // values; one thread per column walks the slots in order, so no slot is overwritten before it is read.
  const gather = /* wgsl */ `${common}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let c = wid.x * WG + tid;
  if (c >= C) { return; }
  let base = wid.y * N * C; // one (layer, k|v) plane per workgroup row
  let n = io[${H_GATHER_N}];
  let dst = io[${H_GATHER_DST}];
  for (var i = 0u; i < n; i++) {
    kv[base + (dst + i) * C + c] = kv[base + io[IO_TOK + i] * C + c];
  }
}
`;
  // the feature drafter's input (grid 1 × T): h′ = g·rsqrt(mean(g²) + eps) · projG + tokenTable[token], in place
  const draftIn = /* wgsl */ `${common}
var<workgroup> xs: array<f32, ${C}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let t = wid.y;
  var part = 0.0;
  for (var c = tid; c < C; c += WG) { let v = act[A_Z + t * C + c]; xs[c] = v; part += v * v; }
  ${wgSum('part', 'sq', 'red0')}
  let rinv = inverseSqrt(sq / f32(C) + EPS);
  let tok = io[IO_TOK + t];
  for (var c = tid; c < C; c += WG) {
    var acc = 0.0;
    for (var k = 0u; k < C; k++) { acc += (xs[k] * rinv) * W[W_PROJG + k * C + c]; }
    act[A_Z + t * C + c] = W[W_TABLE + tok * C + c] + acc;
  }
}
`;
  // Medusa heads (grid ⌈V/WG⌉ × K) at row io[H_ROW] of the features: head k's logits W2ₖ(SiLU(W1ₖh + b1ₖ) + h)
  const medusa = /* wgsl */ `${common}
var<workgroup> xs: array<f32, ${C}>;
var<workgroup> rs: array<f32, ${C}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let k = wid.y;
  let r = io[${H_ROW}];
  let base = W_MEDUSA + k * W_MEDUSA_STRIDE;
  for (var c = tid; c < C; c += WG) { xs[c] = act[A_Z + r * C + c]; }
  workgroupBarrier();
  for (var c = tid; c < C; c += WG) {
    var acc = 0.0;
    for (var i = 0u; i < C; i++) { acc += xs[i] * W[base + i * C + c]; }
    let a = acc + W[base + C * C + c];
    rs[c] = a * (1.0 / (1.0 + exp(-a))) + xs[c];
  }
  workgroupBarrier();
  let j = wid.x * WG + tid;
  if (j < V) {
    var acc = 0.0;
    for (var c = 0u; c < C; c++) { acc += rs[c] * W[base + C * C + C + c * V + j]; }
    act[A_MEDUSA + k * V + j] = acc;
  }
}
`;
  return { qkv, rest, head, gather, draftIn, medusa };
}

// ---- per-model state ----

interface Programs {
  qkv: GPipeline;
  rest: GPipeline;
  head: GPipeline;
  gather: GPipeline;
  draftIn: GPipeline | null;
  medusa: GPipeline | null;
  group0: GLayout;
  group1: GLayout;
}

/** Compiled programs per device and shape (shared by models of one shape). */
const programCache = new WeakMap<object, Map<string, Programs>>();

function programsFor(device: GDevice, s: DecodeShape): Programs {
  let byShape = programCache.get(device);
  if (!byShape) programCache.set(device, (byShape = new Map()));
  const key = JSON.stringify(s);
  let p = byShape.get(key);
  if (p) return p;
  const storage = (binding: number, type: 'read-only-storage' | 'storage') => ({ binding, visibility: COMPUTE_STAGE, buffer: { type } });
  const group0 = device.createBindGroupLayout({ entries: [storage(0, 'read-only-storage'), storage(1, 'read-only-storage'), storage(2, 'storage'), storage(3, 'storage')] });
  const group1 = device.createBindGroupLayout({ entries: [{ binding: 0, visibility: COMPUTE_STAGE, buffer: { type: 'uniform' } }] });
  const pipelineLayout = device.createPipelineLayout({ bindGroupLayouts: [group0, group1] });
  const code = shaders(s);
  device.pushErrorScope('validation');
  const make = (name: keyof typeof code) =>
    device.createComputePipeline({ layout: pipelineLayout, compute: { module: device.createShaderModule({ code: code[name] }), entryPoint: 'main' } });
  p = {
    qkv: make('qkv'),
    rest: make('rest'),
    head: make('head'),
    gather: make('gather'),
    draftIn: s.draftInput ? make('draftIn') : null,
    medusa: s.medusaHeads > 0 ? make('medusa') : null,
    group0,
    group1,
  };
  // a program that fails to compile would leave its outputs unwritten: say so loudly
  void device.popErrorScope().then((e) => e && console.error(`fused webgpu decoding: a program failed to compile: ${e.message}`));
  byShape.set(key, p);
  return p;
}

/** A KV cache kept on the GPU: one buffer [layer][keys | values][slot][C], fusedSlots(shape) slots per plane. */
export class WebGpuKVStore {
  readonly buffer: GBuffer;
  /** The bind group of this cache with its model's buffers (made at the first forward). */
  group: GBindGroup | null = null;
  owner: GpuDecodeModel | null = null;

  constructor(
    device: GDevice,
    readonly shape: DecodeShape,
  ) {
    this.buffer = device.createBuffer({ size: 4 * shape.nLayer * 2 * fusedSlots(shape) * shape.C, usage: USAGE.STORAGE | USAGE.COPY_SRC | USAGE.COPY_DST });
  }

  /** Keeps slots `indices` (increasing, each ≥ its new place) at [0, n): the accepted path after the prefix. */
  gather(indices: number[]): void {
    let first = 0;
    while (first < indices.length && indices[first] === first) first++;
    if (first === indices.length || this.owner === null) return;
    this.owner.gather(this, indices.slice(first), first);
  }

  /**
   * Layer l's keys and values for slots [0, S) as tensors [1, H, S, hs] (copies; for inspection and tests).
   */
  layer(l: number, S: number): { k: tf.Tensor4D; v: tf.Tensor4D } {
    const { C, nHead: H } = this.shape;
    return tf.tidy(() => {
      const all = tf.tensor({ buffer: this.buffer } as unknown as tf.TensorLike, [this.shape.nLayer, 2, fusedSlots(this.shape), C], 'float32');
      const plane = (i: number) => tf.transpose(tf.reshape(tf.slice(all, [l, i, 0, 0], [1, 1, S, C]), [1, S, H, C / H]), [0, 2, 1, 3]) as tf.Tensor4D;
      return { k: plane(0), v: plane(1) };
    });
  }

  dispose(): void {
    this.buffer.destroy();
    this.group = null;
    this.owner = null;
  }
}

/** Programs per call, for the benchmarks: dispatches issued by fused forwards and gathers since the last reset. */
export const fusedDispatches = { count: 0 };

/** A model's fused decoding state: its packed weights, scratch buffers and per-layer bind groups. */
export class GpuDecodeModel {
  private readonly programs: Programs;
  private readonly weights: GBuffer;
  private readonly io: GBuffer;
  private readonly act: GBuffer;
  private readonly layerGroups: GBindGroup[];
  private readonly layerUniforms: GBuffer[];
  private readonly entries: ReturnType<typeof layout>['entries'];
  private readonly ioWords: ReturnType<typeof ioLayout>;
  private readonly acts: ReturnType<typeof actLayout>;
  /** The tfjs tensor (data id) each packed parameter was copied from. */
  private copiedFrom: (object | null)[];
  private readonly staging: ArrayBuffer;
  /** A cache for the programs that use none (the Medusa heads). */
  private dummy: WebGpuKVStore | null = null;

  constructor(
    private readonly backend: WebGPUBackendLike,
    readonly shape: DecodeShape,
  ) {
    const d = backend.device;
    this.programs = programsFor(d, shape);
    const w = layout(shape);
    this.entries = w.entries;
    this.ioWords = ioLayout(shape);
    this.acts = actLayout(shape);
    const rw = USAGE.STORAGE | USAGE.COPY_SRC | USAGE.COPY_DST;
    this.weights = d.createBuffer({ size: 4 * w.total, usage: rw });
    this.io = d.createBuffer({ size: 4 * this.ioWords.words, usage: rw });
    this.act = d.createBuffer({ size: 4 * this.acts.total, usage: rw });
    this.staging = new ArrayBuffer(4 * this.ioWords.words);
    this.copiedFrom = this.entries.map(() => null);
    this.layerUniforms = [];
    this.layerGroups = [];
    for (let l = 0; l < shape.nLayer; l++) {
      const u = d.createBuffer({ size: 16, usage: USAGE.UNIFORM | USAGE.COPY_DST });
      d.queue.writeBuffer(u, 0, new Uint32Array([l, l * 2 * fusedSlots(shape) * shape.C, 0, 0]));
      this.layerUniforms.push(u);
      this.layerGroups.push(d.createBindGroup({ layout: this.programs.group1, entries: [{ binding: 0, resource: { buffer: u } }] }));
    }
  }

  /** A new KV cache for this model. */
  newStore(): WebGpuKVStore {
    const store = new WebGpuKVStore(this.backend.device, this.shape);
    this.bind(store);
    return store;
  }

  /**
   * One fused forward over T new rows after `past` cached slots (T ≥ 1, past + T ≤ positions), writing their keys and
   * values into `store`: the features [T, width] and, with `head`, the logits [T, V]. Call inside tf.tidy.
   */
  forward(store: WebGpuKVStore, past: number, f: FusedForward, param: ParamLookup): { features: tf.Tensor2D; logits: tf.Tensor2D | null } {
    const s = this.shape;
    const b = this.backend;
    const T = f.x?.shape[0] ?? f.tokens!.length;
    const S = past + T;
    if (!(T >= 1 && S <= fusedSlots(s))) throw new Error(`fused decoding: ${T} new rows after ${past} cached slots exceed the cache's ${fusedSlots(s)} slots (the ${s.positions}-token window + ${TREE_SLOTS} for a tree's nodes)`);
    if (store.owner !== this) this.bind(store);
    this.refreshWeights(param);
    // the step's io words: header, taps, tokens, positions, mask
    const io = this.ioWords;
    const words = new Uint32Array(this.staging);
    const floats = new Float32Array(this.staging);
    const taps = [...f.taps].sort((a, c) => a - c);
    const width = (taps.length + (f.normedFeatures ? 1 : 0)) * s.C;
    words.fill(NONE, 0, io.tokens);
    words[H_T] = T;
    words[H_PAST] = past;
    words[H_S] = S;
    words[H_CAUSAL] = f.mask ? 0 : 1;
    words[H_EMBED] = f.tokens && !f.x ? f.from : NONE;
    words[H_NORMTAP] = f.normedFeatures ? taps.length * s.C : NONE;
    words[H_FW] = width;
    taps.forEach((l, i) => (words[io.taps + l - 1] = i * s.C));
    let used = io.tokens;
    if (f.tokens) {
      const positions = f.positions ?? f.tokens.map((_, i) => past + i);
      words.set(f.tokens, io.tokens);
      words.set(positions, io.positions);
      used = io.positions + T;
    }
    let maskOnGpu: unknown = null;
    if (f.mask) {
      const m = b.tensorMap.get(f.mask.dataId);
      if (m.values) {
        floats.set(m.values as Float32Array, io.mask);
        used = io.mask + T * S;
      } else {
        maskOnGpu = m.resource;
      }
    }
    b.device.queue.writeBuffer(this.io, 0, this.staging, 0, 4 * used);
    let xOnGpu: unknown = null;
    if (f.x) {
      const x = b.tensorMap.get(f.x.dataId);
      if (x.values) b.device.queue.writeBuffer(this.act, 4 * this.acts.z, new Float32Array(x.values as Float32Array).buffer, 0, 4 * T * s.C);
      else xOnGpu = x.resource;
    }
    b.ensureCommandEncoderReady();
    b.endComputePassEncoder();
    const enc = b.commandEncoder!;
    if (maskOnGpu) enc.copyBufferToBuffer(maskOnGpu as GBuffer, 0, this.io, 4 * io.mask, 4 * T * S);
    if (xOnGpu) enc.copyBufferToBuffer(xOnGpu as GBuffer, 0, this.act, 4 * this.acts.z, 4 * T * s.C);
    const pass = enc.beginComputePass();
    const p = this.programs;
    pass.setBindGroup(0, store.group!);
    if (f.draftInput) {
      if (!p.draftIn || !f.x || !f.tokens) throw new Error('fused decoding: a drafter input needs a drafter shape, its states and its tokens');
      pass.setBindGroup(1, this.layerGroups[0]);
      pass.setPipeline(p.draftIn);
      pass.dispatchWorkgroups(1, T);
      fusedDispatches.count += 1;
    }
    for (let l = f.from; l < f.to; l++) {
      pass.setBindGroup(1, this.layerGroups[l]);
      pass.setPipeline(p.qkv);
      pass.dispatchWorkgroups(Math.ceil((3 * s.C) / WG), T);
      pass.setPipeline(p.rest);
      pass.dispatchWorkgroups(T);
    }
    if (f.head) {
      pass.setBindGroup(1, this.layerGroups[0]);
      pass.setPipeline(p.head);
      pass.dispatchWorkgroups(Math.ceil(s.vocab / WG), T);
    }
    pass.end();
    fusedDispatches.count += 2 * (f.to - f.from) + (f.head ? 1 : 0);
    const features = this.output(enc, this.acts.feat, [T, width]);
    const logits = f.head ? this.output(enc, this.acts.logits, [T, s.vocab]) : null;
    b.submitQueue();
    return { features: features as tf.Tensor2D, logits: logits as tf.Tensor2D | null };
  }

  /** Medusa heads 1..K at row `row` of `features` [R, C] (the normalised last hidden states): their logits [K, V]. */
  medusaLogits(features: tf.Tensor, row: number, K: number, param: ParamLookup): tf.Tensor2D {
    const s = this.shape;
    const b = this.backend;
    if (!this.programs.medusa || K > s.medusaHeads) throw new Error(`fused decoding: this model's programs run ${s.medusaHeads} Medusa heads, asked for ${K}`);
    const R = features.shape[0];
    if (R > fusedSlots(s)) throw new Error(`fused decoding: ${R} feature rows exceed ${fusedSlots(s)}`);
    this.refreshWeights(param);
    this.dummy ??= this.newStore();
    const words = new Uint32Array(this.staging);
    words[H_ROW] = row;
    b.device.queue.writeBuffer(this.io, 0, this.staging, 0, 4 * HEADER);
    const x = b.tensorMap.get(features.dataId);
    if (x.values) b.device.queue.writeBuffer(this.act, 4 * this.acts.z, new Float32Array(x.values as Float32Array).buffer, 0, 4 * R * s.C);
    b.ensureCommandEncoderReady();
    b.endComputePassEncoder();
    const enc = b.commandEncoder!;
    if (!x.values) enc.copyBufferToBuffer(x.resource as GBuffer, 0, this.act, 4 * this.acts.z, 4 * R * s.C);
    const pass = enc.beginComputePass();
    pass.setBindGroup(0, this.dummy.group!);
    pass.setBindGroup(1, this.layerGroups[0]);
    pass.setPipeline(this.programs.medusa);
    pass.dispatchWorkgroups(Math.ceil(s.vocab / WG), K);
    pass.end();
    fusedDispatches.count += 1;
    const out = this.output(enc, this.acts.medusa, [K, s.vocab]);
    b.submitQueue();
    return out as tf.Tensor2D;
  }

  /** Moves cache slots `src` to [dst, dst + n) in every layer (see the gather program). */
  gather(store: WebGpuKVStore, src: number[], dst: number): void {
    const b = this.backend;
    const words = new Uint32Array(this.staging);
    words[H_GATHER_N] = src.length;
    words[H_GATHER_DST] = dst;
    words.set(src, this.ioWords.tokens);
    // the header's other words are rewritten by the next forward; only these are read by the gather
    b.device.queue.writeBuffer(this.io, 0, this.staging, 0, 4 * (this.ioWords.tokens + src.length));
    b.ensureCommandEncoderReady();
    b.endComputePassEncoder();
    const pass = b.commandEncoder!.beginComputePass();
    pass.setBindGroup(0, store.group!);
    pass.setBindGroup(1, this.layerGroups[0]);
    pass.setPipeline(this.programs.gather);
    pass.dispatchWorkgroups(Math.ceil(this.shape.C / WG), 2 * this.shape.nLayer);
    pass.end();
    fusedDispatches.count += 1;
    b.submitQueue();
  }

  dispose(): void {
    this.dummy?.dispose();
    for (const buf of [this.weights, this.io, this.act, ...this.layerUniforms]) buf.destroy();
  }

  private bind(store: WebGpuKVStore): void {
    store.owner = this;
    store.group = this.backend.device.createBindGroup({
      layout: this.programs.group0,
      entries: [this.io, this.weights, store.buffer, this.act].map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
  }

  /** Copies into the packed buffer every parameter whose tensor changed since the last copy. */
  private refreshWeights(param: ParamLookup): void {
    const b = this.backend;
    let enc: GEncoder | null = null;
    this.entries.forEach((e, i) => {
      const t = param(e.name);
      if (this.copiedFrom[i] === t.dataId) return;
      if (t.size !== e.size) throw new Error(`fused decoding: parameter '${e.name}' has ${t.size} values, the layout expects ${e.size}`);
      b.uploadToGPU(t.dataId);
      if (!enc) {
        b.ensureCommandEncoderReady();
        b.endComputePassEncoder();
        enc = b.commandEncoder!;
      }
      enc.copyBufferToBuffer(b.tensorMap.get(t.dataId).resource as GBuffer, 0, this.weights, 4 * e.offset, 4 * e.size);
      this.copiedFrom[i] = t.dataId;
    });
  }

  /** A new float32 tensor [rows, cols] copied from scratch at float offset `at`. */
  private output(enc: GEncoder, at: number, shape: [number, number]): tf.Tensor {
    const b = this.backend;
    const info = b.makeTensorInfo(shape, 'float32');
    b.uploadToGPU(info.dataId);
    enc.copyBufferToBuffer(this.act, 4 * at, b.tensorMap.get(info.dataId).resource as GBuffer, 0, 4 * shape[0] * shape[1]);
    return tf.engine().makeTensorFromTensorInfo(info, tf.backend());
  }
}

/** The fused state of each parameter map (one per model), made on first use. */
const models = new WeakMap<object, GpuDecodeModel>();

/** The fused decoding state of the model whose parameters are `key`, or null where the path does not apply. */
export function gpuDecodeModel(key: object, shape: DecodeShape): GpuDecodeModel | null {
  const b = webgpuBackend();
  if (!b || !fusedDecodeSupports(shape, b.device)) return null;
  let m = models.get(key);
  if (!m || JSON.stringify(m.shape) !== JSON.stringify(shape)) {
    m?.dispose();
    m = new GpuDecodeModel(b, shape);
    models.set(key, m);
  }
  return m;
}
