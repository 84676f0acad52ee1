/**
 * The kernel builds a test file runs on: 'plain' always, and 'relaxed' (src/backend/wasm_simd.ts) where this engine
 * accepts relaxed SIMD. Node 20's V8 (11.3) has it behind --experimental-wasm-relaxed-simd, which vitest does not pass
 * to the processes it runs test files in, so importing this file turns that V8 flag on in the current process: V8 reads
 * its WebAssembly feature flags at each compilation, so modules compiled afterwards may use relaxed SIMD (measured:
 * validation and compilation succeed, and f32x4.relaxed_madd then fuses on x64 with FMA). vitest runs every test file
 * in a process of its own (the default 'forks' pool), so the flag does not reach other files; the library itself never
 * sets V8 flags. Where V8 ships relaxed SIMD (Node ≥ 22) the flag changes nothing.
 */
import * as v8 from 'node:v8';
import { relaxedSimdSupported, type WasmSimdVariant } from '../src/backend/wasm_simd';

/** Whether the engine accepted relaxed SIMD before this file changed anything. */
export const RELAXED_SIMD_NATIVE = relaxedSimdSupported();

if (!RELAXED_SIMD_NATIVE) v8.setFlagsFromString('--experimental-wasm-relaxed-simd');

/** The builds to run kernel tests on: plain, then relaxed when the engine accepts it. */
export const SIMD_VARIANTS: WasmSimdVariant[] = relaxedSimdSupported() ? ['plain', 'relaxed'] : ['plain'];
