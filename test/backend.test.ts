/**
 * Tests of the backend layer: backend selection and errors, and the wasm fixes (UnsortedSegmentSum, BatchMatMul
 * wrapper) checked against the cpu reference. Tensors belong to the backend active when they were made, so each
 * computation builds its inputs from plain arrays on its backend and returns values read with `await t.data()`.
 */
import { describe, it, expect } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { BACKEND_NAMES, backendInfo, initBackend, type BackendName } from '../src/backend/index';
import { canResolve } from '../src/backend/platform';
import { probeHardwareAdapter } from '../src/backend/node_webgpu';
import { registerWasmFixes } from '../src/backend/wasm_fixes';
import { maxAbsDiff, relativeError } from './helpers';

const TFJS_NODE_INSTALLED = canResolve('@tensorflow/tfjs-node');

/** Deterministic pseudo-random values in [-1, 1). */
function values(n: number, seed: number): number[] {
  let s = seed >>> 0;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  });
}

/** Runs `fn` on `backend` inside tf.tidy and returns its result's values. */
async function runOn(backend: BackendName, fn: () => tf.Tensor): Promise<Float32Array> {
  await initBackend(backend);
  const out = tf.tidy(fn);
  const data = (await out.data()) as Float32Array;
  out.dispose();
  return data;
}

/**
 * Numbers of tensors (engine) and of data buffers held by the active backend. A kernel's own intermediates show only
 * in the second (tf.memory().numDataBuffers is the engine's count and misses them).
 */
function memoryCounts(): [number, number] {
  return [tf.memory().numTensors, tf.backend().numDataIds()];
}

describe('initBackend', () => {
  it('initializes cpu', async () => {
    const info = await initBackend('cpu');
    expect(info).toEqual({ name: 'cpu', platform: 'node', detail: 'pure JS' });
    expect(tf.getBackend()).toBe('cpu');
    expect(backendInfo()).toEqual(info);
  });

  it('initializes wasm with SIMD, and a second call is a lookup', async () => {
    const info = await initBackend('wasm');
    expect(info.name).toBe('wasm');
    expect(info.platform).toBe('node');
    expect(info.detail).toMatch(/^wasm (SIMD|no SIMD), \d+ threads?, kernels: (plain|relaxed) SIMD$/);
    expect(tf.getBackend()).toBe('wasm');
    const t0 = performance.now();
    expect(await initBackend('wasm')).toBe(info);
    expect(performance.now() - t0).toBeLessThan(50);
    expect(await runOn('wasm', () => tf.add(tf.tensor1d([1, 2]), 1))).toEqual(new Float32Array([2, 3]));
  });

  it("resolves 'auto' as documented, quickly", async () => {
    const expected = TFJS_NODE_INSTALLED ? 'tensorflow' : (await probeHardwareAdapter()) !== null ? 'webgpu' : 'wasm';
    const t0 = performance.now();
    const info = await initBackend('auto');
    expect(performance.now() - t0).toBeLessThan(5000);
    expect(info.name).toBe(expected);
    expect(tf.getBackend()).toBe(expected);
    expect(await initBackend()).toBe(info);
  });

  it('rejects an unknown name, listing the allowed ones', async () => {
    await expect(initBackend('gpu' as BackendName)).rejects.toThrow(
      "Unknown backend 'gpu'. Allowed: auto, cpu, wasm, webgl, webgpu, tensorflow.",
    );
    expect([...BACKEND_NAMES]).toEqual(['auto', 'cpu', 'wasm', 'webgl', 'webgpu', 'tensorflow']);
  });

  it("rejects 'webgl' in Node with the reason and alternatives, leaving the active backend", async () => {
    await initBackend('cpu');
    const err = await initBackend('webgl').catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/needs a browser/);
    expect((err as Error).message).toMatch(/slice\/split/);
    expect((err as Error).message).toMatch(/'wasm' or 'webgpu'/);
    expect((err as Error).message).toMatch(/Chromium/);
    expect(tf.getBackend()).toBe('cpu');
  });

  it.skipIf(TFJS_NODE_INSTALLED)("rejects 'tensorflow' when @tensorflow/tfjs-node is missing", async () => {
    const err = await initBackend('tensorflow').catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toContain('npm i @tensorflow/tfjs-node@4.22.0');
    expect((err as Error).message).toMatch(/libtensorflow/);
  });
});

