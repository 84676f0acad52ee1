/**
 * The package's wasm kernels (src/backend/wasm_*.ts on native/kernels.wasm) against the pure-JS `cpu` backend running
 * the plain tfjs formulas: values and gradients for several shapes and masks, within 1e-4 relative to the largest
 * reference value (float32 sums run in another order). Plus: no tensor or data buffer leaks, the fast paths switch
 * off with the MTP_WASM_FAST flag, and the committed binaries match their base64 modules and own no memory.
 * The value and same-bits tests run on both builds of the kernels, plain and relaxed SIMD (test/simd_variants.ts turns
 * relaxed SIMD on in this process where Node needs a flag), each against the same references and tolerance.
 * Inputs are built from plain arrays on each backend (tensors belong to the backend that made them).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/index';
import { FAST_FLAG, nativeKernels, wasmSimdVariant } from '../src/backend/wasm_native';
import { fusedAttention } from '../src/backend/wasm_attention';
import { fusedLayerNorm } from '../src/backend/wasm_layer_norm';
import { fusedBiasGelu } from '../src/backend/wasm_bias_gelu';
import { fusedLinear } from '../src/backend/wasm_linear';
import { DECODE_BLOCK, DECODE_BLOCK_FLAG } from '../src/backend/wasm_decode_block';
import { KERNELS_WASM_BASE64 } from '../src/backend/native/kernels_wasm';
import { KERNELS_RELAXED_WASM_BASE64 } from '../src/backend/native/kernels_relaxed_wasm';
import { MASKED, Transformer } from '../src/model/transformer';
import type { KVCache } from '../src/model/kv_cache';
import { resolveConfig } from '../src/config';
import { relativeError } from './helpers';
import { SIMD_VARIANTS } from './simd_variants';

const TOL = 1e-4;

/** Deterministic pseudo-random values in [-scale, scale). */
function values(n: number, seed: number, scale = 1): number[] {
  let s = seed >>> 0;
  return Array.from({ length: n }, () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return scale * (s / 2 ** 31 - 1);
  });
}

/** Runs fn on a backend inside tf.tidy; returns every output's values. */
async function on(backend: 'cpu' | 'wasm', fn: () => tf.Tensor[]): Promise<Float32Array[]> {
  await initBackend(backend);
  const outs = tf.tidy(fn);
  const data = await Promise.all(outs.map((t) => t.data() as Promise<Float32Array>));
  tf.dispose(outs);
  return data;
}

async function expectAgree(fn: () => tf.Tensor[], label: string): Promise<void> {
  const cpu = await on('cpu', fn);
  const wasm = await on('wasm', fn);
  cpu.forEach((c, i) => expect(relativeError(wasm[i], c), `${label}, output ${i}`).toBeLessThan(TOL));
}

/** The plain formula of layers.ts: qkv [B·T, 3C] → [B·T, C]. */
function referenceAttention(qkv: tf.Tensor2D, B: number, T: number, H: number, mask: tf.Tensor2D): tf.Tensor2D {
  const C = qkv.shape[1] / 3;
  const hs = C / H;
  const [q, k, v] = tf.split(qkv, 3, 1).map((t) => tf.transpose(tf.reshape(t, [B, T, H, hs]), [0, 2, 1, 3]) as tf.Tensor4D);
  const att = tf.softmax(tf.add(tf.mul(tf.matMul(q, k, false, true), 1 / Math.sqrt(hs)), mask));
  return tf.reshape(tf.transpose(tf.matMul(att, v), [0, 2, 1, 3]), [B * T, C]);
}

type MaskKind = 'causal' | 'tree' | 'ragged';

/** Additive masks [T, T]: causal; a tree (each row sees its ancestors); causal with some extra holes. */
function maskValues(T: number, kind: MaskKind): number[] {
  const parent = (i: number) => (i === 0 ? -1 : Math.floor((i - 1) / 2));
  const m: number[] = [];
  for (let i = 0; i < T; i++) {
    const seen = new Set<number>();
    for (let a = i; a >= 0; a = parent(a)) seen.add(a);
    for (let j = 0; j < T; j++) {
      const allowed = kind === 'causal' ? j <= i : kind === 'tree' ? seen.has(j) : j <= i && (j % 3 !== 1 || j === i);
      m.push(allowed ? 0 : MASKED);
    }
  }
  return m;
}

