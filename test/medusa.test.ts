/**
 * Medusa heads (Cai et al. 2024) and tree decoding: zero-initialised heads are the base model's
 * next-token predictor, shifted; the Medusa-1 / Medusa-2 losses and learning rates; Medusa-1 leaves
 * the trunk bit-identical; greedy tree decoding equals plain greedy for random weights, several seeds,
 * every preset tree and generation past the context limit; oracle heads give τ = K + 1 where the tree
 * holds the truth; posteriors on plain arrays; typical acceptance at temperature 0 and as ε → 0;
 * self-distillation data; no tensor leaks.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { MedusaMtp, ModelConfig, MTP_DEFAULTS, resolveConfig } from '../src/config';
import { initBackend } from '../src/backend/index';
import { batchFromWindows } from '../src/data/batch';
import { createModel } from '../src/model/create';
import { headRankAccuracies, MedusaModel } from '../src/model/medusa';
import { crossEntropy } from '../src/model/transformer';
import { generate } from '../src/decode/ar';
import { keepOnSlide, roomInWindow, windowStart } from '../src/decode/context';
import { greedyPosterior, medusaGenerate, treeCandidates, typicalPosterior } from '../src/decode/medusa';
import { selfSpeculative } from '../src/decode/speculative';
import { chainTree, denseTree, optimizeTree, sparseTree, treeBuffers } from '../src/decode/tree';
import { Trainer } from '../src/train/trainer';
import { generateBatch, selfDistillTokens } from '../src/train/self_distill';
import { Rng } from '../src/util/rng';
import { maxAbsDiff, randomTokens } from './helpers';

const nano = resolveConfig('nano').model;
const nanoTrain = resolveConfig('nano').train;
const medusa = (heads: number, extra: Partial<MedusaMtp> = {}): MedusaMtp => ({ ...MTP_DEFAULTS.medusa, heads, ...extra });
const cfgM = (heads: number, extra: Partial<MedusaMtp> = {}, model: Partial<ModelConfig> = {}): ModelConfig => ({ ...nano, ...model, mtp: medusa(heads, extra) });
const make = (heads: number, extra: Partial<MedusaMtp> = {}, model: Partial<ModelConfig> = {}) => createModel(cfgM(heads, extra, model)) as MedusaModel;

/** Heads = LM head plus noise, W1 small random: drafts related to the model's own predictions, not equal. */
function perturbHeads(m: MedusaModel, seed: number): void {
  const rng = new Rng(seed);
  for (const [name, v] of m.params) {
    if (!name.startsWith('medusa')) continue;
    const noise = tf.tensor(rng.normal(v.size, name.endsWith('w2') ? 0.1 : 0.2), v.shape);
    v.assign(tf.add(v, noise));
    noise.dispose();
  }
}

/**
 * Head k drafts the known continuation `truth` (absolute index → token) at rank rankOf(index, k): the
 * true token gets logit 50, the tokens ranked above it 60, 59, … The wrapper's "hidden state" of a
 * fed token is its absolute index, found without the decoder's position ids: its place in the window
 * is the number of positions its mask row lets it see, minus one; the window starts at
 * windowStart(prompt length) and moves one slide period each time the decoder restarts the caches.
 */
function oracle(model: MedusaModel, truth: number[], promptLen: number, rankOf: (i: number, k: number) => number): MedusaModel {
  const { blockSize, vocabSize: V } = model.config;
  const period = blockSize + 1 - keepOnSlide(blockSize);
  let start = -1;
  const wrapped: MedusaModel = Object.create(model);
  wrapped.decodeHidden = (tokens, caches, opts) => {
    const past = caches.length;
    if (past === 0) start = start < 0 ? windowStart(promptLen, blockSize) : start + period;
    const S = past + tokens.length;
    const mask = opts?.mask?.dataSync();
    const inWindow = (p: number) => (mask ? mask.subarray(p * S, (p + 1) * S).filter((x) => x === 0).length - 1 : past + p);
    const real = model.decodeHidden(tokens, caches, opts);
    real.hidden.dispose();
    return { logits: real.logits, hidden: tf.tensor2d(tokens.map((_, p) => [start + inWindow(p)])) };
  };
  wrapped.headsLogits = (rows) => {
    const at = rows.dataSync();
    const logits = new Float32Array((model.k - 1) * at.length * V);
    for (let k = 1; k < model.k; k++) {
      at.forEach((pos, r) => {
        const i = pos + k + 1;
        const t = truth[i] ?? 0;
        const o = ((k - 1) * at.length + r) * V;
        logits[o + t] = 50;
        for (let j = 1; j <= rankOf(i, k); j++) logits[o + ((t + j) % V)] = 60 - j;
      });
    }
    return tf.tensor3d(logits, [model.k - 1, at.length, V]);
  };
  return wrapped;
}