describe('wasm UnsortedSegmentSum', () => {
  const cases: Array<{ name: string; shape: number[]; ids: number[]; numSegments: number }> = [
    { name: 'rank 1', shape: [6], ids: [0, 2, 2, 1, 0, 2], numSegments: 3 },
    { name: 'rank 2, repeated and dropped ids', shape: [7, 4], ids: [3, 1, 3, -1, 0, 5, 3], numSegments: 5 },
    { name: 'rank 3', shape: [5, 2, 3], ids: [1, 1, 0, 1, 2], numSegments: 4 },
  ];
  for (const c of cases) {
    it(`matches cpu: ${c.name}`, async () => {
      const x = values(c.shape.reduce((p, d) => p * d, 1), 7);
      const op = () => tf.unsortedSegmentSum(tf.tensor(x, c.shape), tf.tensor1d(c.ids, 'int32'), c.numSegments);
      const cpu = await runOn('cpu', op);
      const wasm = await runOn('wasm', op);
      expect(maxAbsDiff(wasm, cpu)).toBeLessThanOrEqual(1e-6);
      expect(wasm.length).toBe(c.numSegments * (x.length / c.shape[0]));
    });
  }

  it('makes the gradient of an embedding lookup (tf.gather) match cpu', async () => {
    const vocab = 9;
    const dim = 6;
    const table = values(vocab * dim, 11);
    const ids = [4, 1, 4, 4, 8, 0, 1, 7];
    const weights = values(ids.length * dim, 13);
    const grad = () => {
      const params = tf.tensor2d(table, [vocab, dim]);
      const w = tf.tensor2d(weights, [ids.length, dim]);
      const loss = (p: tf.Tensor) => tf.sum(tf.mul(tf.gather(p, tf.tensor1d(ids, 'int32')), w));
      return tf.grad(loss)(params);
    };
    const cpu = await runOn('cpu', grad);
    const wasm = await runOn('wasm', grad);
    expect(maxAbsDiff(wasm, cpu)).toBeLessThanOrEqual(1e-6);
    const row4 = Array.from(wasm.slice(4 * dim, 5 * dim));
    const positionsOfId4 = [0, 2, 3];
    row4.forEach((v, j) => expect(v).toBeCloseTo(positionsOfId4.reduce((sum, r) => sum + weights[r * dim + j], 0), 6));
  });

  it('leaks no tensors or buffers', async () => {
    await initBackend('wasm');
    const x = tf.tensor2d(values(12, 3), [4, 3]);
    const ids = tf.tensor1d([2, 0, 2, 9], 'int32');
    const before = memoryCounts();
    tf.unsortedSegmentSum(x, ids, 3).dispose();
    expect(memoryCounts()).toEqual(before);
    tf.dispose([x, ids]);
  });
});