for (const variant of SIMD_VARIANTS) describe(`wasm kernels (${variant} SIMD) agree with cpu`, () => {
  beforeAll(async () => {
    await initBackend('wasm', { wasmSimd: variant });
    expect(nativeKernels(), 'kernels bound by initBackend').not.toBeNull();
  });
  afterAll(async () => {
    await initBackend('wasm');
    expect(wasmSimdVariant(), 'the build every test of this block ran on').toBe(variant);
    await initBackend('cpu');
  });

  const attentionCases: Array<[number, number, number, number, MaskKind]> = [
    [2, 13, 2, 8, 'causal'],
    [1, 5, 1, 4, 'tree'],
    [3, 32, 4, 12, 'ragged'],
    [2, 64, 2, 32, 'causal'],
    [1, 9, 3, 16, 'tree'],
  ];
  for (const [B, T, H, hs, kind] of attentionCases) {
    it(`attention B=${B} T=${T} H=${H} hs=${hs}, ${kind} mask: values and gradient`, async () => {
      const C = H * hs;
      const x = values(B * T * 3 * C, B * 1000 + T, 2);
      const dy = values(B * T * C, 77);
      const mask = maskValues(T, kind);
      await expectAgree(() => {
        const qkv = tf.tensor2d(x, [B * T, 3 * C]);
        const m = tf.tensor2d(mask, [T, T]);
        const w = tf.tensor2d(dy, [B * T, C]);
        const f = (a: tf.Tensor2D) => (tf.getBackend() === 'wasm' ? fusedAttention(a, B, T, H, m) : referenceAttention(a, B, T, H, m));
        const grad = tf.grad((a: tf.Tensor) => tf.sum(tf.mul(f(a as tf.Tensor2D), w)))(qkv);
        return [f(qkv), grad];
      }, `attention ${kind}`);
    });
  }

  for (const [shape, eps] of [[[3, 5, 8], 1e-5], [[7, 6], 1e-3], [[4, 130], 1e-5]] as Array<[number[], number]>) {
    it(`LayerNorm [${shape}] eps ${eps}: values and gradients of x, g, b`, async () => {
      const C = shape[shape.length - 1];
      const n = shape.reduce((a, b) => a * b, 1);
      const xs = values(n, 3, 3);
      const gs = values(C, 4).map((v) => 1 + v);
      const bs = values(C, 5);
      const dy = values(n, 6);
      await expectAgree(() => {
        const [x, g, b, w] = [tf.tensor(xs, shape), tf.tensor1d(gs), tf.tensor1d(bs), tf.tensor(dy, shape)];
        const f = (xi: tf.Tensor, gi: tf.Tensor, bi: tf.Tensor) => {
          if (tf.getBackend() === 'wasm') return fusedLayerNorm(xi, gi, bi, eps);
          const mean = tf.mean(xi, -1, true);
          const xc = tf.sub(xi, mean);
          return tf.add(tf.mul(tf.mul(xc, tf.rsqrt(tf.add(tf.mean(tf.square(xc), -1, true), eps))), gi), bi);
        };
        const grads = tf.grads((xi: tf.Tensor, gi: tf.Tensor, bi: tf.Tensor) => tf.sum(tf.mul(f(xi, gi, bi), w)))([x, g, b]);
        return [f(x, g, b), ...grads];
      }, 'LayerNorm');
    });
  }

  for (const [N, F] of [[5, 12], [64, 512], [3, 7]]) {
    it(`bias + GELU [${N}, ${F}]: values and gradients of h and the bias`, async () => {
      const hs = values(N * F, 8, 6);
      const bs = values(F, 9);
      const dy = values(N * F, 10);
      await expectAgree(() => {
        const [h, b, w] = [tf.tensor2d(hs, [N, F]), tf.tensor1d(bs), tf.tensor2d(dy, [N, F])];
        const f = (hi: tf.Tensor, bi: tf.Tensor) => {
          if (tf.getBackend() === 'wasm') return fusedBiasGelu(hi as tf.Tensor2D, bi as tf.Tensor1D);
          const z = tf.add(hi, bi);
          return tf.mul(z, tf.sigmoid(tf.mul(z, 1.702)));
        };
        return [f(h, b), ...tf.grads((hi: tf.Tensor, bi: tf.Tensor) => tf.sum(tf.mul(f(hi, bi), w)))([h, b])];
      }, 'bias + GELU');
    });
  }

  for (const [M, N, K] of [[13, 16, 7], [128, 64, 300], [7, 24, 600], [5, 12, 9]]) {
    it(`matMul aᵀ·b, M=${M} N=${N} K=${K} (native GEMM when N % 8 = 0)`, async () => {
      const as = values(K * M, 11);
      const bs = values(K * N, 12);
      await expectAgree(() => [tf.matMul(tf.tensor2d(as, [K, M]), tf.tensor2d(bs, [K, N]), true, false)], 'matMul');
    });
  }

  const linearCases: Array<[number, number, number, boolean, boolean]> = [
    [13, 24, 16, true, true],
    [3, 7, 8, false, true],
    [40, 300, 24, true, false],
    [1, 32, 8, false, false],
    [1, 40, 32, true, true],
    [2, 300, 48, true, true],
  ];
  for (const [M, K, N, withBias, withResidual] of linearCases) {
    it(`linear x·W${withBias ? ' + b' : ''}${withResidual ? ' + r' : ''}, M=${M} K=${K} N=${N}: values and gradients`, async () => {
      const xs = values(M * K, 15);
      const ws = values(K * N, 16);
      const bs = values(N, 17);
      const rs = values(M * N, 18);
      const dy = values(M * N, 19);
      await expectAgree(() => {
        const [x, w, b, r, g] = [tf.tensor2d(xs, [M, K]), tf.tensor2d(ws, [K, N]), tf.tensor1d(bs), tf.tensor2d(rs, [M, N]), tf.tensor2d(dy, [M, N])];
        const inputs = [x, w, ...(withBias ? [b] : []), ...(withResidual ? [r] : [])];
        const f = (...t: tf.Tensor[]) => {
          const [xi, wi] = t as tf.Tensor2D[];
          const bi = withBias ? (t[2] as tf.Tensor1D) : undefined;
          const ri = withResidual ? (t[withBias ? 3 : 2] as tf.Tensor2D) : undefined;
          if (tf.getBackend() === 'wasm') return fusedLinear(xi, wi, bi, ri);
          let y: tf.Tensor = tf.matMul(xi, wi);
          if (bi) y = tf.add(y, bi);
          return ri ? tf.add(ri, y) : y;
        };
        return [f(...inputs), ...tf.grads((...t: tf.Tensor[]) => tf.sum(tf.mul(f(...t), g)))(inputs)];
      }, 'linear');
    });
  }

  it('gather along axis 0 (embedding lookup) and its errors', async () => {
    const table = values(9 * 5, 13);
    const ids = [4, 1, 8, 4, 0, 2];
    await expectAgree(() => [tf.gather(tf.tensor2d(table, [9, 5]), tf.tensor2d(ids, [2, 3], 'int32'))], 'gather');
    await initBackend('wasm');
    expect(() => tf.tidy(() => tf.gather(tf.tensor2d(table, [9, 5]), tf.tensor1d([1, 9], 'int32')))).toThrow(/index value 9 is not in \[0, 8\]/);
  });

  it('sum over leading axes (bias gradients), with and without keepDims, and over other axes', async () => {
    const xs = values(4 * 6 * 10, 14);
    await expectAgree(() => {
      const x = tf.tensor3d(xs, [4, 6, 10]);
      return [tf.sum(x, 0), tf.sum(x, [0, 1]), tf.sum(x, [1, 0], true), tf.sum(x, 2), tf.sum(x, [0, 2]), tf.sum(x)];
    }, 'sum');
  });
});

