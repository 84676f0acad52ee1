/**
 * The transformer on the fast wasm path (fused kernels, in-place KV cache) keeps every invariant of the reference:
 * KV-cache decoding equals a full forward (also past the cache's first capacity, and with batch 2), truncate and
 * gather (in order and out of order) behave as on plain tensors, tree masks with explicit positions work, the cache's
 * layer() view and append() API are unchanged, and decoding and training leak nothing. Reference: the same seeded
 * weights on the `cpu` backend. Tolerance 1e-4 (float32 summation order differs between backends). On both builds of
 * the kernels, plain and relaxed SIMD (test/simd_variants.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { MODEL_DEFAULTS, ModelConfig } from '../src/config';
import { initBackend } from '../src/backend/index';
import { nativeKernels, wasmSimdVariant } from '../src/backend/wasm_native';
import { Transformer, MASKED } from '../src/model/transformer';
import { createModel } from '../src/model/create';
import { maxAbsDiff, randomTokens } from './helpers';
import { SIMD_VARIANTS } from './simd_variants';

const TOL = 1e-4;
/** Head size 12: exercises the kernels' 8- and 4-column tiles. */
const cfg: ModelConfig = { ...MODEL_DEFAULTS, vocabSize: 64, blockSize: 160, nLayer: 2, nHead: 2, nEmbd: 24, seed: 7 };

/** Logits of a full forward of each row of `rows` (one batch) on `backend`. */
async function fullForward(backend: 'cpu' | 'wasm', rows: number[][]): Promise<Float32Array> {
  await initBackend(backend);
  const m = new Transformer(cfg);
  const out = tf.tidy(() => m.forward(tf.tensor2d(rows, [rows.length, rows[0].length], 'int32')).dataSync() as Float32Array);
  m.dispose();
  return out;
}

/** Logits [B, T, V] row t of a flat [B, T, V] array, for batch row b. */
function at(x: Float32Array, T: number, b: number, t0: number, t1: number): Float32Array {
  const V = cfg.vocabSize;
  return x.subarray((b * T + t0) * V, (b * T + t1) * V);
}

