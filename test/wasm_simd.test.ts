/**
 * The choice between the plain and the relaxed-SIMD kernel builds (src/backend/wasm_simd.ts):
 * - the rule: auto → relaxed where the engine accepts it, else plain; 'relaxed' where it does not is an error that
 *   says how to enable it and what is allowed; unknown modes and MTP_WASM_SIMD values are errors;
 * - in child processes: where the engine rejects relaxed SIMD (node --no-experimental-wasm-relaxed-simd) auto falls
 *   back to plain and 'relaxed' fails before the active backend changes; with the flag, auto binds relaxed, the
 *   environment variable and initBackend's option choose, and the backend's description names the build;
 * - the relaxed build gives the same bits in V8's baseline compiler (Liftoff) and its optimizing one (TurboFan), so a
 *   kernel does not change its results when V8 tiers it up in the middle of a decode;
 * - on each build: a model's logits match the cpu reference within 1e-4 (relative to the largest value), and greedy
 *   speculative decoding (parallel heads, chain and dense tree; prompt lookup) gives the tokens of greedy AR.
 * Relaxed SIMD is turned on in this process by test/simd_variants.ts, so `npm test` runs both builds on Node 20.
 */
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/index';
import { wasmSimdVariant } from '../src/backend/wasm_native';
import { chooseWasmSimd, wasmSimdModeFromEnv, WASM_SIMD_ENV } from '../src/backend/wasm_simd';
import { MTP_DEFAULTS, resolveConfig } from '../src/config';
import { createModel, MtpModel } from '../src/model/create';
import { Transformer } from '../src/model/transformer';
import { generate } from '../src/decode/ar';
import { decode } from '../src/decode/engine';
import { lookupGenerate } from '../src/decode/decoders';
import { denseTree } from '../src/decode/tree';
import { Trainer } from '../src/train/trainer';
import { randomTokens, relativeError } from './helpers';
import { RELAXED_SIMD_NATIVE, SIMD_VARIANTS } from './simd_variants';

const ROOT = path.join(__dirname, '..');
const TOL = 1e-4;
/**
 * Whether this node's V8 still has the flag (Node 20 has it; a V8 that ships relaxed SIMD may drop it one day, and
 * then no flag makes the engine reject relaxed SIMD: the fallback is then tested through chooseWasmSimd alone).
 */
const V8_FLAG = execFileSync(process.execPath, ['--v8-options'], { encoding: 'utf8' }).includes('--experimental-wasm-relaxed-simd');
const WITH_RELAXED = V8_FLAG ? ['--experimental-wasm-relaxed-simd'] : [];

describe('choosing the kernel build', () => {
  it('auto takes relaxed where the engine accepts it, else plain; plain is always plain', () => {
    expect(chooseWasmSimd('auto', true)).toBe('relaxed');
    expect(chooseWasmSimd('auto', false)).toBe('plain');
    expect(chooseWasmSimd('plain', true)).toBe('plain');
    expect(chooseWasmSimd('plain', false)).toBe('plain');
    expect(chooseWasmSimd('relaxed', true)).toBe('relaxed');
  });

  it("'relaxed' where the engine lacks it, and unknown modes, are errors that say what to do and what is allowed", () => {
    expect(() => chooseWasmSimd('relaxed', false)).toThrow(/rejects relaxed SIMD\. In Node 20, start node with --experimental-wasm-relaxed-simd .*NODE_OPTIONS.*allowed: auto, relaxed, plain/);
    expect(() => chooseWasmSimd('fast' as never, true)).toThrow("wasmSimd must be one of auto, relaxed, plain, got 'fast'.");
    expect(wasmSimdModeFromEnv({})).toBeUndefined();
    expect(wasmSimdModeFromEnv({ [WASM_SIMD_ENV]: '' })).toBeUndefined();
    expect(wasmSimdModeFromEnv({ [WASM_SIMD_ENV]: 'plain' })).toBe('plain');
    expect(() => wasmSimdModeFromEnv({ [WASM_SIMD_ENV]: 'Relaxed' })).toThrow("MTP_WASM_SIMD must be one of auto, relaxed, plain, got 'Relaxed'.");
  });

  it('both builds run in this test process (relaxed SIMD enabled here where Node needs a flag)', () => {
    expect(SIMD_VARIANTS, `relaxed SIMD native to this engine: ${RELAXED_SIMD_NATIVE}`).toEqual(['plain', 'relaxed']);
  });
});