/** The logits of `tokens` fed `chunk` at a time through decoding forwards over one cache, concatenated. */
async function fedLogits(model: Transformer, cache: KVCache, tokens: number[], chunk: number): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < tokens.length; i += chunk) {
    const l = tf.tidy(() => model.verifyForward(tokens.slice(i, i + chunk), cache).logits);
    out.push(...((await l.data()) as Float32Array));
    l.dispose();
  }
  return out;
}

for (const variant of SIMD_VARIANTS) describe(`wasm kernels (${variant} SIMD): a row does not depend on the rows computed with it`, () => {
  // Greedy speculative decoding is token-identical to plain decoding only if a token's logits are the same whether the
  // token is fed alone (AR), with a few drafts, or in a prefill: the same bits, not 1e-7 apart (a near-tie could flip).
  beforeAll(async () => {
    await initBackend('wasm', { wasmSimd: variant });
  });
  afterAll(() => {
    expect(wasmSimdVariant(), 'the build every test of this block ran on').toBe(variant);
  });

  /** Rows [from, to) of x·W (+ b, + r) computed on their own. */
  async function rows(xs: number[], ws: number[], bs: number[], rs: number[], K: number, N: number, from: number, to: number): Promise<Float32Array> {
    const M = to - from;
    const y = tf.tidy(() =>
      fusedLinear(tf.tensor2d(xs.slice(from * K, to * K), [M, K]), tf.tensor2d(ws, [K, N]), tf.tensor1d(bs), tf.tensor2d(rs.slice(from * N, to * N), [M, N])),
    );
    const data = (await y.data()) as Float32Array;
    y.dispose();
    return data;
  }

  for (const K of [96, 300, 600]) {
    it(`linear x·W + b + r, K=${K}: rows alone, in groups of 3 and 6, and all 40 at once give the same bits`, async () => {
      const M = 40;
      const N = 48;
      const [xs, ws, bs, rs] = [values(M * K, 21), values(K * N, 22), values(N, 23), values(M * N, 24)];
      const all = await rows(xs, ws, bs, rs, K, N, 0, M);
      for (const group of [1, 3, 6, 16]) {
        for (let i = 0; i + group <= M; i += group) {
          const part = await rows(xs, ws, bs, rs, K, N, i, i + group);
          expect(Array.from(part), `rows ${i}..${i + group - 1} computed ${group} at a time`).toEqual(Array.from(all.subarray(i * N, (i + group) * N)));
        }
      }
    });
  }
  it(`decoding blocks as one kernel (${DECODE_BLOCK_FLAG}) give the same logits, bit for bit, as op by op, and leak nothing`, async () => {
    const model = new Transformer({ ...resolveConfig('deep').model, nLayer: 2 });
    const tokens = Array.from({ length: 40 }, (_, i) => (i * 53 + 7) % 256);
    const logits = async (chunk: number, fused: boolean): Promise<number[]> => {
      tf.env().set(DECODE_BLOCK_FLAG, fused);
      const cache = model.newCache();
      const out = await fedLogits(model, cache, tokens, chunk);
      cache.truncate(3); // a rejected draft: the next forward writes over the dropped positions
      out.push(...(await fedLogits(model, cache, tokens.slice(3, 9), 6)));
      cache.dispose();
      return out;
    };
    try {
      let kernels = 0;
      const n0 = tf.memory().numTensors;
      for (const chunk of [1, 6, 40]) {
        const profile = await tf.profile(async () => void (await logits(chunk, true)));
        kernels = profile.kernels.filter((k) => k.name === DECODE_BLOCK).length;
        expect(kernels, 'one fused kernel per block and forward').toBe(2 * Math.ceil(tokens.length / chunk) + 2);
        expect(await logits(chunk, true), `${chunk} tokens per forward`).toEqual(await logits(chunk, false));
      }
      expect(tf.memory().numTensors).toBe(n0);
    } finally {
      tf.env().set(DECODE_BLOCK_FLAG, true);
      model.dispose();
    }
  });

  it('a model gives each position the same logits, bit for bit, fed 1, 2, 3, 6 or 16 tokens per forward or all at once', async () => {
    const model = new Transformer({ ...resolveConfig('deep').model, nLayer: 2 }); // MLP width 384: K-blocked products
    const tokens = Array.from({ length: 30 }, (_, i) => (i * 37 + 11) % 256);
    const logits = async (chunk: number): Promise<number[]> => {
      const cache = model.newCache();
      const out = await fedLogits(model, cache, tokens, chunk);
      cache.dispose();
      return out;
    };
    const all = await logits(tokens.length);
    for (const chunk of [1, 2, 3, 6, 16]) expect(await logits(chunk), `${chunk} tokens per forward`).toEqual(all);
    model.dispose();
  });
});

