/**
 * mtp-lab's own SIMD kernels for the `wasm` backend (C sources and build script in ./native/), instantiated against
 * tfjs-backend-wasm's own `WebAssembly.Memory`: they read and write tensors in place, by the heap offsets the backend
 * gives its tensors, with no copies in or out. What is built on them — the GEMM behind BatchMatMul
 * (wasm_batch_matmul.ts), fused attention, LayerNorm, bias + GELU and linear + residual (wasm_attention.ts,
 * wasm_layer_norm.ts, wasm_bias_gelu.ts, wasm_linear.ts), column sums (wasm_gather_sum.ts) and the in-place KV cache
 * (wasm_kv_store.ts) — replaces chains of small tfjs ops, transpose copies and tfjs-backend-wasm's slow batched
 * matMul loop (https://github.com/tensorflow/tfjs/pull/2532).
 *
 * Loading is asynchronous (browsers refuse synchronous compilation of modules over 4 KB on the main thread), so
 * `initBackend('wasm')` awaits `loadNativeKernels()`; until then, or when a backend's memory cannot be shared (the
 * multi-threaded tfjs build uses shared memory), `nativeKernels()` is null and the model uses plain tfjs ops.
 * The tfjs flag MTP_WASM_FAST turns every fast path of this package off (for comparisons within one process).
 * There are two builds of the kernels, plain SIMD and relaxed SIMD (wasm_simd.ts says which is chosen and how);
 * `wasmSimdVariant()` tells which one is bound.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendWasm } from '@tensorflow/tfjs-backend-wasm';
import {
  chooseWasmSimd,
  checkWasmSimdMode,
  kernelModuleBytes,
  relaxedSimdSupported,
  wasmSimdModeFromEnv,
  type WasmSimdMode,
  type WasmSimdVariant,
} from './wasm_simd';

/** Pointers are byte offsets into the tfjs heap; counts and strides are in elements. */
export interface NativeExports {
  attn_fwd(...args: number[]): void;
  attn_fwd_cached(...args: number[]): void;
  attn_bwd(...args: number[]): void;
  kv_write(
    src: number, sbs: number, sts: number, shs: number, B: number, T: number, H: number, hs: number,
    dst: number, cap: number, past: number, transposed: number,
  ): void;
  kv_gather(buf: number, segments: number, width: number, cap: number, idx: number, n: number, tmp: number): void;
  col_sum(x: number, out: number, N: number, C: number): void;
  ln_fwd(x: number, g: number, b: number, y: number, stats: number, N: number, C: number, eps: number): void;
  ln_bwd(dy: number, x: number, g: number, stats: number, dx: number, dg: number, db: number, N: number, C: number): void;
  bias_gelu_fwd(h: number, bias: number, out: number, N: number, F: number): void;
  bias_gelu_bwd(dout: number, h: number, bias: number, dh: number, dbias: number, N: number, F: number): void;
  gemm(
    a: number, b: number, c: number, M: number, N: number, K: number, ta: number, tb: number,
    bias: number, residual: number, scratch: number,
  ): void;
  gemm_scratch(N: number): number;
  /** The module's shadow-stack pointer (a mutable global). */
  __stack_pointer: { value: number };
}

/**
 * The parts of the WebAssembly JS API used here, typed locally: tslab compiles this file with a lib that declares
 * `WebAssembly` without them.
 */
interface WasmApi {
  compile(bytes: ArrayBuffer): Promise<object>;
  instantiate(module: object, imports: object): Promise<{ exports: object }>;
  Memory: abstract new (...args: never[]) => { buffer: ArrayBufferLike };
}

const wasmApi = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

/** The parts of tfjs-backend-wasm's Emscripten module this package uses (typed loosely by tfjs). */
export interface EmscriptenHeap {
  _malloc(bytes: number): number;
  _free(ptr: number): void;
  HEAPF32: Float32Array;
  HEAP32: Int32Array;
}

/** The Emscripten module behind a wasm backend. */
export function emscripten(backend: BackendWasm): EmscriptenHeap {
  return backend.wasm as unknown as EmscriptenHeap;
}

/** The argument tf.customGrad takes, for functions written with named tensor parameters. */
export type CustomGradFunc = Parameters<typeof tf.customGrad>[0];

/** tfjs flag: false turns off every fast path of this package on wasm (native kernels and the zero-copy fixes). */
export const FAST_FLAG = 'MTP_WASM_FAST';
tf.env().registerFlag(FAST_FLAG, () => true);

/** True when this package's wasm fast paths are enabled (the default). */
export function wasmFastEnabled(): boolean {
  return tf.env().getBool(FAST_FLAG);
}

/** Bytes of the block the module's shadow stack points into (it uses none today; see native/build.sh). */
const STACK_BYTES = 1 << 16;

/**
 * The kernels bound to one wasm backend instance, with a reusable scratch block on its heap. `fn` is the bound
 * module's exports: callers look it up at each call, so rebinding the other module (loadNativeKernels) takes effect
 * at the next kernel.
 */
export class NativeKernels {
  private scratchPtr = 0;
  private scratchBytes = 0;

  constructor(
    readonly backend: BackendWasm,
    public fn: NativeExports,
    public variant: WasmSimdVariant,
  ) {}

