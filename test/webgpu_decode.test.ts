/**
 * The fused webgpu decoding programs (src/backend/webgpu_decode.ts) against the plain tfjs ops on the same backend, on
 * whatever adapter Dawn gives here: Mesa's software renderer through OpenGL ES on a CPU-only machine (Debian
 * libegl-mesa0 libegl-dev), Vulkan on a GPU. Without an adapter the tests fail with what to install;
 * MTP_SKIP_WEBGPU=1 skips them instead.
 */
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { MTP_DEFAULTS, ModelConfig, MtpConfig, resolveConfig } from '../src/config';
import { fusedDispatches, gpuDecodeModel, WEBGPU_DECODE_FLAG, WEBGPU_DRAFT_CHAIN_FLAG } from '../src/backend/webgpu_decode';
import type { MedusaModel } from '../src/model/medusa';
import type { FeatureModel } from '../src/model/feature';
import { createModel } from '../src/model/create';
import type { MtpModel } from '../src/model/mtp_model';
import { Transformer, MASKED } from '../src/model/transformer';
import { KVCache } from '../src/model/kv_cache';
import { generate } from '../src/decode/ar';
import { decode } from '../src/decode/engine';
import { denseTree } from '../src/decode/tree';
import { randomTokens, RecordingDrafter, relativeError, webgpuBeforeAll } from './helpers';

const nano = resolveConfig('nano').model;
const needAdapter = webgpuBeforeAll();

const withFlag = <T>(on: boolean, f: () => T): T => {
  tf.env().set(WEBGPU_DECODE_FLAG, on);
  try {
    return f();
  } finally {
    tf.env().set(WEBGPU_DECODE_FLAG, true);
  }
};

/** Tree-step mask rows: each row sees the cache, itself and the rows listed. */
function treeMask(T: number, past: number, sees: number[][]): tf.Tensor2D {
  const S = past + T;
  const m = new Float32Array(T * S).fill(MASKED);
  for (let i = 0; i < T; i++) {
    m.fill(0, i * S, i * S + past);
    for (const j of [...sees[i], i]) m[i * S + past + j] = 0;
  }
  return tf.tensor2d(m, [T, S]);
}

interface Step {
  tokens: number[];
  positions?: number[];
  sees?: number[][];
}

/** verifyForward over the steps (one cache), fused or plain: every step's logits and features, and the cache's layer 0. */
async function run(model: { verifyForward: Transformer['verifyForward']; newCache(): KVCache }, steps: Step[], fused: boolean) {
  return withFlag(fused, () => {
    const cache = model.newCache();
    const outs = steps.map((s) =>
      tf.tidy(() => {
        const mask = s.sees ? treeMask(s.tokens.length, cache.length, s.sees) : undefined;
        const { logits, features } = model.verifyForward(s.tokens, cache, { positions: s.positions, mask });
        return [tf.keep(logits), tf.keep(features)];
      }),
    );
    const kv = cache.layer(0);
    const kept = { k: tf.clone(kv.k!), v: tf.clone(kv.v!) };
    cache.dispose();
    return { outs, kv: kept };
  });
}

const data = async (t: tf.Tensor) => {
  const d = await t.data();
  t.dispose();
  return d as Float32Array;
};

