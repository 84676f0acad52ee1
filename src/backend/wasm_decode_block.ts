/**
 * Decoding forwards as few tfjs kernels on `wasm`, over the package's native routines:
 * - `MtpDecodeBlock`: a whole transformer block, the same routines the block's fused ops call one kernel each
 *   (LayerNorm, the QKV product, the in-place KV-cache write, attention over the cache, the output projection with its
 *   residual, LayerNorm, the MLP product, bias + GELU, the second product with its bias and residual), called in the
 *   same order on the same inputs, so the result has the same bits;
 * - `MtpDraftRows`: a whole drafting step of the feature drafter (model/feature.ts): RMS normalisation of the input
 *   states, the input projection plus each token's row of the precomputed token table, its blocks as above, the final
 *   LayerNorm and the unembedding: its next states and their logits in one kernel.
 * What they save is the per-kernel cost of the tfjs engine (≈ 10 kernels and their tensors per block): a decoding
 * forward of a small model is mostly that cost, and a speculative step adds the drafter's own forwards to it.
 *
 * Decoding only (KV caches kept in place, no gradient); layers.ts and model/feature.ts use them when the cache and the
 * shapes allow.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import { fusedAttentionSupports } from './wasm_attention';
import { fusedLinearSupports } from './wasm_linear';
import { emscripten, NativeKernels, nativeKernelsFor } from './wasm_native';

export const DECODE_BLOCK = 'MtpDecodeBlock';
export const DRAFT_ROWS = 'MtpDraftRows';

/** tfjs flag: false runs decoding blocks and drafting steps op by op (for comparisons within one process). */
export const DECODE_BLOCK_FLAG = 'MTP_WASM_DECODE_BLOCK';
tf.env().registerFlag(DECODE_BLOCK_FLAG, () => true);

type KernelArgs = Parameters<tf.KernelFunc>[0];

const round4 = (n: number) => (n + 3) & ~3;

/** The block's weights, by their names in layers.ts. */
export interface BlockWeights {
  ln1g: tf.Tensor;
  ln1b: tf.Tensor;
  wqkv: tf.Tensor;
  wo: tf.Tensor;
  ln2g: tf.Tensor;
  ln2b: tf.Tensor;
  w1: tf.Tensor;
  b1: tf.Tensor;
  w2: tf.Tensor;
  b2: tf.Tensor;
}

/** A block's parameter names (model/params.ts addBlockParams), the keys of BlockWeights. */
export const BLOCK_NAMES = ['ln1g', 'ln1b', 'wqkv', 'wo', 'ln2g', 'ln2b', 'w1', 'b1', 'w2', 'b2'] as const;

type BlockPointers = Record<(typeof BLOCK_NAMES)[number], number>;

/** Heap pointers of a block's weights among a kernel's inputs, named `<prefix><name>`. */
function blockPointers(k: NativeKernels, t: Record<string, tf.TensorInfo>, prefix = ''): BlockPointers {
  return Object.fromEntries(BLOCK_NAMES.map((n) => [n, k.ptr(t[prefix + n])])) as BlockPointers;
}

/** Where a block's KV cache layer lies and which positions the new rows take. */
export interface BlockSlot {
  kt: tf.Tensor4D;
  v: tf.Tensor4D;
  past: number;
  S: number;
}

/** Floats of scratch one block needs for R rows (T per batch entry) attending S positions. */
function blockScratch(k: NativeKernels, R: number, T: number, C: number, F: number, S: number): number[] {
  const attnFloats = T * round4(S) + 2 * T;
  const gemmFloats = k.fn.gemm_scratch(Math.max(3 * C, F, C));
  return [R * C, 3 * R * C, R * C, R * C, R * F, R * F, 2 * R, attnFloats, gemmFloats].map(round4);
}

/** Byte offsets of consecutive blocks of these float sizes from `base`. */
function carve(base: number, sizes: number[]): number[] {
  const out: number[] = [];
  let at = base;
  for (const n of sizes) {
    out.push(at);
    at += 4 * n;
  }
  return out;
}