describe('Medusa heads', () => {
  beforeAll(async () => {
    await initBackend('cpu');
  });

  it('zero-initialised heads are the base model’s next-token predictor, shifted: same logits bit for bit, same top tokens', () => {
    const m = make(3);
    const plain = createModel({ ...nano, mtp: { kind: 'none' } });
    const toks = randomTokens(20, 256, 3);
    const V = nano.vocabSize;
    const rows = tf.tidy(() => m.decodeLogits(toks, m.newCaches()).arraySync()); // [4, 20, V]
    const ref = tf.tidy(() => plain.trunk.forward(tf.tensor2d([toks], [1, 20], 'int32')).dataSync());
    expect(maxAbsDiff(rows[0].flat(), ref)).toBe(0);
    for (let k = 1; k <= 3; k++) expect(maxAbsDiff(rows[k].flat(), rows[0].flat())).toBe(0);
    const top = (x: number[]) => x.map((v, i) => [v, i]).sort((a, b) => b[0] - a[0]).slice(0, 5).map((e) => e[1]);
    for (let t = 0; t < 20; t++) for (let k = 1; k <= 3; k++) expect(top(rows[k][t])).toEqual(top(rows[0][t]));
    expect(m.params.get('medusa2.w2')!.shape).toEqual([nano.nEmbd, V]);
    m.dispose();
    plain.dispose();
  });

  it('losses: Medusa-1 is Σ λₖ·CEₖ with λₖ = 0.8ᵏ, Medusa-2 adds L_LM with λ₀; head k is scored against x[t+k+1]', () => {
    const B = 2;
    const T = nano.blockSize;
    const toks = randomTokens(200, 256, 5);
    const b = batchFromWindows(toks, [0, 50], T, 4);
    const inputs = tf.tensor2d(b.inputs, [B, T], 'int32');
    const targets = tf.tensor3d(b.targets, [4, B, T], 'int32');
    for (const frozenTrunk of [true, false]) {
      const m = make(3, { frozenTrunk, lambda0: 0.2 });
      perturbHeads(m, 1);
      tf.tidy(() => {
        const out = m.loss(inputs, targets);
        const ce = out.heads.map((h) => h.loss.dataSync()[0]);
        const heads = 0.8 * ce[1] + 0.64 * ce[2] + 0.512 * ce[3];
        expect(out.loss.dataSync()[0]).toBeCloseTo(frozenTrunk ? heads : ce[0] + 0.2 * heads, 5);
        // head 2's loss, recomputed from decodeLogits against row 2 of the targets (x[t+3])
        const logits = tf.stack([0, 1].map((r) => tf.slice(m.decodeLogits(Array.from(b.inputs.subarray(r * T, (r + 1) * T)), m.newCaches()), [2, 0, 0], [1, T, 256]).reshape([T, 256])));
        expect(crossEntropy(logits as tf.Tensor3D, tf.slice(targets, [2, 0, 0], [1, B, T]).reshape([B, T]) as tf.Tensor2D).loss.dataSync()[0]).toBeCloseTo(ce[2], 4);
      });
      m.dispose();
    }
    tf.dispose([inputs, targets]);
  });

  it('Medusa-1 trains the heads only: trunk weights bit-identical after training; Medusa-2 moves the trunk, heads at 4× the learning rate', async () => {
    const text = randomTokens(2000, 256, 9);
    const data = { train: Int32Array.from(text), val: Int32Array.from(text.slice(0, 400)) };
    for (const frozenTrunk of [true, false]) {
      const m = make(2, { frozenTrunk });
      const before = new Map([...m.params].map(([n, v]) => [n, v.dataSync().slice()]));
      const trainer = new Trainer(m, { ...nanoTrain, steps: 3, lr: 1e-2 }, data);
      expect(trainer.optimizer.lrScale.get('medusa1.w1')).toBe(frozenTrunk ? 1 : 4);
      expect(trainer.optimizer.params.has('l0.wqkv')).toBe(!frozenTrunk);
      for (let i = 0; i < 3; i++) await trainer.trainStep();
      const before2 = tf.memory().numTensors;
      await trainer.trainStep();
      expect(tf.memory().numTensors).toBe(before2);
      trainer.dispose();
      for (const [n, v] of m.params) {
        const moved = maxAbsDiff(v.dataSync(), before.get(n)!);
        if (n.startsWith('medusa')) expect(moved, n).toBeGreaterThan(0);
        else if (frozenTrunk) expect(moved, n).toBe(0);
      }
      if (!frozenTrunk) expect(maxAbsDiff(m.params.get('l0.wqkv')!.dataSync(), before.get('l0.wqkv')!)).toBeGreaterThan(0);
      m.dispose();
    }
  }, 30_000);

  it('fromTrunk copies a plain model’s trunk and starts the heads from its LM head; mismatched trunks are refused', () => {
    const base = createModel({ ...nano, seed: 77 });
    const m = MedusaModel.fromTrunk(base, medusa(2));
    const toks = randomTokens(12, 256, 4);
    const rows = tf.tidy(() => m.decodeLogits(toks, m.newCaches()).arraySync());
    const ref = tf.tidy(() => base.trunk.forward(tf.tensor2d([toks], [1, 12], 'int32')).dataSync());
    for (let k = 0; k <= 2; k++) expect(maxAbsDiff(rows[k].flat(), ref)).toBe(0);
    const narrow = createModel({ ...nano, nEmbd: 16 });
    expect(() => MedusaModel.fromTrunk({ config: nano, params: narrow.params }, medusa(2))).toThrow(/lacks trunk parameter 'tokEmb' of shape \[256,32\], it has \[256,16\]/);
    narrow.dispose();
    m.dispose();
    base.dispose();
  });

  it('per-head rank accuracies count where head k’s rank-i token is x[t+k+1]', async () => {
    const m = make(2);
    perturbHeads(m, 3);
    const toks = randomTokens(300, 256, 6);
    const b = batchFromWindows(toks, [0, 100, 200], nano.blockSize, 3);
    const acc = await headRankAccuracies(m, [b], 4);
    const want = [0, 1].map(() => new Array(4).fill(0));
    for (let r = 0; r < 3; r++) {
      const logits = tf.tidy(() => m.decodeLogits(Array.from(b.inputs.subarray(r * 32, (r + 1) * 32)), m.newCaches()).arraySync());
      for (let k = 1; k <= 2; k++) {
        for (let t = 0; t < 32; t++) {
          const order = logits[k][t].map((v, i) => [v, i]).sort((x, y) => y[0] - x[0]);
          const rank = order.findIndex((e) => e[1] === b.targets[k * 96 + r * 32 + t]);
          if (rank < 4) want[k - 1][rank] += 1 / 96;
        }
      }
    }
    for (let k = 0; k < 2; k++) expect(maxAbsDiff(acc[k], want[k])).toBeLessThan(1e-6);
    m.dispose();
  });
});

