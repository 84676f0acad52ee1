/**
 * Parallel heads (Gloeckle 2024) and blockwise decoding (Stern 2018):
 * k = 1 is the baseline; the two backward modes give equal gradients; matchParams keeps the parameter
 * count; blockwise greedy output equals plain greedy for random and trained weights, every k, prompts
 * of several lengths and generation past the context limit; τ = 1 exactly with wrong heads and τ = k
 * with oracle heads; no tensor leaks.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { countParams, ModelConfig, ParallelMtp, resolveConfig } from '../src/config';
import { initBackend } from '../src/backend/index';
import { createModel, MtpModel } from '../src/model/create';
import { crossEntropy } from '../src/model/transformer';
import { generate } from '../src/decode/ar';
import { blockwiseGenerate } from '../src/decode/blockwise';
import { Trainer } from '../src/train/trainer';
import { maxAbsDiff, randomTokens } from './helpers';

const nano = resolveConfig('nano').model;
const parallel = (k: number, extra: Partial<ParallelMtp> = {}): ParallelMtp => ({ kind: 'parallel', k, headLayers: 1, matchParams: false, headWeights: [], ...extra });
const cfgK = (k: number, extra: Partial<ParallelMtp> = {}, model: Partial<ModelConfig> = {}): ModelConfig => ({ ...nano, nLayer: 3, ...model, mtp: parallel(k, extra) });

function batch(cfg: ModelConfig, k: number, seed: number) {
  const B = 2;
  const T = cfg.blockSize;
  const toks = randomTokens(B * (T + k), cfg.vocabSize, seed);
  const inputs = tf.tensor2d(Array.from({ length: B }, (_, b) => toks.slice(b * (T + k), b * (T + k) + T)), [B, T], 'int32');
  const targets = tf.tensor3d(
    Array.from({ length: k }, (_, i) => Array.from({ length: B }, (_, b) => toks.slice(b * (T + k) + i + 1, b * (T + k) + i + 1 + T))),
    [k, B, T],
    'int32',
  );
  return { inputs, targets };
}

/**
 * Wraps a model so heads 2..k draft from a known continuation `truth` (absolute token index →
 * token): right = the true token, wrong = another one. Valid while the window has not slid.
 */
function oracle(model: MtpModel, truth: number[], right: boolean): MtpModel {
  const wrapped: MtpModel = Object.create(model);
  wrapped.decodeLogits = (tokens, caches, opts) => {
    const past = caches.length;
    const real = model.decodeLogits(tokens, caches, opts);
    return tf.tidy(() => {
      const V = model.config.vocabSize;
      const rows = [tf.slice(real, [0, 0, 0], [1, tokens.length, V])];
      for (let i = 1; i < model.k; i++) {
        const ids = tokens.map((_, p) => {
          const t = truth[past + p + i + 1] ?? 0;
          return right ? t : (t + 1) % V;
        });
        rows.push(tf.mul(tf.oneHot(tf.tensor1d(ids, 'int32'), V), 50).reshape([1, tokens.length, V]));
      }
      real.dispose();
      return tf.concat(rows, 0) as tf.Tensor3D;
    });
  };
  return wrapped;
}

describe('parallel heads', () => {
  beforeAll(async () => {
    await initBackend('cpu');
  });

  it("k = 1 is the baseline: same parameters as mtp.kind 'none', and the plain trunk's logits and loss", () => {
    const base = createModel({ ...nano, nLayer: 3 });
    const one = createModel(cfgK(1));
    expect([...one.params.keys()]).toEqual([...base.params.keys()]);
    for (const [name, v] of base.params) expect(maxAbsDiff(v.dataSync(), one.params.get(name)!.dataSync())).toBe(0);
    const { inputs, targets } = batch(one.config, 1, 1);
    const viaHeads = tf.tidy(() => one.loss(inputs, targets).loss.dataSync()[0]);
    const plain = tf.tidy(() => crossEntropy(base.trunk.forward(inputs), targets.reshape([2, nano.blockSize]) as tf.Tensor2D).loss.dataSync()[0]);
    expect(viaHeads).toBe(plain);
    tf.dispose([inputs, targets]);
    base.dispose();
    one.dispose();
  });

  it('the loss is the weighted mean of the heads’ cross-entropies, each against its own shifted targets', () => {
    const m = createModel(cfgK(3, { headWeights: [3, 2, 1] }));
    const { inputs, targets } = batch(m.config, 3, 2);
    const out = m.loss(inputs, targets);
    const h = out.heads.map((x) => x.loss.dataSync()[0]);
    expect(out.loss.dataSync()[0]).toBeCloseTo((3 * h[0] + 2 * h[1] + h[2]) / 6, 5);
    // head 2 scored against head 1's targets gives another loss: the targets really are shifted
    const shifted = tf.concat([tf.slice(targets, [0, 0, 0], [1, -1, -1]), tf.slice(targets, [0, 0, 0], [2, -1, -1])], 0) as tf.Tensor3D;
    expect(Math.abs(m.loss(inputs, shifted).heads[1].loss.dataSync()[0] - h[1])).toBeGreaterThan(1e-3);
    m.dispose();
  });

  it('matchParams keeps the parameter count of the k = 1 model', () => {
    const c1 = cfgK(1, {}, { nLayer: 5 });
    const c4 = cfgK(4, { matchParams: true }, { nLayer: 5 });
    expect(countParams(c4)).toBe(countParams(c1));
    const m = createModel(c4);
    expect(m.trainableVariables().reduce((a, v) => a + v.size, 0)).toBe(countParams(c1));
    m.dispose();
  });

  for (const tied of [false, true]) {
    it(`memory-efficient backward gives the joint backward's gradients (k = 3${tied ? ', tied embeddings' : ''}; tolerance 1e-5)`, () => {
      const m = createModel(cfgK(3, { headWeights: [1, 0.5, 0.25] }, { tieEmbeddings: tied }));
      const { inputs, targets } = batch(m.config, 3, 3);
      const joint = m.lossAndGrads(inputs, targets, 'joint');
      const eff = m.lossAndGrads(inputs, targets, 'memory-efficient');
      expect(Math.abs(joint.loss.dataSync()[0] - eff.loss.dataSync()[0])).toBeLessThan(1e-6);
      expect(Object.keys(eff.grads).sort()).toEqual(Object.keys(joint.grads).sort());
      for (const name of Object.keys(joint.grads)) {
        expect(maxAbsDiff(joint.grads[name].dataSync(), eff.grads[name].dataSync()), name).toBeLessThan(1e-5);
      }
      for (const r of [joint, eff]) tf.dispose([r.loss, ...r.heads.flatMap((h) => [h.loss, h.acc]), ...Object.values(r.grads)]);
      tf.dispose([inputs, targets]);
      m.dispose();
    });
  }

  it('memory-efficient backward leaks no tensors', () => {
    const m = createModel(cfgK(2));
    const { inputs, targets } = batch(m.config, 2, 4);
    const run = () => {
      const r = m.lossAndGrads(inputs, targets, 'memory-efficient');
      tf.dispose([r.loss, ...r.heads.flatMap((h) => [h.loss, h.acc]), ...Object.values(r.grads)]);
    };
    run();
    const before = tf.memory().numTensors;
    run();
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([inputs, targets]);
    m.dispose();
  });
});