describe('wasm kernels hygiene', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });
  afterAll(async () => {
    await initBackend('cpu');
  });

  const counts = () => [tf.memory().numTensors, tf.backend().numDataIds()];

  it('leak no tensors or data buffers: forward and gradient of every fused op, cloned and cast tensors', () => {
    const [B, T, H, C] = [2, 16, 2, 16];
    const qkv = tf.tensor2d(values(B * T * 3 * C, 1), [B * T, 3 * C]);
    const mask = tf.tensor2d(maskValues(T, 'causal'), [T, T]);
    const g = tf.ones([C]);
    const b = tf.zeros([C]);
    const run = () =>
      tf.tidy(() => {
        const [dqkv] = tf.grads((a: tf.Tensor) => tf.sum(fusedLayerNorm(fusedAttention(a as tf.Tensor2D, B, T, H, mask), g, b, 1e-5)))([qkv]);
        const [dh] = tf.grads((h: tf.Tensor) => tf.sum(fusedBiasGelu(h as tf.Tensor2D, b as tf.Tensor1D)))([dqkv.slice([0, 0], [B * T, C])]);
        return tf.add(tf.sum(dh), tf.sum(tf.cast(tf.clone(qkv), 'float32')));
      });
    run().dispose();
    const before = counts();
    for (let i = 0; i < 3; i++) run().dispose();
    expect(counts()).toEqual(before);
    tf.dispose([qkv, mask, g, b]);
  });

  it('a clone shares data but outlives its source', async () => {
    const a = tf.tensor1d([1, 2, 3]);
    const c = tf.clone(a);
    a.dispose();
    expect(Array.from(await c.data())).toEqual([1, 2, 3]);
    c.dispose();
  });

  it(`${FAST_FLAG}=false turns every fast path off, with the same results`, async () => {
    const [B, T, H, C] = [1, 8, 2, 8];
    const x = values(B * T * 3 * C, 5);
    const run = () =>
      tf.tidy(() => {
        const qkv = tf.tensor2d(x, [B * T, 3 * C]);
        const mask = tf.tensor2d(maskValues(T, 'causal'), [T, T]);
        return (nativeKernels() ? fusedAttention(qkv, B, T, H, mask) : referenceAttention(qkv, B, T, H, mask)).dataSync();
      });
    const fast = run();
    tf.env().set(FAST_FLAG, false);
    try {
      expect(nativeKernels()).toBeNull();
      expect(relativeError(run() as Float32Array, fast as Float32Array)).toBeLessThan(TOL);
    } finally {
      tf.env().set(FAST_FLAG, true);
    }
    expect(nativeKernels()).not.toBeNull();
  });
});