describe('fused webgpu decoding forward', { timeout: 120_000 }, () => {
  const shapes: [string, Partial<ModelConfig>][] = [
    ['nano (C 32, 2 heads, untied)', {}],
    ['C 96, 4 heads, 3 blocks, tied embeddings, 64 positions', { nEmbd: 96, nHead: 4, nLayer: 3, blockSize: 64, tieEmbeddings: true }],
  ];
  for (const [name, extra] of shapes) {
    it(`${name}: logits, features and the KV cache equal the plain ops (prefill, one token, a tree step with its positions) within 2e-6 relative`, async (ctx) => {
      needAdapter(ctx);
      const m = new Transformer({ ...nano, ...extra, seed: 5 });
      const steps: Step[] = [
        { tokens: randomTokens(9, 256, 1) },
        { tokens: [17] },
        { tokens: [4, 8, 15, 16, 23], positions: [10, 11, 11, 12, 12], sees: [[], [0], [0], [0, 1], [0, 2]] },
      ];
      const before = fusedDispatches.count;
      const plain = await run(m, steps, false);
      expect(fusedDispatches.count).toBe(before); // the flag really turns the programs off
      const fused = await run(m, steps, true);
      expect(fusedDispatches.count - before).toBe(3 * (2 * m.config.nLayer + 1)); // 2 per block + the head, per step
      for (let i = 0; i < steps.length; i++) {
        for (let j = 0; j < 2; j++) expect(relativeError(await data(fused.outs[i][j]), await data(plain.outs[i][j]))).toBeLessThan(2e-6);
      }
      expect(relativeError(await data(fused.kv.k), await data(plain.kv.k))).toBeLessThan(2e-6);
      expect(relativeError(await data(fused.kv.v), await data(plain.kv.v))).toBeLessThan(2e-6);
      m.dispose();
    });
  }

  it('a token has the same logit bits fed alone, in a prefill, or among tree drafts after a gather', async (ctx) => {
    needAdapter(ctx);
    const m = new Transformer({ ...nano, seed: 6 });
    const prompt = randomTokens(12, 256, 2);
    // the prefill's rows
    const pre = await run(m, [{ tokens: prompt }], true);
    const preLogits = await data(pre.outs[0][0]);
    pre.outs[0][1].dispose();
    tf.dispose([pre.kv.k, pre.kv.v]);
    // one at a time
    const cache = m.newCache();
    const alone: Float32Array[] = [];
    for (const t of prompt) alone.push(await data(tf.tidy(() => m.verifyForward([t], cache).logits)));
    const V = m.config.vocabSize;
    alone.forEach((row, i) => expect(Array.from(row)).toEqual(Array.from(preLogits.subarray(i * V, (i + 1) * V))));
    // a tree after the first 6: root 6 with children 7 (rejected sibling X) — keep the path through node 2, then feed 8 alone
    const c2 = m.newCache();
    tf.tidy(() => m.verifyForward(prompt.slice(0, 6), c2));
    const tree = [prompt[6], 99, prompt[7]]; // nodes 1 and 2 both children of the root (sibling first)
    const step = await data(tf.tidy(() => m.verifyForward(tree, c2, { positions: [6, 7, 7], mask: treeMask(3, 6, [[], [0], [0]]) }).logits));
    expect(Array.from(step.subarray(2 * V, 3 * V))).toEqual(Array.from(alone[7]));
    c2.gather([0, 1, 2, 3, 4, 5, 6, 8]); // prompt[0..7]: the sibling's slot is dropped
    const next = await data(tf.tidy(() => m.verifyForward([prompt[8]], c2).logits));
    expect(Array.from(next)).toEqual(Array.from(alone[8]));
    cache.dispose();
    c2.dispose();
    m.dispose();
  });

  it("the drafters' own networks: Medusa heads (one program for every head) and a feature drafter's steps over its own GPU cache equal the plain ops within 2e-6 relative", async (ctx) => {
    needAdapter(ctx);
    const medusa = createModel({ ...nano, seed: 8, mtp: { ...MTP_DEFAULTS.medusa, heads: 4 } }) as MedusaModel;
    const cache = medusa.newCache();
    const hidden = tf.tidy(() => medusa.verifyForward(randomTokens(6, 256, 4), cache).features); // [6, C]
    const gpu = gpuDecodeModel(medusa.params, medusa.trunk.decodeShape())!;
    const before = fusedDispatches.count;
    const fusedHeads = tf.tidy(() => gpu.medusaLogits(hidden, 4, 3, (n) => medusa.params.get(n)!)); // heads 1..3 at row 4
    expect(fusedDispatches.count - before).toBe(1);
    const plainHeads = tf.tidy(() => tf.reshape(tf.slice(medusa.headsLogits(tf.slice(hidden, [4, 0], [1, -1]) as tf.Tensor2D), [0, 0, 0], [3, 1, -1]), [3, -1]));
    expect(relativeError(await data(fusedHeads), await data(plainHeads))).toBeLessThan(2e-6);
    tf.dispose(hidden);
    cache.dispose();
    medusa.dispose();

    const feature = createModel({ ...nano, nLayer: 4, seed: 9, mtp: { ...MTP_DEFAULTS.feature, layers: 2 } }) as FeatureModel;
    const tables = feature.draftTables();
    const steps = async (fused: boolean) => {
      const c = new KVCache(2);
      const outs: Float32Array[] = [];
      for (const [rows, sees] of [[5, null], [3, [[], [0], [0]]]] as const) {
        const g = tf.randomNormal([rows, nano.nEmbd], 0, 1, 'float32', rows) as tf.Tensor2D;
        const o = withFlag(fused, () =>
          tf.tidy(() => {
            const mask = sees ? treeMask(rows, c.length, sees as unknown as number[][]) : feature.trunk.causalMask(c.length, rows);
            const r = feature.draftStep(g, tf.tensor1d(randomTokens(rows, 256, rows), 'int32'), mask, c, tables);
            return [r.f, r.logits];
          }),
        );
        for (const t of o) outs.push(await data(t));
        g.dispose();
      }
      c.dispose();
      return outs;
    };
    const before2 = fusedDispatches.count;
    const plain = await steps(false);
    const fused = await steps(true);
    expect(fusedDispatches.count - before2).toBe(2 * (1 + 2 * 2 + 1)); // per step: the input, 2 per block, the head
    plain.forEach((p, i) => expect(relativeError(fused[i], p), `output ${i}`).toBeLessThan(2e-6));
    tf.dispose([tables.projG, tables.tokenTable]);
    feature.dispose();
  });

  it('a greedy feature-drafter chain drafted on the GPU in one submission proposes exactly what the depth-by-depth drafting does, through window slides', async (ctx) => {
    needAdapter(ctx);
    for (const features of ['last', 'fused'] as const) {
      const m = createModel({ ...nano, nLayer: 4, seed: 31, mtp: { ...MTP_DEFAULTS.feature, features } }) as FeatureModel;
      const prompt = randomTokens(6, 256, 5);
      const run = async (onGpu: boolean) => {
        tf.env().set(WEBGPU_DRAFT_CHAIN_FLAG, onGpu);
        try {
          const rec = new RecordingDrafter(m.drafter({ k: 5 }));
          const before = fusedDispatches.count;
          const out = await decode(m, rec, prompt, { maxNewTokens: 56 });
          return { out, rec, dispatches: fusedDispatches.count - before };
        } finally {
          tf.env().set(WEBGPU_DRAFT_CHAIN_FLAG, true);
        }
      };
      const host = await run(false);
      const gpu = await run(true);
      expect(gpu.rec.records.map((r) => r.tree)).toEqual(host.rec.records.map((r) => r.tree));
      expect(gpu.rec.records.length).toBeGreaterThan(5);
      expect(gpu.rec.commits.some((c) => c.reset)).toBe(true); // the window slid
      expect(gpu.out.tokens).toEqual(host.out.tokens);
      expect(gpu.out.stats.draftForwards).toBe(host.out.stats.draftForwards);
      expect(gpu.dispatches).toBeGreaterThan(host.dispatches); // the chain path ran: one argmax program per drafted token on top of the same forwards
      m.dispose();
    }
  });

  it("every drafter's proposals on the fused programs (Medusa heads, parallel heads' blocks, sequential modules, the feature drafter) equal its proposals on plain ops, chain and tree, on peaked weights", async (ctx) => {
    needAdapter(ctx);
    const drafters: [string, MtpConfig][] = [
      ['medusa', { ...MTP_DEFAULTS.medusa, heads: 3 }],
      ['parallel', { ...MTP_DEFAULTS.parallel, k: 3 }],
      ['sequential', { ...MTP_DEFAULTS.sequential, depth: 2 }],
      ['feature', { ...MTP_DEFAULTS.feature }],
    ];
    for (const [name, mtp] of drafters) {
      const m: MtpModel = createModel({ ...nano, seed: 41, initStd: 0.3, mtp }); // peaked logits: no near-ties between the two paths
      const prompt = randomTokens(6, 256, 6);
      for (const opts of [{}, { tree: denseTree(2) }]) {
        const record = async (fused: boolean) => {
          tf.env().set(WEBGPU_DECODE_FLAG, fused);
          try {
            const before = fusedDispatches.count;
            const rec = new RecordingDrafter(m.drafter(opts));
            const out = await decode(m, rec, prompt, { maxNewTokens: 40 });
            return { trees: rec.records.map((r) => [r.tree.tokens, r.tree.parents]), tokens: out.tokens, dispatches: fusedDispatches.count - before };
          } finally {
            tf.env().set(WEBGPU_DECODE_FLAG, true);
          }
        };
        const plain = await record(false);
        const fused = await record(true);
        expect(plain.dispatches).toBe(0);
        expect(fused.dispatches).toBeGreaterThan(0);
        expect(fused.trees, `${name} ${JSON.stringify(opts)}`).toEqual(plain.trees);
        expect(fused.tokens).toEqual(plain.tokens);
      }
      m.dispose();
    }
  });

  const variants: [string, MtpConfig][] = [
    ['medusa', { ...MTP_DEFAULTS.medusa, heads: 3 }],
    ['parallel', { ...MTP_DEFAULTS.parallel, k: 3 }],
    ['sequential', { ...MTP_DEFAULTS.sequential, depth: 2 }],
    ['feature (last)', { ...MTP_DEFAULTS.feature, features: 'last' }],
    ['feature (fused taps)', { ...MTP_DEFAULTS.feature, features: 'fused' }],
  ];
  it('every variant: speculative decoding on the fused path equals its greedy decoding token for token (chains and a dense tree, seeds 11–15, 48 new tokens past the 32-token window); the target forwards ran as fused programs', async (ctx) => {
    needAdapter(ctx);
    for (const [i, [name, mtp]] of variants.entries()) {
      for (const seed of [11 + i]) {
        const m: MtpModel = createModel({ ...nano, nLayer: name.startsWith('feature (fused') ? 4 : nano.nLayer, seed, mtp });
        const prompt = randomTokens(7, 256, seed);
        const before = fusedDispatches.count;
        const ar = await generate(m, prompt, { maxNewTokens: 48 });
        expect(fusedDispatches.count, name).toBeGreaterThan(before);
        for (const opts of [{}, { tree: denseTree(2) }]) {
          const out = await decode(m, m.drafter(opts), prompt, { maxNewTokens: 48 });
          expect(out.tokens, `${name} seed ${seed} ${JSON.stringify(opts)}`).toEqual(ar.tokens);
        }
        m.dispose();
      }
    }
  });

  it('greedy tokens of the fused and plain paths agree on a trained-like peaked model; no tensors leak across generations', async (ctx) => {
    needAdapter(ctx);
    const m = new Transformer({ ...nano, seed: 21, initStd: 0.3 }); // larger weights: peaked logits, no near-ties
    const prompt = randomTokens(5, 256, 3);
    const plain = await withFlag(false, () => generate(m, prompt, { maxNewTokens: 40 }));
    const fused = await generate(m, prompt, { maxNewTokens: 40 });
    expect(fused.tokens).toEqual(plain.tokens);
    const n = tf.memory().numTensors;
    await generate(m, prompt, { maxNewTokens: 40 });
    await generate(m, prompt, { maxNewTokens: 40 });
    expect(tf.memory().numTensors).toBe(n);
    m.dispose();
  });

  it('a cache that lives on the GPU refuses tensors appended by plain ops, with a message; a cache of tensors stays on the plain path', async (ctx) => {
    needAdapter(ctx);
    const m = new Transformer({ ...nano, seed: 7 });
    const gpu = m.newCache();
    tf.tidy(() => m.verifyForward([1, 2, 3], gpu));
    const k = tf.zeros([1, nano.nHead, 1, nano.nEmbd / nano.nHead]) as tf.Tensor4D;
    expect(() => gpu.append(0, k, k)).toThrow(/lives on the GPU/);
    const plain = m.newCache();
    withFlag(false, () => tf.tidy(() => m.verifyForward([1, 2, 3], plain)));
    const before = fusedDispatches.count;
    tf.tidy(() => m.verifyForward([4], plain)); // flag on, but this cache keeps tensors
    expect(fusedDispatches.count).toBe(before);
    expect(plain.length).toBe(4);
    tf.dispose(k);
    gpu.dispose();
    plain.dispose();
    m.dispose();
  });
});