  /** Heap byte offset of a tensor's data. */
  ptr(t: tf.TensorInfo): number {
    return this.backend.getMemoryOffset(t.dataId);
  }

  /**
   * A scratch block of at least `bytes` bytes, valid until the next call (kernels run one at a time). Grows by
   * reallocation; never shrinks.
   */
  scratch(bytes: number): number {
    if (bytes > this.scratchBytes) {
      if (this.scratchPtr !== 0) emscripten(this.backend)._free(this.scratchPtr);
      this.scratchBytes = Math.max(bytes, 2 * this.scratchBytes);
      this.scratchPtr = emscripten(this.backend)._malloc(this.scratchBytes);
    }
    return this.scratchPtr;
  }

  /** A Float32Array view of the whole heap (re-take it after any allocation: growing the heap detaches views). */
  heapF32(): Float32Array {
    return emscripten(this.backend).HEAPF32;
  }
}

const compiled = new Map<WasmSimdVariant, Promise<object>>();
const instances = new WeakMap<object, NativeKernels>();
/** Per backend, each module instantiated against its memory so far (switching back costs nothing). */
const modules = new WeakMap<object, Map<WasmSimdVariant, NativeExports>>();
/** Per backend, the block the modules' shadow-stack pointers point into (kernels run one at a time, so one block serves both). */
const stacks = new WeakMap<object, number>();

/**
 * Instantiates the kernels for the active backend (must be `wasm`, initialized). Which module: `mode` when given
 * (see wasm_simd.ts), else the one already bound, else MTP_WASM_SIMD, else 'auto'. Binding the other module to a
 * backend that has kernels rebinds it. Throws when 'relaxed' is asked for and the engine lacks relaxed SIMD, or for
 * an unknown mode. Returns false, leaving the model on plain tfjs ops, when they cannot run here: the backend's memory
 * cannot be imported (the multi-threaded tfjs build uses shared memory), or the engine lacks a WebAssembly feature
 * they use (SIMD, bulk memory, mutable globals: browsers from 2021 on have all three).
 */
export async function loadNativeKernels(mode?: WasmSimdMode): Promise<boolean> {
  const backend = tf.backend() as BackendWasm;
  if (tf.getBackend() !== 'wasm') throw new Error('loadNativeKernels: the active backend is not wasm');
  const bound = instances.get(backend);
  if (mode === undefined && bound !== undefined) return true;
  const variant = chooseWasmSimd(
    mode === undefined ? (wasmSimdModeFromEnv() ?? 'auto') : checkWasmSimdMode(mode),
    relaxedSimdSupported(),
  );
  if (bound?.variant === variant) return true;
  const memory = (backend.wasm as unknown as { asm?: { memory?: unknown } }).asm?.memory;
  if (!(memory instanceof wasmApi.Memory) || isShared(memory)) return false;
  const loaded = modules.get(backend) ?? new Map<WasmSimdVariant, NativeExports>();
  let fn = loaded.get(variant);
  if (fn === undefined) {
    try {
      let module = compiled.get(variant);
      if (module === undefined) {
        module = wasmApi.compile(kernelModuleBytes(variant));
        compiled.set(variant, module);
      }
      fn = (await wasmApi.instantiate(await module, { env: { memory } })).exports as unknown as NativeExports;
    } catch {
      compiled.delete(variant);
      return false;
    }
    let stack = stacks.get(backend);
    if (stack === undefined) {
      stack = emscripten(backend)._malloc(STACK_BYTES) + STACK_BYTES;
      stacks.set(backend, stack);
    }
    fn.__stack_pointer.value = stack;
    loaded.set(variant, fn);
    modules.set(backend, loaded);
  }
  if (bound !== undefined) {
    bound.fn = fn;
    bound.variant = variant;
  } else {
    instances.set(backend, new NativeKernels(backend, fn, variant));
  }
  return true;
}

function isShared(memory: { buffer: ArrayBufferLike }): boolean {
  return typeof SharedArrayBuffer !== 'undefined' && memory.buffer instanceof SharedArrayBuffer;
}

/** True when the kernels are bound to the active backend (whatever the MTP_WASM_FAST flag says). */
export function nativeKernelsLoaded(): boolean {
  return instances.has(tf.backend());
}

/** Which kernel module is bound to the active backend ('relaxed' or 'plain'), or null when none is (or it is not wasm). */
export function wasmSimdVariant(): WasmSimdVariant | null {
  if (tf.getBackend() !== 'wasm') return null;
  return instances.get(tf.backend())?.variant ?? null;
}

/** The kernels of the active backend when it is wasm, they are loaded and the fast paths are on; else null. */
export function nativeKernels(): NativeKernels | null {
  if (tf.getBackend() !== 'wasm' || !wasmFastEnabled()) return null;
  return instances.get(tf.backend()) ?? null;
}

/** The kernels bound to `backend` (inside a kernel function); throws when they were not loaded for it. */
export function nativeKernelsFor(backend: unknown): NativeKernels {
  const k = instances.get(backend as object);
  if (!k) throw new Error("mtp-lab wasm kernels are not loaded for this backend: initialize it with initBackend('wasm')");
  return k;
}