describe('tree posteriors on plain arrays', () => {
  // nodes: 0 root, 1 [0], 2 [1], 3 [0,0], 4 [0,1], 5 [1,0], 6 [0,0,0]; topk 2
  const buf = treeBuffers([[0], [1], [0, 0], [0, 1], [1, 0], [0, 0, 0]]);
  const tokens = treeCandidates(buf, 100, [
    [10, 11],
    [20, 21],
    [30, 31],
  ]);

  it('candidates follow the tree indices', () => {
    expect(tokens).toEqual([100, 10, 11, 20, 21, 20, 30]);
  });

  it('greedy: the longest row whose tokens are their parents’ argmax, the first on ties', () => {
    // root → 10 (node 1 ok), node 1 → 21 (node 4 ok, node 3 rejected)
    expect(greedyPosterior(buf, tokens, [10, 21, 0, 0, 0, 0, 0])).toEqual({ row: 1, accept: 2 });
    // root → 99: nothing accepted, row 0
    expect(greedyPosterior(buf, tokens, [99, 21, 20, 30, 0, 0, 0])).toEqual({ row: 0, accept: 0 });
    // root → 10, node 1 → 20, node 3 → 30: the full depth-3 row
    expect(greedyPosterior(buf, tokens, [10, 20, 0, 30, 0, 0, 0])).toEqual({ row: 0, accept: 3 });
  });

  it('typical: accept p(x) > min(ε, δ·exp(−H)); as ε → 0 every draft passes and the likeliest longest row wins', () => {
    const V = 128;
    const dist = (top: number, mass: number) => Float64Array.from({ length: V }, (_, i) => (i === top ? mass : (1 - mass) / (V - 1)));
    const probs = [dist(11, 0.6), dist(20, 0.7), dist(20, 0.5), dist(30, 0.2), dist(0, 0.9), dist(0, 0.9), dist(0, 0.9)];
    // ε = 0.09: node 1 (p = 0.4/127) and node 2 (p = 0.6) → only node 2 [1] passes at depth 1; node 5 (p = 0.5) passes too
    expect(typicalPosterior(buf, tokens, (j) => probs[j], 0.09, 0.3)).toEqual({ row: 2, accept: 2 });
    // ε → 0: all pass; two rows reach depth ≥ 2 but only row 0 reaches 3
    expect(typicalPosterior(buf, tokens, (j) => probs[j], 1e-30, 0.3)).toEqual({ row: 0, accept: 3 });
    // with depth 2 only, rows 0 ([0,0]), 1 ([0,1]) and 2 ([1,0]) tie on length: Σ log p decides — row 2 (log .6 + log .5)
    const two = treeBuffers([[0], [1], [0, 0], [0, 1], [1, 0]]);
    expect(typicalPosterior(two, tokens, (j) => probs[j], 1e-30, 0.3)).toEqual({ row: 2, accept: 2 });
  });
});

