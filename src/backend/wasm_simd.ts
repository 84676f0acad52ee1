/**
 * Which of this package's two kernel modules runs on the wasm backend. Both are built from the same C sources
 * (native/build.sh):
 *  - `plain`: kernels.wasm, SIMD128 only; every engine with WebAssembly SIMD.
 *  - `relaxed`: kernels_relaxed.wasm, where the multiply-adds of the GEMM, the attention products and exp's polynomial
 *    are relaxed SIMD's f32x4.relaxed_madd, one fused multiply-add on CPUs that have one (faster training GEMMs;
 *    docs/performance.md has the measurements). Engines: Chrome ≥ 114; Node 20 (V8 11.3) only when node is started
 *    with --experimental-wasm-relaxed-simd.
 *
 * `auto` takes `relaxed` when the engine validates its bytes, else `plain`. Results differ between the two in the last
 * bits (fused vs rounded multiply-adds), but within one module a token's logits have the same bits whatever the step's
 * shape, which is what lossless speculative decoding needs.
 */
import { KERNELS_WASM_BASE64 } from './native/kernels_wasm';
import { KERNELS_RELAXED_WASM_BASE64 } from './native/kernels_relaxed_wasm';

export const WASM_SIMD_MODES = ['auto', 'relaxed', 'plain'] as const;
/** What to load: a module by name, or `auto` (relaxed when the engine accepts it, else plain). */
export type WasmSimdMode = (typeof WASM_SIMD_MODES)[number];
/** The module actually bound. */
export type WasmSimdVariant = Exclude<WasmSimdMode, 'auto'>;

/** Environment variable read (Node only) when neither initBackend's `wasmSimd` nor an earlier choice says otherwise. */
export const WASM_SIMD_ENV = 'MTP_WASM_SIMD';

/** How to get relaxed SIMD where it is off, for error messages and docs. */
export const RELAXED_SIMD_HOWTO =
  'In Node 20, start node with --experimental-wasm-relaxed-simd (e.g. `node --experimental-wasm-relaxed-simd --import tsx ' +
  'src/cli/main.ts …`; Node refuses this flag in NODE_OPTIONS); in browsers, Chrome/Edge ≥ 114';

/** The parts of the WebAssembly JS API used here, typed locally (tslab's lib declares WebAssembly without them). */
interface WasmValidate {
  validate(bytes: ArrayBuffer): boolean;
}

const bytesCache = new Map<WasmSimdVariant, ArrayBuffer>();

function decodeBase64(b64: string): ArrayBuffer {
  const bin = atob(b64);
  const buffer = new ArrayBuffer(bin.length);
  const bytes = new Uint8Array(buffer);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return buffer;
}

/** The bytes of one kernel module (decoded once; do not modify). */
export function kernelModuleBytes(variant: WasmSimdVariant): ArrayBuffer {
  let bytes = bytesCache.get(variant);
  if (bytes === undefined) {
    bytes = decodeBase64(variant === 'relaxed' ? KERNELS_RELAXED_WASM_BASE64 : KERNELS_WASM_BASE64);
    bytesCache.set(variant, bytes);
  }
  return bytes;
}

/**
 * True when this engine accepts the relaxed module. Asked each time, not cached: in Node a V8 flag set at run time
 * (v8.setFlagsFromString) changes the answer for later compilations.
 */
export function relaxedSimdSupported(): boolean {
  const api = (globalThis as unknown as { WebAssembly?: WasmValidate }).WebAssembly;
  return api !== undefined && api.validate(kernelModuleBytes('relaxed'));
}

/** Checks a mode given by a caller or the environment; throws naming the allowed values. */
export function checkWasmSimdMode(mode: unknown, source = 'wasmSimd'): WasmSimdMode {
  if (!(WASM_SIMD_MODES as readonly unknown[]).includes(mode)) {
    throw new Error(`${source} must be one of ${WASM_SIMD_MODES.join(', ')}, got '${String(mode)}'.`);
  }
  return mode as WasmSimdMode;
}

/** The mode MTP_WASM_SIMD asks for (Node only), or undefined when it is unset or empty. Throws on other values. */
export function wasmSimdModeFromEnv(env?: Record<string, string | undefined>): WasmSimdMode | undefined {
  const vars = env ?? (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env;
  const value = vars?.[WASM_SIMD_ENV];
  return value === undefined || value === '' ? undefined : checkWasmSimdMode(value, WASM_SIMD_ENV);
}

/**
 * The module to load for `mode`, given whether the engine accepts relaxed SIMD. Throws when `relaxed` is asked for
 * and the engine lacks it: a benchmark or test that asks for it explicitly must not measure the other module.
 */
export function chooseWasmSimd(mode: WasmSimdMode, relaxedSupported: boolean): WasmSimdVariant {
  checkWasmSimdMode(mode);
  if (mode === 'plain') return 'plain';
  if (relaxedSupported) return 'relaxed';
  if (mode === 'auto') return 'plain';
  throw new Error(
    `The relaxed-SIMD kernels were asked for (wasmSimd or ${WASM_SIMD_ENV} = 'relaxed'), but this WebAssembly engine ` +
      `rejects relaxed SIMD. ${RELAXED_SIMD_HOWTO}. Otherwise ask for 'auto' (relaxed where available, else plain) or ` +
      `'plain' (allowed: ${WASM_SIMD_MODES.join(', ')}).`,
  );
}