for (const variant of SIMD_VARIANTS) describe(`transformer on the fast wasm path (${variant} SIMD)`, () => {
  let model: Transformer;
  beforeAll(async () => {
    await initBackend('wasm', { wasmSimd: variant });
    expect(nativeKernels()).not.toBeNull();
    model = new Transformer(cfg);
  });
  afterAll(async () => {
    model.dispose();
    await initBackend('wasm');
    expect(wasmSimdVariant(), 'the build every test of this block ran on').toBe(variant);
    await initBackend('cpu');
  });

  const step = (rows: number[][], cache: ReturnType<Transformer['newCache']>, opts: { positions?: number[]; mask?: number[] } = {}) =>
    tf.tidy(() => {
      const T = rows[0].length;
      const mask = opts.mask ? tf.tensor2d(opts.mask, [T, cache.length + T]) : undefined;
      return model.forward(tf.tensor2d(rows, [rows.length, T], 'int32'), { cache, positions: opts.positions, mask }).dataSync() as Float32Array;
    });

  it('incremental KV-cache decoding equals a full forward on cpu, past the first cache capacity, batch 2', async () => {
    const n = 150;
    const rows = [randomTokens(n, cfg.vocabSize, 1), randomTokens(n, cfg.vocabSize, 2)];
    const ref = await fullForward('cpu', rows);
    await initBackend('wasm');
    const cache = model.newCache();
    let pos = 0;
    for (const len of [5, 1, 3, 1, 7, 15, 40, 8, 1, 64, 5]) {
      const out = step(rows.map((r) => r.slice(pos, pos + len)), cache);
      for (let b = 0; b < 2; b++) expect(maxAbsDiff(at(out, len, b, 0, len), at(ref, n, b, pos, pos + len))).toBeLessThan(TOL);
      pos += len;
    }
    expect(cache.length).toBe(n);
    cache.dispose();
  });

  it('truncate drops a rejected draft: decoding continues as if it had never been fed', async () => {
    const toks = randomTokens(30, cfg.vocabSize, 3);
    const ref = await fullForward('cpu', [toks]);
    await initBackend('wasm');
    const cache = model.newCache();
    step([toks.slice(0, 20)], cache);
    step([[1, 2, 3, 4, 5, 6]], cache);
    cache.truncate(20);
    expect(cache.length).toBe(20);
    const out = step([toks.slice(20)], cache);
    expect(maxAbsDiff(out, at(ref, 30, 0, 20, 30))).toBeLessThan(TOL);
    cache.dispose();
  });

  it('a tree-shaped forward with explicit positions, then gather of the accepted path, equals the plain sequence', async () => {
    const prefix = randomTokens(12, cfg.vocabSize, 4);
    const tree = [11, 12, 13, 14, 15];
    const parent = [-1, 0, 0, 2, 1];
    const depth = [0, 1, 1, 2, 2];
    const N = tree.length;
    const S = prefix.length + N;
    const mask = new Array(N * S).fill(MASKED);
    for (let i = 0; i < N; i++) {
      for (let j = 0; j < prefix.length; j++) mask[i * S + j] = 0;
      for (let a = i; a >= 0; a = parent[a]) mask[i * S + prefix.length + a] = 0;
    }
    const path = [0, 2, 3];
    const plain = [...prefix, ...path.map((i) => tree[i]), 42];
    const ref = await fullForward('cpu', [plain]);
    await initBackend('wasm');
    const cache = model.newCache();
    step([prefix], cache);
    const treeOut = step([tree], cache, { positions: depth.map((d) => prefix.length + d), mask });
    path.forEach((node, d) => {
      const p = prefix.length + d;
      expect(maxAbsDiff(at(treeOut, N, 0, node, node + 1), at(ref, plain.length, 0, p, p + 1))).toBeLessThan(TOL);
    });
    cache.gather([...prefix.map((_, i) => i), ...path.map((i) => prefix.length + i)]);
    expect(cache.length).toBe(prefix.length + path.length);
    const next = step([[42]], cache);
    expect(maxAbsDiff(next, at(ref, plain.length, 0, plain.length - 1, plain.length))).toBeLessThan(TOL);
    cache.dispose();
  });

  it('layer(), append() and an out-of-order gather give what the plain-tensor cache gives on cpu', async () => {
    const toks = randomTokens(10, cfg.vocabSize, 5);
    const H = cfg.nHead;
    const hs = cfg.nEmbd / H;
    const extra = Array.from({ length: H * 2 * hs }, (_, i) => Math.sin(i));
    const run = async (backend: 'cpu' | 'wasm') => {
      await initBackend(backend);
      const m = new Transformer(cfg);
      const cache = m.newCache();
      tf.tidy(() => m.forward(tf.tensor2d([toks], [1, 10], 'int32'), { cache }));
      const appended = tf.tidy(() => {
        const k = tf.tensor4d(extra, [1, H, 2, hs]);
        const out = [0, 1].map((l) => cache.append(l, k, tf.neg(k)));
        return out.map((o) => ({ shape: o.k.shape, data: [...o.k.dataSync(), ...o.v.dataSync()] }));
      });
      expect(cache.length).toBe(12);
      cache.gather([11, 3, 3, 0, 7]);
      const layers = [0, 1].map((l) => {
        const { k, v } = cache.layer(l);
        expect(k!.shape).toEqual([1, H, 5, hs]);
        return [...k!.dataSync(), ...v!.dataSync()];
      });
      cache.dispose();
      expect(cache.layer(0)).toEqual({ k: null, v: null });
      m.dispose();
      return { appended, layers };
    };
    const cpu = await run('cpu');
    const wasm = await run('wasm');
    wasm.appended.forEach((a, i) => {
      expect(a.shape).toEqual([1, H, 12, hs]);
      expect(maxAbsDiff(a.data, cpu.appended[i].data)).toBeLessThan(TOL);
    });
    wasm.layers.forEach((l, i) => expect(maxAbsDiff(l, cpu.layers[i])).toBeLessThan(TOL));
  });

  it('decoding and training leak no tensors or data buffers', async () => {
    await initBackend('wasm');
    const counts = () => [tf.memory().numTensors, tf.backend().numDataIds()];
    const before = counts();
    const cache = model.newCache();
    const toks = randomTokens(80, cfg.vocabSize, 6);
    step([toks.slice(0, 70)], cache);
    for (let i = 70; i < 80; i++) step([[toks[i]]], cache);
    cache.truncate(75);
    cache.gather([0, 1, 2, 5, 9]);
    cache.layer(0);
    cache.dispose();
    expect(counts()).toEqual(before);

    const mtp = createModel(cfg);
    const inputs = tf.tensor2d([toks.slice(0, 32), toks.slice(40, 72)], [2, 32], 'int32');
    const targets = tf.tensor3d([[toks.slice(1, 33), toks.slice(41, 73)]], [1, 2, 32], 'int32');
    const train = () => {
      const { value, grads } = tf.variableGrads(() => mtp.loss(inputs, targets).loss, mtp.trainableVariables());
      tf.dispose([value, ...Object.values(grads)]);
    };
    train();
    const mid = counts();
    train();
    train();
    expect(counts()).toEqual(mid);
    tf.dispose([inputs, targets]);
    mtp.dispose();
  });
});