/** One block over R rows: x → out (heap pointers), the new rows' K, V written into the slot's buffers. */
function runBlock(
  k: NativeKernels, x: number, out: number, w: BlockPointers, kt: number, v: number, cap: number, mask: number,
  R: number, T: number, C: number, F: number, H: number, eps: number, past: number, S: number, scratch: number,
): void {
  const B = R / T;
  const hs = C / H;
  const [h, qkv, att, x1, hid, g, stats, as, gs] = carve(scratch, blockScratch(k, R, T, C, F, S));
  const f = k.fn;
  f.ln_fwd(x, w.ln1g, w.ln1b, h, stats, R, C, eps);
  f.gemm(h, w.wqkv, qkv, R, 3 * C, C, 0, 0, 0, 0, gs);
  f.kv_write(qkv + 4 * C, T * 3 * C, 3 * C, hs, B, T, H, hs, kt, cap, past, 1);
  f.kv_write(qkv + 8 * C, T * 3 * C, 3 * C, hs, B, T, H, hs, v, cap, past, 0);
  f.attn_fwd_cached(qkv, kt, v, att, mask, B, H, T, S, hs, cap, T * 3 * C, 3 * C, T * C, C, 1 / Math.sqrt(hs), as);
  f.gemm(att, w.wo, x1, R, C, C, 0, 0, 0, x, gs);
  f.ln_fwd(x1, w.ln2g, w.ln2b, h, stats, R, C, eps);
  f.gemm(h, w.w1, hid, R, F, C, 0, 0, 0, 0, gs);
  f.bias_gelu_fwd(hid, w.b1, g, R, F);
  f.gemm(g, w.w2, out, R, C, F, 0, 0, w.b2, x1, gs);
}

interface DecodeBlockAttrs {
  /** Rows per batch entry (new tokens). */
  T: number;
  nHead: number;
  eps: number;
  /** Cache positions before the new tokens, and attended positions after them. */
  past: number;
  S: number;
}

function decodeBlockKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo {
  const t = inputs as unknown as Record<string, tf.TensorInfo>;
  const { T, nHead, eps, past, S } = attrs as unknown as DecodeBlockAttrs;
  const k = nativeKernelsFor(backend);
  const [R, C] = t.x.shape;
  const F = t.w1.shape[1];
  const out = (backend as BackendWasm).makeOutput([R, C], 'float32');
  const scratch = k.scratch(4 * blockScratch(k, R, T, C, F, S).reduce((a, b) => a + b, 0));
  runBlock(k, k.ptr(t.x), k.ptr(out), blockPointers(k, t), k.ptr(t.kt), k.ptr(t.v), t.kt.shape[3], k.ptr(t.mask), R, T, C, F, nHead, eps, past, S, scratch);
  return out;
}

interface DraftRowsAttrs {
  nHead: number;
  eps: number;
  layers: number;
  past: number;
  S: number;
  /** 1 when the unembedding is the token embedding, read transposed. */
  tied: number;
}

/**
 * inputs {g [R, C], tokens [R] int32, mask [R, S], projG [C, C], tokenTable [V, C], lnfg, lnfb, head ([C, V], or the
 * token embedding [V, C] when tied), and per drafter block l: `l<l>.<weight>`, `kt<l>`, `v<l>`} → [f̂ [R, C], logits [R, V]].
 */
function draftRowsKernel({ inputs, backend, attrs }: KernelArgs): tf.TensorInfo[] {
  const t = inputs as unknown as Record<string, tf.TensorInfo>;
  const { nHead, eps, layers, past, S, tied } = attrs as unknown as DraftRowsAttrs;
  const k = nativeKernelsFor(backend);
  const wasm = backend as BackendWasm;
  const [R, C] = t.g.shape;
  const V = t.tokenTable.shape[0];
  const F = t['l0.w1'].shape[1];
  const fOut = wasm.makeOutput([R, C], 'float32');
  const logits = wasm.makeOutput([R, V], 'float32');
  const block = blockScratch(k, R, R, C, F, S);
  const own = [R * C, R * C, R * C, 2 * R, k.fn.gemm_scratch(Math.max(C, V))].map(round4); // n(g) | h′ / block ping-pong | LN | stats | gemm
  const base = k.scratch(4 * [...own, ...block].reduce((a, b) => a + b, 0));
  const [n, hp, ln, stats, gs, blockBase] = carve(base, own.concat([0]));
  // n(g) = g / sqrt(mean(g²) + eps), row by row, and the token table's rows beside it (the product's residual)
  const heap = emscripten(wasm).HEAPF32;
  const ids = emscripten(wasm).HEAP32;
  const g0 = k.ptr(t.g) >> 2;
  const tok0 = k.ptr(t.tokens) >> 2;
  const table0 = k.ptr(t.tokenTable) >> 2;
  for (let r = 0; r < R; r++) {
    let ss = 0;
    for (let c = 0; c < C; c++) ss = Math.fround(ss + Math.fround(heap[g0 + r * C + c] * heap[g0 + r * C + c]));
    const scale = Math.fround(1 / Math.sqrt(Math.fround(Math.fround(ss / C) + eps)));
    for (let c = 0; c < C; c++) heap[(n >> 2) + r * C + c] = Math.fround(heap[g0 + r * C + c] * scale);
    heap.copyWithin((ln >> 2) + r * C, table0 + ids[tok0 + r] * C, table0 + (ids[tok0 + r] + 1) * C);
  }
  k.fn.gemm(n, k.ptr(t.projG), hp, R, C, C, 0, 0, 0, ln, gs); // h′ = n(g)·projG + table[x]
  let x = hp;
  for (let l = 0; l < layers; l++) {
    const dst = l === layers - 1 ? k.ptr(fOut) : x === hp ? n : hp;
    runBlock(k, x, dst, blockPointers(k, t, `l${l}.`), k.ptr(t[`kt${l}`]), k.ptr(t[`v${l}`]), t[`kt${l}`].shape[3], k.ptr(t.mask), R, R, C, F, nHead, eps, past, S, blockBase);
    x = dst;
  }
  k.fn.ln_fwd(k.ptr(fOut), k.ptr(t.lnfg), k.ptr(t.lnfb), ln, stats, R, C, eps);
  k.fn.gemm(ln, k.ptr(t.head), k.ptr(logits), R, V, C, 0, tied, 0, 0, gs);
  return [fOut, logits];
}