describe('wasm BatchMatMul wrapper', () => {
  const shapes: Array<{ name: string; a: number[]; b: number[] }> = [
    { name: '2-D', a: [5, 7], b: [7, 3] },
    { name: 'batched', a: [4, 5, 7], b: [4, 7, 3] },
    { name: 'batched × unbatched', a: [2, 3, 5, 7], b: [7, 3] },
    { name: 'batched × batch of one', a: [4, 5, 7], b: [1, 7, 3] },
    { name: 'batch of one × batched', a: [1, 5, 7], b: [4, 7, 3] },
  ];
  /** Operand shape that `transpose` turns into `shape` (its last two dims swapped). */
  const stored = (shape: number[], transpose: boolean) =>
    transpose ? [...shape.slice(0, -2), shape[shape.length - 1], shape[shape.length - 2]] : shape;

  for (const s of shapes) {
    for (const [ta, tb] of [[false, false], [true, false], [false, true], [true, true]] as const) {
      it(`matches cpu: ${s.name}, transposeA=${ta}, transposeB=${tb}`, async () => {
        const aShape = stored(s.a, ta);
        const bShape = stored(s.b, tb);
        const aVals = values(aShape.reduce((p, d) => p * d, 1), 1);
        const bVals = values(bShape.reduce((p, d) => p * d, 1), 2);
        const op = () => tf.matMul(tf.tensor(aVals, aShape), tf.tensor(bVals, bShape), ta, tb);
        const cpu = await runOn('cpu', op);
        const wasm = await runOn('wasm', op);
        expect(relativeError(wasm, cpu)).toBeLessThanOrEqual(1e-4);
        const outShape = tf.tidy(() => tf.matMul(tf.zeros(aShape), tf.zeros(bShape), ta, tb).shape);
        await initBackend('cpu');
        expect(outShape).toEqual(tf.tidy(() => tf.matMul(tf.zeros(aShape), tf.zeros(bShape), ta, tb).shape));
      });
    }
  }

  it('matches cpu for gradients through a batched matMul (backprop uses the transpose flags)', async () => {
    const a = values(2 * 5 * 7, 5);
    const b = values(2 * 7 * 3, 6);
    const grads = () => {
      const f = (x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.square(tf.matMul(x, y)));
      const [ga, gb] = tf.grads(f)([tf.tensor3d(a, [2, 5, 7]), tf.tensor3d(b, [2, 7, 3])]);
      return tf.concat([ga.flatten(), gb.flatten()]);
    };
    const cpu = await runOn('cpu', grads);
    const wasm = await runOn('wasm', grads);
    expect(relativeError(wasm, cpu)).toBeLessThanOrEqual(1e-4);
  });

  it('leaks no tensors or buffers, with transposes and a batch fold', async () => {
    await initBackend('wasm');
    const a = tf.tensor3d(values(2 * 7 * 5, 8), [2, 7, 5]);
    const a2 = tf.tensor2d(values(7 * 5, 10), [7, 5]);
    const b = tf.tensor2d(values(3 * 7, 9), [3, 7]);
    const bT = tf.transpose(b);
    const before = memoryCounts();
    tf.matMul(a, b, true, true).dispose();
    tf.matMul(a, bT, true, false).dispose();
    tf.matMul(a2, b, true, true).dispose();
    expect(memoryCounts()).toEqual(before);
    tf.dispose([a, a2, b, bT]);
  });

  it('registers the fixes once', async () => {
    await initBackend('wasm');
    const matMul = tf.getKernel('BatchMatMul', 'wasm')?.kernelFunc;
    const segmentSum = tf.getKernel('UnsortedSegmentSum', 'wasm')?.kernelFunc;
    registerWasmFixes();
    registerWasmFixes();
    expect(tf.getKernel('BatchMatMul', 'wasm')?.kernelFunc).toBe(matMul);
    expect(tf.getKernel('UnsortedSegmentSum', 'wasm')?.kernelFunc).toBe(segmentSum);
  });
});

describe('webgpu in Node (Dawn)', () => {
  it('matches cpu on a matMul and an embedding gradient', async (ctx) => {
    const info = await initBackend('webgpu').catch((e: Error) => e);
    if (info instanceof Error) {
      if (/No WebGPU adapter/.test(info.message)) ctx.skip();
      throw info;
    }
    expect(info.name).toBe('webgpu');
    expect(info.detail).toMatch(/^Dawn /);
    const a = values(6 * 8, 21);
    const b = values(8 * 4, 22);
    const table = values(5 * 4, 23);
    const op = () => {
      const y = tf.matMul(tf.tensor2d(a, [6, 8]), tf.tensor2d(b, [8, 4]), false, false);
      const lookup = (p: tf.Tensor) => tf.sum(tf.square(tf.gather(p, tf.tensor1d([3, 0, 3], 'int32'))));
      const g = tf.grad(lookup)(tf.tensor2d(table, [5, 4]));
      return tf.concat([y.flatten(), g.flatten()]);
    };
    const webgpu = await runOn('webgpu', op);
    const cpu = await runOn('cpu', op);
    expect(relativeError(webgpu, cpu)).toBeLessThanOrEqual(1e-4);
  }, 20_000);
});