/** Runs `code` (an ES module body with initBackend, wasmSimdVariant and tf in scope) in `node <flags>`; its stdout as JSON. */
function child(flags: string[], code: string, env: Record<string, string> = {}): unknown {
  const prelude =
    "const { initBackend } = (await import('./src/backend/index.ts')).default;" +
    "const { wasmSimdVariant } = (await import('./src/backend/wasm_native.ts')).default;" +
    "const tf = await import('@tensorflow/tfjs');" +
    'const fail = async (f) => { try { await f(); return null; } catch (e) { return e.message; } };';
  const out = execFileSync(process.execPath, [...flags, '--import', 'tsx', '--input-type=module', '-e', prelude + code], {
    cwd: ROOT,
    env: { ...process.env, [WASM_SIMD_ENV]: '', ...env },
    encoding: 'utf8',
  });
  return JSON.parse(out.trim().split('\n').pop() ?? 'null');
}

describe('the build chosen at load time, in a fresh process', () => {
  it.skipIf(!V8_FLAG)('where the engine rejects relaxed SIMD: auto binds plain, relaxed fails before the backend changes, with how to enable it', () => {
    const r = child(
      ['--no-experimental-wasm-relaxed-simd'],
      "const detail = (await initBackend('wasm')).detail; const auto = wasmSimdVariant();" +
        "await initBackend('cpu');" +
        "const asked = await fail(() => initBackend('wasm', { wasmSimd: 'relaxed' }));" +
        "console.log(JSON.stringify({ detail, auto, asked, after: tf.getBackend() }));",
    ) as { detail: string; auto: string; asked: string; after: string };
    expect(r.auto).toBe('plain');
    expect(r.detail).toBe('wasm SIMD, 1 thread, kernels: plain SIMD');
    expect(r.asked).toMatch(/rejects relaxed SIMD\. In Node 20, start node with --experimental-wasm-relaxed-simd/);
    expect(r.after, 'the active backend is left as it was').toBe('cpu');
    const env = child(['--no-experimental-wasm-relaxed-simd'], "console.log(JSON.stringify(await fail(() => initBackend('wasm'))));", { [WASM_SIMD_ENV]: 'relaxed' });
    expect(env).toMatch(/MTP_WASM_SIMD = 'relaxed'.*rejects relaxed SIMD/);
  });

  it('with --experimental-wasm-relaxed-simd: auto binds relaxed, MTP_WASM_SIMD and the option choose, the description follows', () => {
    const flags = WITH_RELAXED;
    const auto = child(flags, "const { detail } = await initBackend('wasm'); console.log(JSON.stringify([detail, wasmSimdVariant()]));");
    expect(auto).toEqual(['wasm SIMD, 1 thread, kernels: relaxed SIMD', 'relaxed']);
    const switched = child(
      flags,
      "const a = (await initBackend('wasm')).detail; const b = (await initBackend('wasm', { wasmSimd: 'auto' })).detail;" +
        "await initBackend('cpu'); const c = (await initBackend('wasm')).detail; const d = (await initBackend('wasm', { wasmSimd: 'plain' })).detail;" +
        'console.log(JSON.stringify([a, b, c, d, wasmSimdVariant()]));',
      { [WASM_SIMD_ENV]: 'plain' },
    );
    expect(switched).toEqual([
      'wasm SIMD, 1 thread, kernels: plain SIMD', // the environment variable
      'wasm SIMD, 1 thread, kernels: relaxed SIMD', // the option rebinds
      'wasm SIMD, 1 thread, kernels: relaxed SIMD', // back from cpu: the build stays
      'wasm SIMD, 1 thread, kernels: plain SIMD',
      'plain',
    ]);
  });

  it('the relaxed build gives the same bits in V8 Liftoff and TurboFan (a tier-up mid-decode changes nothing)', () => {
    // gemm on its own memory over 1, 2, 5 and 40 rows (the decoding, small-block and packed paths), hashed
    const code = (file: string) =>
      "const fs = await import('node:fs'); const crypto = await import('node:crypto');" +
      'const memory = new WebAssembly.Memory({ initial: 256 });' +
      `const e = new WebAssembly.Instance(new WebAssembly.Module(fs.readFileSync('src/backend/native/${file}')), { env: { memory } }).exports;` +
      'e.__stack_pointer.value = 15 << 20; const f = new Float32Array(memory.buffer); let s = 7;' +
      'for (let i = 0; i < (3 << 20) / 4; i++) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; f[(1 << 18) + i] = s / 2 ** 31 - 1; }' +
      "const h = crypto.createHash('sha256');" +
      'for (const M of [1, 2, 5, 40]) { for (let r = 0; r < 3; r++) e.gemm(1 << 20, 2 << 20, 4 << 20, M, 64, 300, 0, 0, 1 << 20, 0, 8 << 20); h.update(new Uint8Array(memory.buffer, 4 << 20, M * 64 * 4)); }' +
      "console.log(JSON.stringify(h.digest('hex')));";
    const run = (flags: string[], file: string) =>
      execFileSync(process.execPath, [...flags, '--input-type=module', '-e', code(file)], { cwd: ROOT, encoding: 'utf8' }).trim();
    const relaxed = WITH_RELAXED;
    const liftoff = run([...relaxed, '--liftoff', '--no-wasm-tier-up'], 'kernels_relaxed.wasm');
    expect(run([...relaxed, '--no-liftoff'], 'kernels_relaxed.wasm')).toBe(liftoff);
    expect(run(['--liftoff', '--no-wasm-tier-up'], 'kernels.wasm')).toBe(run(['--no-liftoff'], 'kernels.wasm'));
  });
});