describe('Medusa tree decoding', () => {
  beforeAll(async () => {
    await initBackend('cpu');
  });

  const trees = (K: number): [string, number[][]][] => [
    ['chain', chainTree(K)],
    ['dense', denseTree(K)],
    ['sparse-63', sparseTree(K)],
    ['optimised', optimizeTree([[0.5, 0.2, 0.1], [0.3, 0.2], [0.3, 0.1, 0.1], [0.2]].slice(0, K), 12)],
  ];

  for (const seed of [31, 32, 33]) {
    it(`greedy equals plain greedy, random weights seed ${seed}, every preset tree, prompts of 1 and 40 tokens, 40 new tokens (past the 32-token window)`, async () => {
      const m = make(4, {}, { seed });
      perturbHeads(m, seed);
      let accepted = 0;
      for (const len of [1, 40]) {
        const prompt = randomTokens(len, 256, seed * 100 + len);
        const ar = await generate(m.trunk, prompt, { maxNewTokens: 40 });
        for (const [name, tree] of trees(4)) {
          const md = await medusaGenerate(m, prompt, { maxNewTokens: 40, tree });
          expect(md.tokens, `${name}, prompt ${len}`).toEqual(ar.tokens);
          expect(md.steps.reduce((a, b) => a + b, 0)).toBe(40);
          expect(md.stats.forwards).toBe(1 + md.steps.length - (md.steps[md.steps.length - 1] === 1 ? 1 : 0));
          accepted += md.stats.accepts.reduce((a, b) => a + b, 0);
        }
      }
      expect(accepted).toBeGreaterThan(0);
      m.dispose();
    }, 60_000);
  }

  it('trained heads (wasm, Medusa-2 on periodic text): high acceptance, still identical to greedy for every preset, past the window', async () => {
    await initBackend('wasm');
    const m = make(3, { frozenTrunk: false }, { seed: 5 });
    const text = new TextEncoder().encode('abcdefgh'.repeat(100) + 'the cat sat on the mat. '.repeat(40));
    const trainer = new Trainer(m, { ...nanoTrain, lr: 1e-2, batchSize: 8, steps: 60, warmupSteps: 5 }, { train: text, val: text });
    for (let i = 0; i < 60; i++) await trainer.trainStep();
    trainer.dispose();
    const prompt = Array.from(new TextEncoder().encode('abcdefghab'));
    const ar = await generate(m.trunk, prompt, { maxNewTokens: 70 });
    for (const [name, tree] of trees(3)) {
      const md = await medusaGenerate(m, prompt, { maxNewTokens: 70, tree });
      expect(md.tokens, name).toEqual(ar.tokens);
      expect(md.stats.tau, name).toBeGreaterThan(2);
    }
    m.dispose();
    await initBackend('cpu');
  }, 60_000);

  it('oracle heads: each step commits all the window allows when the tree holds the truth, one token when it does not; identical output, past the window', async () => {
    const m = make(3, {}, { seed: 8 });
    const prompt = [5, 6, 7];
    const N = 60;
    const ar = await generate(m.trunk, prompt, { maxNewTokens: N });
    const truth = [...prompt, ...ar.tokens];
    const full: number[] = []; // K + 1 tokens a step, fewer where the window or the budget ends
    for (let n = 3; n < 3 + N; n += full[full.length - 1]) full.push(Math.min(4, roomInWindow(n + 1, nano.blockSize), 3 + N - n));
    expect(full.filter((s) => s < 4).length).toBeGreaterThan(1);
    const cases: [string, number[][], number, number[]][] = [
      ['chain, truth at rank 0', chainTree(3), 0, full],
      ['chain, truth at rank 1', chainTree(3), 1, new Array(N).fill(1)],
      ['dense top-2, truth at rank 1', denseTree(3, [2]), 1, full],
    ];
    for (const [name, tree, rank, steps] of cases) {
      const md = await medusaGenerate(oracle(m, truth, 3, () => rank), prompt, { maxNewTokens: N, tree });
      expect(md.tokens, name).toEqual(ar.tokens);
      expect(md.steps, name).toEqual(steps);
      expect(md.stats.alpha, name).toEqual(rank === 0 || tree.length > 3 ? [1, 1, 1] : [0, NaN, NaN]);
    }
    // truth at rank 0, 1 or 2 by position: accepted paths through rank-1 nodes are gathered from non-contiguous K,V
    for (const [name, tree] of [['dense', denseTree(3)], ['sparse-63', sparseTree(3)]] as const) {
      const mixed = await medusaGenerate(oracle(m, truth, 3, (i, k) => (i * 7 + k * 3) % 3), prompt, { maxNewTokens: N, tree });
      expect(mixed.tokens, name).toEqual(ar.tokens);
      expect(mixed.stats.tau, name).toBeGreaterThan(1.5);
    }
    m.dispose();
  });

  it('typical acceptance: greedy at temperature 0; as ε → 0 every draft is accepted; with an unreachable threshold none is', async () => {
    const m = make(3, {}, { seed: 9 });
    perturbHeads(m, 9);
    const prompt = [1, 2, 3];
    const ar = await generate(m.trunk, prompt, { maxNewTokens: 25 });
    const tree = denseTree(3);
    const t0 = await medusaGenerate(m, prompt, { maxNewTokens: 25, tree, acceptance: 'typical', temperature: 0 });
    expect(t0.tokens).toEqual(ar.tokens);
    const all = await medusaGenerate(m, prompt, { maxNewTokens: 25, tree, acceptance: 'typical', temperature: 1, epsilon: 1e-30, seed: 4 });
    expect(all.steps).toEqual([4, 4, 4, 4, 4, 4, 1]);
    expect(all.stats.alpha).toEqual([1, 1, 1]);
    const again = await medusaGenerate(m, prompt, { maxNewTokens: 25, tree, acceptance: 'typical', temperature: 1, epsilon: 1e-30, seed: 4 });
    expect(again.tokens).toEqual(all.tokens);
    const other = await medusaGenerate(m, prompt, { maxNewTokens: 25, tree, acceptance: 'typical', temperature: 1, epsilon: 1e-30, seed: 5 });
    expect(other.tokens).not.toEqual(all.tokens);
    const none = await medusaGenerate(m, prompt, { maxNewTokens: 25, tree, acceptance: 'typical', temperature: 1, epsilon: 1, delta: 1e9 });
    expect(none.steps).toEqual(new Array(25).fill(1));
    expect(none.stats.tau).toBe(1);
    await expect(medusaGenerate(m, prompt, { maxNewTokens: 5, tree, temperature: 0.5 })).rejects.toThrow(/temperature applies to acceptance 'typical' only/);
    await expect(medusaGenerate(m, prompt, { maxNewTokens: 5, tree: chainTree(4) })).rejects.toThrow(/the tree is 4 deep but the model has 3 Medusa heads/);
    m.dispose();
  });

  it('selfSpeculative decodes a medusa model with the chain of its heads, equal to plain greedy', async () => {
    const m = make(2, {}, { seed: 10 });
    perturbHeads(m, 10);
    const prompt = randomTokens(5, 256, 10);
    const ar = await generate(m.trunk, prompt, { maxNewTokens: 40 });
    const out = await selfSpeculative(m, prompt, { maxNewTokens: 40 });
    expect(out.tokens).toEqual(ar.tokens);
    expect(out.stats.alpha.length).toBe(2);
    m.dispose();
  });

  it('leaks no tensors across generations (greedy and typical)', async () => {
    const m = make(3);
    await medusaGenerate(m, [1, 2], { maxNewTokens: 5, tree: sparseTree(3) });
    const before = tf.memory().numTensors;
    await medusaGenerate(m, [1, 2, 3], { maxNewTokens: 50, tree: sparseTree(3) });
    await medusaGenerate(m, [1, 2, 3], { maxNewTokens: 50, tree: denseTree(3), acceptance: 'typical', temperature: 0.7 });
    expect(tf.memory().numTensors).toBe(before);
    m.dispose();
  });
});