describe('blockwise decoding is lossless', () => {
  beforeAll(async () => {
    await initBackend('cpu');
  });

  for (const seed of [11, 12]) {
    for (const k of [1, 2, 4, 8]) {
      it(`random weights, seed ${seed}, k = ${k}: equals greedy for prompts of 1, 9 and 40 tokens, 60 new tokens (past the 32-token window)`, async () => {
        const m = createModel(cfgK(k, {}, { seed, nLayer: k === 8 ? 2 : 3 }));
        for (const len of [1, 9, 40]) {
          const prompt = randomTokens(len, 256, seed * 100 + len);
          const ar = await generate(m.trunk, prompt, { maxNewTokens: 60 });
          const bw = await blockwiseGenerate(m, prompt, { maxNewTokens: 60 });
          expect(bw.tokens).toEqual(ar.tokens);
          expect(bw.steps.reduce((a, b) => a + b, 0)).toBe(60);
        }
        m.dispose();
      });
    }
  }

  it('trained heads (wasm): high acceptance, still identical to greedy, every k ≤ the model’s', async () => {
    await initBackend('wasm');
    const cfg = cfgK(4, {}, { seed: 5 });
    const m = createModel(cfg);
    const text = new TextEncoder().encode('abcdefgh'.repeat(100) + 'the cat sat on the mat. '.repeat(40));
    const trainer = new Trainer(m, { ...resolveConfig('nano').train, lr: 1e-2, batchSize: 8, steps: 80, warmupSteps: 5 }, { train: text, val: text });
    for (let i = 0; i < 80; i++) await trainer.trainStep();
    trainer.dispose();
    const prompt = Array.from(new TextEncoder().encode('abcdefghab'));
    const ar = await generate(m.trunk, prompt, { maxNewTokens: 70 });
    for (const k of [1, 2, 3, 4]) {
      const bw = await blockwiseGenerate(m, prompt, { maxNewTokens: 70, k });
      expect(bw.tokens).toEqual(ar.tokens);
      if (k === 4) {
        expect(bw.stats.tau).toBeGreaterThan(2);
        expect(bw.stats.alpha[0]).toBeGreaterThan(0.5);
      }
    }
    m.dispose();
    await initBackend('cpu');
  }, 120_000);

  it('τ = 1 exactly when the heads are always wrong, τ = k when they are always right', async () => {
    const m = createModel(cfgK(4, {}, { seed: 7 }));
    const prompt = [5, 6, 7];
    const ar = await generate(m.trunk, prompt, { maxNewTokens: 25 });
    const truth = [...prompt, ...ar.tokens];
    const wrong = await blockwiseGenerate(oracle(m, truth, false), prompt, { maxNewTokens: 25 });
    expect(wrong.tokens).toEqual(ar.tokens);
    expect(wrong.stats.tau).toBe(1);
    expect(wrong.stats.alpha[0]).toBe(0);
    const right = await blockwiseGenerate(oracle(m, truth, true), prompt, { maxNewTokens: 25 });
    expect(right.tokens).toEqual(ar.tokens);
    expect(right.steps).toEqual([4, 4, 4, 4, 4, 4, 1]); // 24 tokens in blocks of k, the last one needs no forward
    expect(right.stats.alpha).toEqual([1, 1, 1]);
    m.dispose();
  });

  it('leaks no tensors across generations', async () => {
    const m = createModel(cfgK(3));
    await blockwiseGenerate(m, [1, 2], { maxNewTokens: 5 });
    const before = tf.memory().numTensors;
    await blockwiseGenerate(m, [1, 2, 3], { maxNewTokens: 50 });
    expect(tf.memory().numTensors).toBe(before);
    m.dispose();
  });

  it('rejects k larger than the model’s heads', async () => {
    const m = createModel(cfgK(2));
    await expect(blockwiseGenerate(m, [1], { maxNewTokens: 3, k: 3 })).rejects.toThrow(/k must be an integer in \[1, 2\]/);
    m.dispose();
  });
});
