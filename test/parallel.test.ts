/**
 * Parallel heads (Gloeckle 2024) and blockwise decoding (Stern 2018):
 * k = 1 is the baseline; the two backward modes give equal gradients; matchParams keeps the parameter
 * count; blockwise greedy output equals plain greedy for random and trained weights, every k, prompts
 * of several lengths and generation past the context limit; with an oracle drafter on the heads model
 * the engine's steps and statistics are exact (τ = 1 with always-wrong drafts, steps [k, …, k, 1] with
 * always-right ones, partial acceptance, window ends); the heads drafter's chains and trees equal a
 * from-scratch recomputation (fresh caches, decodeLogits over the window), greedy and sampled; no
 * tensor leaks.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { countParams, ModelConfig, ParallelMtp, resolveConfig } from '../src/config';
import { initBackend } from '../src/backend/index';
import { createModel } from '../src/model/create';
import { crossEntropy } from '../src/model/transformer';
import { generate } from '../src/decode/ar';
import { speculativeAcceptance } from '../src/decode/acceptance';
import { windowStart } from '../src/decode/context';
import { blockwiseGenerate } from '../src/decode/decoders';
import { treeDepths } from '../src/decode/draft_tree';
import { decode } from '../src/decode/engine';
import { denseTree } from '../src/decode/tree';
import { Trainer } from '../src/train/trainer';
import { checkTreeAgainst, greedyTruth, headsDraftLogits, maxAbsDiff, OracleDrafter, oraclePlan, randomTokens, RecordingDrafter } from './helpers';

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

  it('oracle drafts on the heads model: τ = 1 exactly when always wrong, steps [k, …, k, 1] when always right, partial acceptance', async () => {
    const m = createModel(cfgK(4, {}, { seed: 7 }));
    const prompt = [5, 6, 7];
    const truth = await greedyTruth(m, prompt, 25);
    const run = (rankOf?: (i: number, d: number) => number, depth = 3) => decode(m, new OracleDrafter(truth, 256, { depth, rankOf }), prompt, { maxNewTokens: 25 });
    const wrong = await run(() => -1);
    expect(wrong.tokens).toEqual(truth.slice(3));
    expect(wrong.stats.tau).toBe(1);
    expect(wrong.steps).toEqual(new Array(25).fill(1));
    expect(wrong.stats.attempts).toEqual([24]); // every step but the last (one token left: nothing to draft)
    expect(wrong.stats.alpha).toEqual([0]);
    const right = await run();
    expect(right.tokens).toEqual(truth.slice(3));
    expect(right.steps).toEqual([4, 4, 4, 4, 4, 4, 1]); // 24 tokens in blocks of k (the prefill drafts too), then the last one alone
    expect(right.stats.forwards).toBe(7);
    expect(right.stats.tau).toBe(25 / 7);
    expect(right.stats.alpha).toEqual([1, 1, 1]);
    expect(right.stats.draftForwards).toBe(0);
    // depth 1 and 2 right except where the token index is a multiple of 5, depth 3 always wrong
    const rankOf = (i: number, d: number) => (d <= 2 && i % 5 !== 0 ? 0 : -1);
    const partial = await run(rankOf);
    const plan = oraclePlan(3, 25, nano.blockSize, { depth: 3, rankOf });
    expect(partial.tokens).toEqual(truth.slice(3));
    expect(partial.steps).toEqual(plan.steps);
    expect(partial.stats.attempts).toEqual(plan.attempts);
    expect(partial.stats.accepts).toEqual(plan.accepts);
    expect(partial.stats.accepts[2]).toBe(0);
    expect(Math.max(...partial.steps)).toBe(3);
    expect(partial.steps.filter((x) => x < 3).length).toBeGreaterThan(2);
    m.dispose();
  });

  it('oracle drafts past the window: steps stop at the window’s end and the cache restarts, output still greedy', async () => {
    const m = createModel(cfgK(4, {}, { seed: 8 }));
    const prompt = randomTokens(9, 256, 8);
    const truth = await greedyTruth(m, prompt, 80);
    for (const rankOf of [undefined, (i: number, d: number) => ((i * 7 + d) % 4 === 0 ? -1 : 0)]) {
      const out = await decode(m, new OracleDrafter(truth, 256, { depth: 3, rankOf }), prompt, { maxNewTokens: 80 });
      const plan = oraclePlan(9, 80, nano.blockSize, { depth: 3, rankOf });
      expect(out.tokens).toEqual(truth.slice(9));
      expect(out.steps).toEqual(plan.steps);
      expect(out.stats.accepts).toEqual(plan.accepts);
      expect(plan.steps.filter((x) => x < 4).length).toBeGreaterThan(rankOf ? 4 : 1);
    }
    m.dispose();
  });

  for (const sampled of [false, true]) {
    it(`the heads drafter's ${sampled ? 'sampled drafts (speculative sampling, T = 1): q of every node' : 'chain and dense tree: every node'} equals a from-scratch recomputation, through window slides`, async () => {
      const m = createModel(cfgK(4, {}, { seed: 9 }));
      const prompt = randomTokens(5, 256, 9);
      const ar = await generate(m.trunk, prompt, { maxNewTokens: 70 });
      for (const tree of [undefined, denseTree(3)]) {
        const rec = new RecordingDrafter(m.drafter(tree ? { tree } : {}));
        const acceptance = sampled ? speculativeAcceptance({ temperature: 1 }) : undefined;
        const out = await decode(m, rec, prompt, { maxNewTokens: 70, acceptance, seed: 3 });
        if (!sampled) expect(out.tokens).toEqual(ar.tokens);
        let checked = 0;
        let slides = 0;
        rec.records.forEach((r, i) => {
          if (i > 0) expect(r.windowStart).toBe(windowStart(rec.records[i - 1].seq.length, nano.blockSize));
          if (r.tree.tokens.length === 1) return;
          // the drafter holds the features of the last verification's window; they differ from the
          // window of this step's forward only right where it slides
          if (r.windowStart !== windowStart(r.seq.length, nano.blockSize)) slides += 1;
          const depths = treeDepths(r.tree);
          const logits = headsDraftLogits(m, r.seq, r.windowStart, Math.max(...depths));
          const res = checkTreeAgainst(r.tree, (u) => logits[depths[u]], r.sampling);
          expect(res.error, `proposal ${i} at length ${r.seq.length}`).toBeNull();
          checked += res.checked;
        });
        expect(checked).toBeGreaterThan(tree ? 100 : 30);
        expect(slides).toBeGreaterThan(0);
        expect(rec.commits.some((c) => c.reset && c.windowStart > 0)).toBe(true);
      }
      m.dispose();
    });
  }

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
    // (wrapped: blockwiseGenerate throws synchronously for bad options instead of rejecting)
    await expect((async () => blockwiseGenerate(m, [1], { maxNewTokens: 3, k: 3 }))()).rejects.toThrow(/k \(tokens per step\) must be an integer in \[1, 2\], got 3/);
    m.dispose();
  });
});