/** Registers the kernels (and gradients that refuse: decoding only). Idempotent. */
export function registerDecodeBlockKernel(): void {
  for (const [name, fn] of [[DECODE_BLOCK, decodeBlockKernel], [DRAFT_ROWS, draftRowsKernel]] as const) {
    if (tf.getKernel(name, 'wasm') === undefined) tf.registerKernel({ kernelName: name, backendName: 'wasm', kernelFunc: fn as unknown as tf.KernelFunc });
    if (tf.getGradient(name) === undefined) {
      tf.registerGradient({
        kernelName: name,
        gradFunc: () => {
          throw new Error(`${name} is for decoding and has no gradient: train with forwards that use no KV cache`);
        },
      });
    }
  }
}

/** True when a block of width C, nHead heads and MLP width F can run as one kernel. */
export function decodeBlockSupports(C: number, nHead: number, F: number): boolean {
  return tf.env().getBool(DECODE_BLOCK_FLAG) && fusedAttentionSupports(C, nHead) && fusedLinearSupports(C) && fusedLinearSupports(3 * C) && fusedLinearSupports(F);
}

/**
 * x [B·T, C] → the block's output [B·T, C], appending the T new tokens' keys and values at `slot.past` in the cache
 * buffers (kt [B, H, hs, cap], v [B, H, cap, hs]); mask [T, S] additive.
 */
export function fusedDecodeBlock(x: tf.Tensor2D, weights: BlockWeights, mask: tf.Tensor2D, slot: BlockSlot, T: number, nHead: number, eps: number): tf.Tensor2D {
  const attrs: DecodeBlockAttrs = { T, nHead, eps, past: slot.past, S: slot.S };
  const m = mask.dtype === 'float32' ? mask : tf.cast(mask, 'float32');
  return tf.engine().runKernel(DECODE_BLOCK, { x, mask: m, kt: slot.kt, v: slot.v, ...weights } as unknown as tf.NamedTensorMap, attrs as unknown as tf.NamedAttrMap) as tf.Tensor2D;
}

/** What a drafting step reads besides its rows: the decoding tables, the output head, and per block weights and cache. */
export interface DraftRowsWeights {
  projG: tf.Tensor;
  tokenTable: tf.Tensor;
  lnfg: tf.Tensor;
  lnfb: tf.Tensor;
  /** [C, V], or the token embedding [V, C] when `tied`. */
  head: tf.Tensor;
  tied: boolean;
  blocks: BlockWeights[];
}

/**
 * One drafting step as one kernel: g [R, C], tokens [R] int32, mask [R, S] (over the drafter's cache + these rows),
 * the drafter's cache slots (one per block, all at the same positions) → its next states f̂ [R, C] and their logits [R, V].
 */
export function fusedDraftRows(g: tf.Tensor2D, tokens: tf.Tensor1D, mask: tf.Tensor2D, w: DraftRowsWeights, slots: BlockSlot[], nHead: number, eps: number): { f: tf.Tensor2D; logits: tf.Tensor2D } {
  const inputs: Record<string, tf.Tensor> = { g, tokens, mask, projG: w.projG, tokenTable: w.tokenTable, lnfg: w.lnfg, lnfb: w.lnfb, head: w.head };
  w.blocks.forEach((b, l) => {
    for (const n of BLOCK_NAMES) inputs[`l${l}.${n}`] = b[n];
    inputs[`kt${l}`] = slots[l].kt;
    inputs[`v${l}`] = slots[l].v;
  });
  const attrs: DraftRowsAttrs = { nHead, eps, layers: w.blocks.length, past: slots[0].past, S: slots[0].S, tied: w.tied ? 1 : 0 };
  const [f, logits] = tf.engine().runKernel(DRAFT_ROWS, inputs as unknown as tf.NamedTensorMap, attrs as unknown as tf.NamedAttrMap) as tf.Tensor2D[];
  return { f, logits };
}
