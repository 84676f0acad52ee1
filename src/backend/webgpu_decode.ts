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
 * Also: `draftIn` (a feature drafter's input projection), `argmax` (a greedy drafted chain's next token, kept on the
 * GPU, so a whole chain is drafted in one submission and one read), `medusa` (every Medusa head in one program) and
 * `gather` (the KV cache's accepted tree path).
 *
 * Buffers: one packed copy of the model's weights (refreshed when a parameter's tensor changes), an `io` buffer
 * (tokens, positions, mask), scratch activations, per KV cache one buffer [layer][k|v][slot][C], and the call records
 * (each dispatch's layer, row count, cache slots, …) read through a dynamic uniform offset. Inputs and outputs are
 * tfjs tensors; everything is encoded into the backend's command encoder, which is submitted at the end of each call,
 * so ordering with tfjs's own programs holds.
 *
 * Decoding only (no gradients). Uses tfjs-backend-webgpu 4.22 internals (its command encoder, tensor map and buffer
 * upload), typed locally below.
 */
import * as tf from '@tensorflow/tfjs';

/** tfjs flag: false runs decoding forwards on webgpu as plain tfjs ops (for comparisons within one process). */
export const WEBGPU_DECODE_FLAG = 'MTP_WEBGPU_DECODE';
tf.env().registerFlag(WEBGPU_DECODE_FLAG, () => true);
/** tfjs flag: false drafts greedy chains depth by depth with a host read each, instead of in one submission. */
export const WEBGPU_DRAFT_CHAIN_FLAG = 'MTP_WEBGPU_DRAFT_CHAIN';
tf.env().registerFlag(WEBGPU_DRAFT_CHAIN_FLAG, () => true);

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
  setBindGroup(i: number, g: GBindGroup, dynamicOffsets?: number[]): void;
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
  createBindGroup(d: { layout: GLayout; entries: { binding: number; resource: { buffer: GBuffer; size?: number } }[] }): GBindGroup;
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
  /** With `head`: hand out the last row's logits only, [1, V]. */
  lastRowLogits?: boolean;
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

// ---- per-dispatch parameters: one `Call` record (CALL_BYTES apart, read through a dynamic offset) per dispatch ----
const CALL_WORDS = 12; // layer T past S causal embed normTap fw tokenSlot row slot tapCol
const CALL_BYTES = 256; // the minimum uniform offset alignment WebGPU guarantees
/** Call records per submission (a drafted chain of 16 through 4 blocks needs 16 × 7). */
const MAX_CALLS = 256;
/** Tokens a drafted chain can hold. */
const MAX_CHAIN = 64;
const NONE = 0xffffffff;

interface Call {
  layer?: number;
  T?: number;
  past?: number;
  S?: number;
  /** 1: causal attention over the slots, 0: the mask in io. */
  causal?: number;
  /** 1: this block's `qkv` embeds the tokens first. */
  embed?: number;
  normTap?: number;
  fw?: number;
  /** draftIn: the act token slot the token comes from (NONE: io tokens). */
  tokenSlot?: number;
  row?: number;
  slot?: number;
  /** rest: the features column this block's output is copied to (NONE: none). */
  tapCol?: number;
}

/** Call records written once per submission, then bound one per dispatch. */
class CallList {
  private readonly words = new Uint32Array((MAX_CALLS * CALL_BYTES) / 4);
  private n = 0;

  /** Adds a record; returns its dynamic offset. */
  add(c: Call): number {
    if (this.n === MAX_CALLS) throw new Error(`fused decoding: more than ${MAX_CALLS} dispatches in one submission`);
    const at = (this.n * CALL_BYTES) / 4;
    const v = [c.layer ?? 0, c.T ?? 0, c.past ?? 0, c.S ?? 0, c.causal ?? 1, c.embed ?? 0, c.normTap ?? NONE, c.fw ?? 0, c.tokenSlot ?? NONE, c.row ?? 0, c.slot ?? 0, c.tapCol ?? NONE];
    this.words.set(v, at);
    return this.n++ * CALL_BYTES;
  }

  /** Writes the records into `buffer` (before the submission that reads them) and starts a new list. */
  flush(device: GDevice, buffer: GBuffer): void {
    if (this.n > 0) device.queue.writeBuffer(buffer, 0, this.words.buffer, 0, this.n * CALL_BYTES);
    this.n = 0;
  }
}

// ---- io buffer (32-bit words): tokens [N], positions [N], mask [N·N] (float bits) ----
function ioLayout(s: DecodeShape) {
  const n = fusedSlots(s);
  const tokens = 0;
  const positions = tokens + n;
  const mask = positions + n;
  return { tokens, positions, mask, words: mask + n * n };
}

// ---- scratch activations (floats), N = fusedSlots rows: Z [N, C] (the residual stream), Q [N, C], features [N, L·C],
// logits [N, V], Medusa logits [K, V], a drafted chain's tokens [MAX_CHAIN] ----
function actLayout(s: DecodeShape) {
  const { C, nLayer, vocab: V } = s;
  const P = fusedSlots(s);
  const z = 0;
  const q = P * C;
  const feat = q + P * C;
  const logits = feat + P * nLayer * C;
  const medusa = logits + P * V;
  const tokens = medusa + s.medusaHeads * V;
  return { z, q, feat, logits, medusa, tokens, total: tokens + MAX_CHAIN };
}

// ---- WGSL ----

export function shaders(s: DecodeShape): Record<ProgramName, string> {
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
const IO_TOK: u32 = ${io.tokens}u;
const IO_POS: u32 = ${io.positions}u;
const IO_MASK: u32 = ${io.mask}u;
const A_Z: u32 = ${act.z}u;
const A_Q: u32 = ${act.q}u;
const A_FEAT: u32 = ${act.feat}u;
const A_LOGITS: u32 = ${act.logits}u;
const A_MEDUSA: u32 = ${act.medusa}u;
const A_TOKENS: u32 = ${act.tokens}u;

@group(0) @binding(0) var<storage, read> io: array<u32>;
@group(0) @binding(1) var<storage, read> W: array<f32>;
@group(0) @binding(2) var<storage, read_write> kv: array<f32>;
@group(0) @binding(3) var<storage, read_write> act: array<f32>;
struct Call { layer: u32, T: u32, past: u32, S: u32, causal: u32, embed: u32, normTap: u32, fw: u32, tokenSlot: u32, row: u32, slot: u32, tapCol: u32, }
@group(1) @binding(0) var<uniform> call: Call;

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
  const layerNorm = (row: string, g: string, b: string) => /* wgsl */ `
  var part0 = 0.0;
  for (var c = tid; c < C; c += WG) { part0 += ${row}[c]; }
  ${wgSum('part0', 'sum0', 'red0')}
  let mean0 = sum0 / f32(C);
  var dev0 = 0.0;
  for (var c = tid; c < C; c += WG) { let d = ${row}[c] - mean0; dev0 += d * d; }
  ${wgSum('dev0', 'sq0', 'red1')}
  let rstd0 = inverseSqrt(sq0 / f32(C) + EPS);
  for (var c = tid; c < C; c += WG) { ${row}[c] = (${row}[c] - mean0) * rstd0 * W[${g} + c] + W[${b} + c]; }
  workgroupBarrier();`;
  const kvBase = 'call.layer * 2u * N * C';
  const qkv = /* wgsl */ `${common}
var<workgroup> xs: array<f32, ${C}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let t = wid.y;
  let base = W_BLOCKS + call.layer * W_STRIDE;
  for (var c = tid; c < C; c += WG) {
    var v: f32;
    if (call.embed == 1u) {
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
    let slot = call.past + t;
    if (j < C) {
      act[A_Q + t * C + j] = acc;
    } else if (j < 2u * C) {
      kv[${kvBase} + slot * C + j - C] = acc;
    } else {
      kv[${kvBase} + N * C + slot * C + j - 2u * C] = acc;
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
  let S = call.S;
  let base = W_BLOCKS + call.layer * W_STRIDE;
  let kBase = ${kvBase};
  let vBase = kBase + N * C;
  for (var c = tid; c < C; c += WG) { qs[c] = act[A_Q + t * C + c]; }
  workgroupBarrier();
  // scores of every head over slots [0, S), plus the additive mask
  let scale = ${f(1 / Math.sqrt(hs))};
  for (var i = tid; i < NH * S; i += WG) {
    let h = i / S;
    let j = i % S;
    var m = 0.0;
    if (call.causal == 1u) { if (j > call.past + t) { m = MASKED; } } else { m = bitcast<f32>(io[IO_MASK + t * S + j]); }
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
  for (var c = tid; c < C; c += WG) {
    var acc = 0.0;
    let w2 = base + ${w.inBlock.w2}u + c;
    for (var k = 0u; k < F; k++) { acc += sh[k] * W[w2 + k * C]; }
    let out = x1[c] + (acc + W[base + ${w.inBlock.b2}u + c]);
    act[A_Z + t * C + c] = out;
    if (call.tapCol != NONE) { act[A_FEAT + t * call.fw + call.tapCol + c] = out; }
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
  if (call.normTap != NONE && wid.x == 0u) {
    for (var c = tid; c < C; c += WG) { act[A_FEAT + t * call.fw + call.normTap + c] = xs[c]; }
  }
  let j = wid.x * WG + tid;
  if (j < V) {
    var acc = 0.0;
    ${s.tied ? 'for (var k = 0u; k < C; k++) { acc += xs[k] * W[W_TOK + j * C + k]; }' : 'for (var k = 0u; k < C; k++) { acc += xs[k] * W[W_HEAD + k * V + j]; }'}
    act[A_LOGITS + t * V + j] = acc;
  }
}
`;
  // KV gather: slots io[IO_TOK + i] (increasing, each ≥ its destination) move to call.past + i, i < call.T, for every
  // layer's keys and values; one thread per column walks the slots in order, so no slot is overwritten before it is read.
  const gather = /* wgsl */ `${common}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let c = wid.x * WG + tid;
  if (c >= C) { return; }
  let base = wid.y * N * C; // one (layer, k|v) plane per workgroup row
  for (var i = 0u; i < call.T; i++) {
    kv[base + (call.past + i) * C + c] = kv[base + io[IO_TOK + i] * C + c];
  }
}
`;
  // the feature drafter's input (grid 1 × T): h′ = g·rsqrt(mean(g²) + eps) · projG + tokenTable[token], in place; the
  // token comes from io, or (a drafted chain) from the act token slot the previous depth's argmax wrote
  const draftIn = /* wgsl */ `${common}
var<workgroup> xs: array<f32, ${C}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let t = wid.y;
  var part = 0.0;
  for (var c = tid; c < C; c += WG) { let v = act[A_Z + t * C + c]; xs[c] = v; part += v * v; }
  ${wgSum('part', 'sq', 'red0')}
  let rinv = inverseSqrt(sq / f32(C) + EPS);
  var tok = io[IO_TOK + t];
  if (call.tokenSlot != NONE) { tok = u32(act[A_TOKENS + call.tokenSlot]); }
  for (var c = tid; c < C; c += WG) {
    var acc = 0.0;
    for (var k = 0u; k < C; k++) { acc += (xs[k] * rinv) * W[W_PROJG + k * C + c]; }
    act[A_Z + t * C + c] = W[W_TABLE + tok * C + c] + acc;
  }
}
`;
  // greedy step of a drafted chain (grid 1): the argmax of logits row call.row (the first index on ties, as the host's
  // argmax) into act token slot call.slot, and that row's state moved to row 0 as the next depth's input
  const argmax = /* wgsl */ `${common}
var<workgroup> bestV: array<f32, ${WG}>;
var<workgroup> bestI: array<u32, ${WG}>;
var<workgroup> xs: array<f32, ${C}>;
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) tid: u32) {
  let r = call.row;
  var bv = -3.0e38;
  var bi = V;
  for (var j = tid; j < V; j += WG) {
    let v = act[A_LOGITS + r * V + j];
    if (v > bv) { bv = v; bi = j; }
  }
  bestV[tid] = bv;
  bestI[tid] = bi;
  workgroupBarrier();
  ${(() => {
    const steps: string[] = [];
    for (let n = WG / 2; n >= 1; n /= 2) {
      steps.push(`if (tid < ${n}u) { let ov = bestV[tid + ${n}u]; let oi = bestI[tid + ${n}u]; if (ov > bestV[tid] || (ov == bestV[tid] && oi < bestI[tid])) { bestV[tid] = ov; bestI[tid] = oi; } }\n  workgroupBarrier();`);
    }
    return steps.join('\n  ');
  })()}
  if (tid == 0u) { act[A_TOKENS + call.slot] = f32(bestI[0]); }
  for (var c = tid; c < C; c += WG) { xs[c] = act[A_Z + r * C + c]; }
  workgroupBarrier();
  for (var c = tid; c < C; c += WG) { act[A_Z + c] = xs[c]; }
}
`;
  // Medusa heads (grid ⌈V/WG⌉ × K) at row call.row of the features: head k's logits W2ₖ(SiLU(W1ₖh + b1ₖ) + h)
  const medusa = /* wgsl */ `${common}
var<workgroup> xs: array<f32, ${C}>;
var<workgroup> rs: array<f32, ${C}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) tid: u32) {
  let k = wid.y;
  let r = call.row;
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
  return { qkv, rest, head, gather, draftIn, argmax, medusa };
}

type ProgramName = 'qkv' | 'rest' | 'head' | 'gather' | 'draftIn' | 'argmax' | 'medusa';

// ---- per-model state ----

interface Programs {
  pipelines: Record<ProgramName, GPipeline | null>;
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
  const group1 = device.createBindGroupLayout({ entries: [{ binding: 0, visibility: COMPUTE_STAGE, buffer: { type: 'uniform', hasDynamicOffset: true } }] });
  const pipelineLayout = device.createPipelineLayout({ bindGroupLayouts: [group0, group1] });
  const code = shaders(s);
  const wanted: Record<ProgramName, boolean> = { qkv: true, rest: true, head: true, gather: true, draftIn: s.draftInput, argmax: s.draftInput, medusa: s.medusaHeads > 0 };
  device.pushErrorScope('validation');
  const pipelines = Object.fromEntries(
    (Object.keys(wanted) as ProgramName[]).map((name) => [
      name,
      wanted[name] ? device.createComputePipeline({ layout: pipelineLayout, compute: { module: device.createShaderModule({ code: code[name] }), entryPoint: 'main' } }) : null,
    ]),
  ) as Record<ProgramName, GPipeline | null>;
  // a program that fails to compile would leave its outputs unwritten: say so loudly
  void device.popErrorScope().then((e) => e && console.error(`fused webgpu decoding: a program failed to compile: ${e.message}`));
  p = { pipelines, group0, group1 };
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

/** Dispatches issued by the fused programs (forwards, gathers, heads, chains) since the process started. */
export const fusedDispatches = { count: 0 };

/** A model's fused decoding state: its packed weights, scratch buffers and call records. */
export class GpuDecodeModel {
  private readonly programs: Programs;
  private readonly weights: GBuffer;
  private readonly io: GBuffer;
  private readonly act: GBuffer;
  private readonly callBuffer: GBuffer;
  private readonly callGroup: GBindGroup;
  private readonly calls = new CallList();
  private readonly entries: ReturnType<typeof layout>['entries'];
  private readonly ioWords: ReturnType<typeof ioLayout>;
  private readonly acts: ReturnType<typeof actLayout>;
  /** The tfjs tensor (data id) each packed parameter was copied from. */
  private copiedFrom: (object | null)[];
  private readonly staging: ArrayBuffer;
  /** A cache for the programs that use none (the Medusa heads, the head over given rows). */
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
    this.callBuffer = d.createBuffer({ size: MAX_CALLS * CALL_BYTES, usage: USAGE.UNIFORM | USAGE.COPY_DST });
    this.callGroup = d.createBindGroup({ layout: this.programs.group1, entries: [{ binding: 0, resource: { buffer: this.callBuffer, size: 4 * CALL_WORDS } }] });
    this.staging = new ArrayBuffer(4 * this.ioWords.words);
    this.copiedFrom = this.entries.map(() => null);
  }

  /** A new KV cache for this model. */
  newStore(): WebGpuKVStore {
    const store = new WebGpuKVStore(this.backend.device, this.shape);
    this.bind(store);
    return store;
  }

  /**
   * One fused forward over T new rows after `past` cached slots (past + T ≤ fusedSlots), writing their keys and values
   * into `store`: the features [T, width] and, with `head`, the logits [T, V]. Call inside tf.tidy.
   */
  forward(store: WebGpuKVStore, past: number, f: FusedForward, param: ParamLookup): { features: tf.Tensor2D; logits: tf.Tensor2D | null } {
    const s = this.shape;
    const T = f.x?.shape[0] ?? f.tokens!.length;
    const S = this.begin(store, past, T, param);
    const taps = [...f.taps].sort((a, c) => a - c);
    const width = (taps.length + (f.normedFeatures ? 1 : 0)) * s.C;
    const enc = this.upload(T, S, f.tokens && (f.positions ?? f.tokens.map((_, i) => past + i)), f.tokens, f.mask, f.x);
    const pass = enc.beginComputePass();
    pass.setBindGroup(0, store.group!);
    if (f.draftInput) {
      if (!this.programs.pipelines.draftIn || !f.x || !f.tokens) throw new Error('fused decoding: a drafter input needs a drafter shape, its states and its tokens');
      this.dispatch(pass, 'draftIn', { T }, 1, T);
    }
    const causal = f.mask ? 0 : 1;
    for (let l = f.from; l < f.to; l++) {
      const tap = taps.indexOf(l + 1);
      this.block(pass, { layer: l, T, past, S, causal, embed: f.tokens && !f.x && l === f.from ? 1 : 0, fw: width, tapCol: tap < 0 ? NONE : tap * s.C });
    }
    if (f.head) this.dispatch(pass, 'head', { T, fw: width, normTap: f.normedFeatures ? taps.length * s.C : NONE }, Math.ceil(s.vocab / WG), T);
    pass.end();
    const features = this.output(enc, this.acts.feat, [T, width]);
    const logits = !f.head ? null : f.lastRowLogits ? this.output(enc, this.acts.logits + (T - 1) * s.vocab, [1, s.vocab]) : this.output(enc, this.acts.logits, [T, s.vocab]);
    this.submit();
    return { features: features as tf.Tensor2D, logits: logits as tf.Tensor2D | null };
  }

  /** The final LayerNorm + unembedding of rows x [R, C] (no cache): logits [R, V]. */
  headRows(x: tf.Tensor, param: ParamLookup): tf.Tensor2D {
    const s = this.shape;
    const R = x.shape[0];
    if (R < 1 || R > fusedSlots(s)) throw new Error(`fused decoding: ${R} rows for the head, allowed 1..${fusedSlots(s)}`);
    this.dummy ??= this.newStore();
    this.refreshWeights(param);
    const enc = this.upload(R, 0, null, undefined, undefined, x);
    const pass = enc.beginComputePass();
    pass.setBindGroup(0, this.dummy.group!);
    this.dispatch(pass, 'head', { T: R }, Math.ceil(s.vocab / WG), R);
    pass.end();
    const out = this.output(enc, this.acts.logits, [R, s.vocab]);
    this.submit();
    return out as tf.Tensor2D;
  }

  /**
   * A greedy chain drafted on the GPU in one submission (the feature drafter, DecodeShape.draftInput): the catch-up
   * rows (states g [n, C] after `past` cached slots, with their tokens) stay in `store`; then `depth − 1` rows of the
   * drafter's own predictions, each fed the argmax of the row before. Returns the `depth` drafted tokens as a float32
   * tensor (one read); the chain's rows are left in `store` after the catch-up rows, for the caller to drop.
   */
  draftChain(store: WebGpuKVStore, past: number, g: tf.Tensor, tokens: number[], depth: number, param: ParamLookup): tf.Tensor1D {
    const s = this.shape;
    const n = tokens.length;
    if (!this.programs.pipelines.draftIn || depth < 1 || depth > MAX_CHAIN) throw new Error(`fused decoding: a drafted chain needs a drafter shape and 1 ≤ depth ≤ ${MAX_CHAIN}, got ${depth}`);
    this.begin(store, past, n + depth - 1, param);
    const enc = this.upload(n, past + n, null, tokens, undefined, g);
    const pass = enc.beginComputePass();
    pass.setBindGroup(0, store.group!);
    for (let d = 0; d < depth; d++) {
      const T = d === 0 ? n : 1;
      const at = d === 0 ? past : past + n + d - 1;
      this.dispatch(pass, 'draftIn', { T, tokenSlot: d === 0 ? NONE : d - 1 }, 1, T);
      for (let l = 0; l < s.nLayer; l++) this.block(pass, { layer: l, T, past: at, S: at + T, causal: 1 });
      this.dispatch(pass, 'head', { T }, Math.ceil(s.vocab / WG), T);
      this.dispatch(pass, 'argmax', { row: T - 1, slot: d }, 1);
    }
    pass.end();
    const out = this.output(enc, this.acts.tokens, [depth]);
    this.submit();
    return out as tf.Tensor1D;
  }

  /** Medusa heads 1..K at row `row` of `features` [R, C] (the normalised last hidden states): their logits [K, V]. */
  medusaLogits(features: tf.Tensor, row: number, K: number, param: ParamLookup): tf.Tensor2D {
    const s = this.shape;
    if (!this.programs.pipelines.medusa || K > s.medusaHeads) throw new Error(`fused decoding: this model's programs run ${s.medusaHeads} Medusa heads, asked for ${K}`);
    const R = features.shape[0];
    if (R > fusedSlots(s)) throw new Error(`fused decoding: ${R} feature rows exceed ${fusedSlots(s)}`);
    this.dummy ??= this.newStore();
    this.refreshWeights(param);
    const enc = this.upload(R, 0, null, undefined, undefined, features);
    const pass = enc.beginComputePass();
    pass.setBindGroup(0, this.dummy.group!);
    this.dispatch(pass, 'medusa', { row }, Math.ceil(s.vocab / WG), K);
    pass.end();
    const out = this.output(enc, this.acts.medusa, [K, s.vocab]);
    this.submit();
    return out as tf.Tensor2D;
  }

  /** Moves cache slots `src` to [dst, dst + n) in every layer (see the gather program). */
  gather(store: WebGpuKVStore, src: number[], dst: number): void {
    const enc = this.upload(0, 0, null, src, undefined, undefined);
    const pass = enc.beginComputePass();
    pass.setBindGroup(0, store.group!);
    this.dispatch(pass, 'gather', { T: src.length, past: dst }, Math.ceil(this.shape.C / WG), 2 * this.shape.nLayer);
    pass.end();
    this.submit();
  }

  dispose(): void {
    this.dummy?.dispose();
    for (const buf of [this.weights, this.io, this.act, this.callBuffer]) buf.destroy();
  }

  /** Checks the rows fit, binds the store and refreshes the weights; returns S = past + T. */
  private begin(store: WebGpuKVStore, past: number, T: number, param: ParamLookup): number {
    const s = this.shape;
    const S = past + T;
    if (!(T >= 1 && S <= fusedSlots(s))) throw new Error(`fused decoding: ${T} new rows after ${past} cached slots exceed the cache's ${fusedSlots(s)} slots (the ${s.positions}-token window + ${TREE_SLOTS} for a tree's nodes)`);
    if (store.owner !== this) this.bind(store);
    this.refreshWeights(param);
    return S;
  }

  /**
   * Writes a submission's inputs (tokens, positions, mask [T, S], input rows x [T, C]) and returns the backend's
   * command encoder, ready for a compute pass.
   */
  private upload(T: number, S: number, positions: number[] | null | undefined, tokens: number[] | undefined, mask: tf.Tensor | undefined, x: tf.Tensor | undefined): GEncoder {
    const b = this.backend;
    const io = this.ioWords;
    const words = new Uint32Array(this.staging);
    let used = 0;
    if (tokens) {
      words.set(tokens, io.tokens);
      used = io.tokens + tokens.length;
    }
    if (positions) {
      words.set(positions, io.positions);
      used = io.positions + positions.length;
    }
    let maskOnGpu: unknown = null;
    if (mask) {
      const m = b.tensorMap.get(mask.dataId);
      if (m.values) {
        new Float32Array(this.staging).set(m.values as Float32Array, io.mask);
        used = io.mask + T * S;
      } else {
        maskOnGpu = m.resource;
      }
    }
    if (used > 0) b.device.queue.writeBuffer(this.io, 0, this.staging, 0, 4 * used);
    let xOnGpu: unknown = null;
    if (x) {
      const d = b.tensorMap.get(x.dataId);
      const n = x.size;
      if (d.values) b.device.queue.writeBuffer(this.act, 4 * this.acts.z, Float32Array.from(d.values as Float32Array).buffer, 0, 4 * n);
      else xOnGpu = d.resource;
    }
    b.ensureCommandEncoderReady();
    b.endComputePassEncoder();
    const enc = b.commandEncoder!;
    if (maskOnGpu) enc.copyBufferToBuffer(maskOnGpu as GBuffer, 0, this.io, 4 * io.mask, 4 * T * S);
    if (xOnGpu) enc.copyBufferToBuffer(xOnGpu as GBuffer, 0, this.act, 4 * this.acts.z, 4 * x!.size);
    return enc;
  }

  /** One block over T rows: its two programs. */
  private block(pass: GPass, c: Call): void {
    const offset = this.calls.add(c);
    pass.setBindGroup(1, this.callGroup, [offset]);
    pass.setPipeline(this.programs.pipelines.qkv!);
    pass.dispatchWorkgroups(Math.ceil((3 * this.shape.C) / WG), c.T!);
    pass.setPipeline(this.programs.pipelines.rest!);
    pass.dispatchWorkgroups(c.T!);
    fusedDispatches.count += 2;
  }

  private dispatch(pass: GPass, name: ProgramName, c: Call, x: number, y = 1): void {
    pass.setBindGroup(1, this.callGroup, [this.calls.add(c)]);
    pass.setPipeline(this.programs.pipelines[name]!);
    pass.dispatchWorkgroups(x, y);
    fusedDispatches.count += 1;
  }

  /** Writes the call records, then submits the backend's commands (this submission's and any tfjs recorded before). */
  private submit(): void {
    this.calls.flush(this.backend.device, this.callBuffer);
    this.backend.submitQueue();
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

  /** A new float32 tensor of `shape` copied from scratch at float offset `at`. */
  private output(enc: GEncoder, at: number, shape: number[]): tf.Tensor {
    const b = this.backend;
    const info = b.makeTensorInfo(shape, 'float32');
    b.uploadToGPU(info.dataId);
    enc.copyBufferToBuffer(this.act, 4 * at, b.tensorMap.get(info.dataId).resource as GBuffer, 0, 4 * shape.reduce((x, y) => x * y, 1));
    return tf.engine().makeTensorFromTensorInfo(info, tf.backend());
  }
}

/** The fused state of each model (keyed by an object the model owns), made on first use. */
const models = new WeakMap<object, GpuDecodeModel>();

/** The fused decoding state of the model keyed by `key`, or null where the path does not apply. */
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