describe('self-distillation data', () => {
  beforeAll(async () => {
    await initBackend('cpu');
  });

  it('batched continuations equal plain greedy generation row by row, past the context limit', async () => {
    const m = createModel({ ...nano, seed: 12 });
    const prompts = [0, 1, 2].map((s) => randomTokens(20, 256, 40 + s));
    const rows = await generateBatch(m.trunk, prompts, 30, { temperature: 0, topK: 0, topP: 1 }, new Rng(0));
    for (let b = 0; b < 3; b++) expect(rows[b]).toEqual((await generate(m.trunk, prompts[b], { maxNewTokens: 30 })).tokens);
    m.dispose();
  });

  it('the stream is corpus prompt + the model’s continuation per sample, reproducible by seed, without leaks', async () => {
    const m = createModel({ ...nano, seed: 13 });
    const corpus = Int32Array.from(randomTokens(500, 256, 14));
    await selfDistillTokens(m.trunk, corpus, { samples: 1, promptLen: 2, newTokens: 1 });
    const before = tf.memory().numTensors;
    const done: number[] = [];
    const s = await selfDistillTokens(m.trunk, corpus, { samples: 5, promptLen: 8, newTokens: 6, batchSize: 2, seed: 3, onProgress: (d) => done.push(d) });
    expect(tf.memory().numTensors).toBe(before);
    expect(s.length).toBe(5 * 14);
    expect(done).toEqual([2, 4, 5]);
    const text = Array.from(corpus).join(',');
    for (let i = 0; i < 5; i++) {
      const prompt = Array.from(s.subarray(i * 14, i * 14 + 8));
      expect(text.includes(prompt.join(','))).toBe(true);
      expect(Array.from(s.subarray(i * 14 + 8, i * 14 + 14))).toEqual((await generate(m.trunk, prompt, { maxNewTokens: 6 })).tokens);
    }
    expect(await selfDistillTokens(m.trunk, corpus, { samples: 5, promptLen: 8, newTokens: 6, batchSize: 2, seed: 3 })).toEqual(s);
    m.dispose();
  });
});