const nano = resolveConfig('nano').model;
const nanoTrain = resolveConfig('nano').train;
const TEXT = new TextEncoder().encode('abcdefgh'.repeat(100) + 'the cat sat on the mat. '.repeat(40));

/** A few AdamW steps on periodic text, so that drafts are often right and verification accepts long paths. */
async function quickTrain(m: MtpModel, steps: number): Promise<void> {
  const trainer = new Trainer(m, { ...nanoTrain, lr: 1e-2, batchSize: 8, steps, warmupSteps: 5, seed: 3 }, { train: TEXT, val: TEXT });
  for (let i = 0; i < steps; i++) await trainer.trainStep();
  trainer.dispose();
}

describe('on each build: logits within tolerance, speculative decoding lossless', () => {
  afterAll(async () => {
    await initBackend('cpu');
  });

  it(`a model's logits on ${SIMD_VARIANTS.join(' and ')} match cpu within ${TOL}`, async () => {
    const tokens = randomTokens(nano.blockSize, nano.vocabSize, 5);
    const logits = async (backend: 'cpu' | 'wasm') => {
      await initBackend(backend);
      const m = new Transformer({ ...nano, nLayer: 2, seed: 4 });
      const out = tf.tidy(() => m.forward(tf.tensor2d([tokens], [1, tokens.length], 'int32')).dataSync() as Float32Array);
      m.dispose();
      return out;
    };
    const ref = await logits('cpu');
    const byVariant: Float32Array[] = [];
    for (const variant of SIMD_VARIANTS) {
      await initBackend('wasm', { wasmSimd: variant });
      const out = await logits('wasm');
      expect(wasmSimdVariant()).toBe(variant);
      expect(relativeError(out, ref), variant).toBeLessThan(TOL);
      byVariant.push(out);
    }
    expect(relativeError(byVariant[1], byVariant[0]), 'relaxed against plain').toBeLessThan(TOL);
  });

  for (const variant of SIMD_VARIANTS) {
    it(`${variant}: parallel heads (chain, denseTree(3)) and prompt lookup decode exactly the tokens of greedy AR`, async () => {
      await initBackend('wasm', { wasmSimd: variant });
      const m = createModel({ ...nano, nLayer: 3, seed: 2, mtp: { ...MTP_DEFAULTS.parallel, k: 4 } });
      await quickTrain(m, 40);
      let tokens = 0;
      let forwards = 0;
      for (const [len, seed] of [[1, 1], [9, 2], [40, 3]]) {
        const prompt = randomTokens(len, 256, seed);
        const ar = await generate(m, prompt, { maxNewTokens: 70 });
        for (const tree of [undefined, denseTree(3)]) {
          const out = await decode(m, m.drafter(tree ? { tree } : { k: 4 }), prompt, { maxNewTokens: 70 });
          expect(out.tokens, `prompt ${len}, ${tree ? 'dense tree' : 'chain'}`).toEqual(ar.tokens);
          tokens += 70;
          forwards += out.stats.forwards;
        }
        expect((await lookupGenerate(m, prompt, { maxNewTokens: 70, k: 5, maxNgram: 3 })).tokens, `lookup, prompt ${len}`).toEqual(ar.tokens);
      }
      expect(tokens / forwards, 'τ: drafts were accepted, so verification rows were compared with AR rows').toBeGreaterThan(1.5);
      expect(wasmSimdVariant()).toBe(variant);
      m.dispose();
    });
  }
});