for (const [name, base64] of [['kernels.wasm', KERNELS_WASM_BASE64], ['kernels_relaxed.wasm', KERNELS_RELAXED_WASM_BASE64]]) describe(`native/${name}`, () => {
  const file = path.join(__dirname, '..', 'src', 'backend', 'native', name);

  it(`is what ${name.replace('.wasm', '_wasm.ts')} embeds (rebuild with src/backend/native/build.sh)`, () => {
    expect(Buffer.from(base64, 'base64').equals(fs.readFileSync(file))).toBe(true);
  });

  it('imports its memory and has no data section (it must not write into tfjs memory on its own)', () => {
    const bytes = fs.readFileSync(file);
    const sections: number[] = [];
    let p = 8;
    const leb = () => {
      let v = 0;
      let shift = 0;
      for (;;) {
        const byte = bytes[p++];
        v |= (byte & 0x7f) << shift;
        shift += 7;
        if (byte < 0x80) return v;
      }
    };
    while (p < bytes.length) {
      sections.push(bytes[p++]);
      const size = leb();
      p += size;
    }
    expect(sections).not.toContain(11); // data
    expect(sections).not.toContain(5); // own memory
    const mod = new WebAssembly.Module(bytes);
    expect(WebAssembly.Module.imports(mod)).toEqual([{ module: 'env', name: 'memory', kind: 'memory' }]);
  });
});
