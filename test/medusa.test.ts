/**
 * Medusa heads (Cai et al. 2024) and tree decoding: zero-initialised heads are the base model's
 * next-token predictor, shifted; the Medusa-1 / Medusa-2 losses and learning rates; Medusa-1 leaves
 * the trunk bit-identical; greedy tree decoding equals plain greedy for random weights, several seeds,
 * every preset tree and generation past the context limit; the Medusa drafter's trees and chains equal
 * a from-scratch recomputation (decodeLogits rows 1..K at the last committed position); an oracle
 * drafter on the Medusa model commits K + 1 tokens a step where the tree holds the truth — also when
 * the true child is not the first one, so the KV cache is gathered from non-contiguous nodes — and one
 * token where it does not, with the exact step counts; the Medusa tree built from top-k candidates and
 * its greedy / typical posteriors on hand-worked rows; typical acceptance at temperature 0 and as
 * ε → 0; self-distillation data; no tensor leaks.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { MedusaMtp, ModelConfig, MTP_DEFAULTS, resolveConfig } from '../src/config';
import { initBackend } from '../src/backend/index';
import { batchFromWindows } from '../src/data/batch';
import { createModel } from '../src/model/create';
import { MedusaModel } from '../src/model/medusa';
import { headRankAccuracies } from '../src/eval/head_accuracy';
import { crossEntropy } from '../src/model/transformer';
import { generate } from '../src/decode/ar';
import { greedyAcceptance, TargetRows, typicalAcceptance } from '../src/decode/acceptance';
import { roomInWindow, windowStart } from '../src/decode/context';
import { medusaGenerate, selfSpeculative } from '../src/decode/decoders';
import type { CommitInfo } from '../src/decode/drafter';
import { DraftTree, treeDepths } from '../src/decode/draft_tree';
import { decode } from '../src/decode/engine';
import { HeadsDrafter } from '../src/decode/heads_drafter';
import { GREEDY } from '../src/decode/sampling';
import { chainTree, denseTree, optimizeTree, sparseTree, TreeChoices, treeBuffers } from '../src/decode/tree';
import { Trainer } from '../src/train/trainer';
import { generateBatch, selfDistillTokens } from '../src/train/self_distill';
import { Rng } from '../src/util/rng';
import { checkTreeAgainst, greedyTruth, headsDraftLogits, maxAbsDiff, OracleDrafter, oraclePlan, randomTokens, RecordingDrafter } from './helpers';

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
 * The draft tree a Medusa drafter proposes for `choices` when head d's candidates by rank are
 * candidates[d − 1] (hand-made head logits: rank r gets logit 10 − r), after the root `root`.
 */
async function medusaTree(choices: TreeChoices, root: number, candidates: number[][], V: number): Promise<DraftTree> {
  const logits = candidates.flatMap((c) => Array.from({ length: V }, (_, v) => (c.includes(v) ? 10 - c.indexOf(v) : 0)));
  const drafter = new HeadsDrafter('medusa', { heads: candidates.length, forwards: 0, logits: () => tf.tensor2d(logits, [candidates.length, V]), dispose: () => {} }, choices, V);
  await drafter.commit({} as CommitInfo); // the heads' rows at the last committed position
  const tree = drafter.propose({ seq: [root], maxDepth: candidates.length, sampling: GREEDY, sample: false, rng: new Rng(0) });
  drafter.dispose();
  return tree;
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

describe('the Medusa tree and its posteriors on hand-worked rows', () => {
  // nodes: 0 root, 1 [0], 2 [1], 3 [0,0], 4 [0,1], 5 [1,0], 6 [0,0,0]; top-2 candidates of each head
  const choices = [[0], [1], [0, 0], [0, 1], [1, 0], [0, 0, 0]];
  const candidates = [
    [10, 11],
    [20, 21],
    [30, 31],
  ];
  const V = 128;
  let tree: DraftTree;
  beforeAll(async () => {
    await initBackend('cpu');
    tree = await medusaTree(choices, 100, candidates, V);
  });
  const argmaxRows = (a: number[]): TargetRows => ({ vocabSize: V, argmax: Int32Array.from(a) });

  it('the drafter’s tree follows the Medusa tree buffers: node i takes candidates[treeIndices[i]], with the buffers’ parents', () => {
    const buf = treeBuffers(choices);
    const flat = [100, ...candidates.flat()];
    expect(tree.tokens).toEqual(buf.treeIndices.map((i) => flat[i]));
    expect(tree.tokens).toEqual([100, 10, 11, 20, 21, 20, 30]);
    expect(tree.parents).toEqual(buf.parents);
    expect(treeDepths(tree)).toEqual(buf.positions);
  });

  it('greedy: the longest path whose tokens are their parents’ argmax; the bonus is the argmax after it', () => {
    const rule = greedyAcceptance();
    // root → 10 (node 1 ok), node 1 → 21 (node 4 ok, node 3 rejected)
    expect(rule.accept(tree, argmaxRows([10, 21, 0, 0, 7, 0, 0]), new Rng(0))).toEqual({ path: [0, 1, 4], bonus: 7 });
    // root → 99: nothing accepted
    expect(rule.accept(tree, argmaxRows([99, 21, 20, 30, 0, 0, 0]), new Rng(0))).toEqual({ path: [0], bonus: 99 });
    // root → 10, node 1 → 20, node 3 → 30: the full depth-3 path; the second child of the root leads on (→ 11 → 20) too
    expect(rule.accept(tree, argmaxRows([10, 20, 0, 30, 0, 0, 5]), new Rng(0))).toEqual({ path: [0, 1, 3, 6], bonus: 5 });
    expect(rule.accept(tree, argmaxRows([11, 0, 20, 0, 0, 3, 0]), new Rng(0))).toEqual({ path: [0, 2, 5], bonus: 3 });
  });

  it('typical: accept p(x) > min(ε, δ·exp(−H)); as ε → 0 every draft passes and the likeliest longest path wins', async () => {
    const dist = (top: number, mass: number) => Array.from({ length: V }, (_, i) => Math.log(i === top ? mass : (1 - mass) / (V - 1)));
    const logits = [dist(11, 0.6), dist(20, 0.7), dist(20, 0.5), dist(30, 0.2), dist(0, 0.9), dist(0, 0.9), dist(0, 0.9)];
    const rows = (n: number): TargetRows => ({ vocabSize: V, argmax: new Int32Array(n), logits: Float32Array.from(logits.slice(0, n).flat()) });
    const typical = (epsilon: number) => typicalAcceptance({ temperature: 1, epsilon, delta: 0.3 });
    // ε = 0.09: node 1 (p = 0.4/127) fails, node 2 (p = 0.6) passes at depth 1, node 5 (p = 0.5) passes after it
    expect(typical(0.09).accept(tree, rows(7), new Rng(0)).path).toEqual([0, 2, 5]);
    // ε → 0: all pass; only the path to node 6 reaches depth 3
    expect(typical(1e-30).accept(tree, rows(7), new Rng(0)).path).toEqual([0, 1, 3, 6]);
    // depth 2 only: paths to nodes 3, 4 and 5 tie on length; Σ log p decides — node 5 (log .6 + log .5)
    const two = await medusaTree([[0], [1], [0, 0], [0, 1], [1, 0]], 100, candidates.slice(0, 2), V);
    expect(two.tokens).toEqual([100, 10, 11, 20, 21, 20]);
    expect(typical(1e-30).accept(two, rows(6), new Rng(0)).path).toEqual([0, 2, 5]);
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
          expect(md.stats.forwards).toBe(md.steps.length);
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

  it('oracle drafts on the Medusa model: each step commits all the window allows when the tree holds the truth — first child or not — one token when it does not; identical output, past the window', async () => {
    const m = make(3, {}, { seed: 8 });
    const prompt = [5, 6, 7];
    const N = 60;
    const truth = await greedyTruth(m, prompt, N);
    const full: number[] = []; // K + 1 tokens a step, fewer where the window or the budget ends
    for (let n = 3; n < 3 + N; n += full[full.length - 1]) full.push(Math.min(4, roomInWindow(n, nano.blockSize), 3 + N - n));
    expect(full.filter((s) => s < 4).length).toBeGreaterThan(1);
    const cases: [string, number, number, number[]][] = [
      // name, children per node, rank of the truth among them, steps
      ['chain, truth first', 1, 0, full],
      ['chain, truth absent', 1, 1, new Array(N).fill(1)],
      ['binary tree, truth the second child', 2, 1, full],
      ['ternary tree, truth the third child', 3, 2, full],
    ];
    for (const [name, width, rank, steps] of cases) {
      const oracle = new OracleDrafter(truth, 256, { depth: 3, width, rankOf: () => rank });
      const md = await decode(m, oracle, prompt, { maxNewTokens: N });
      expect(md.tokens, name).toEqual(truth.slice(3));
      expect(md.steps, name).toEqual(steps);
      expect(md.stats.alpha, name).toEqual(rank < width ? [1, 1, 1] : [0]);
      // accepted paths through later children are not the tree's first nodes: the cache keeps them by a gather
      if (width > 1) expect(oracle.paths.filter((p) => p.length > 1 && p.some((j, i) => j !== i)).length, name).toBe(steps.filter((x) => x > 1).length);
    }
    // truth at rank 0, 1 or absent by position: partial acceptance through non-contiguous nodes
    const rankOf = (i: number, d: number) => (i * 7 + d * 3) % 3;
    const oracle = new OracleDrafter(truth, 256, { depth: 3, width: 2, rankOf });
    const mixed = await decode(m, oracle, prompt, { maxNewTokens: N });
    const plan = oraclePlan(3, N, nano.blockSize, { depth: 3, width: 2, rankOf });
    expect(mixed.tokens).toEqual(truth.slice(3));
    expect(mixed.steps).toEqual(plan.steps);
    expect(mixed.stats.attempts).toEqual(plan.attempts);
    expect(mixed.stats.accepts).toEqual(plan.accepts);
    expect(mixed.stats.tau).toBeGreaterThan(1.5);
    expect(oracle.paths.some((p) => p.length > 1 && p.some((j, i) => j !== i))).toBe(true);
    m.dispose();
  });

  it('the Medusa drafter’s chains and dense trees equal a from-scratch recomputation (decodeLogits rows 1..K at the last committed position), through window slides', async () => {
    const m = make(3, {}, { seed: 12 });
    perturbHeads(m, 12);
    const prompt = randomTokens(6, 256, 12);
    const ar = await generate(m.trunk, prompt, { maxNewTokens: 70 });
    for (const tree of [chainTree(3), denseTree(3)]) {
      const rec = new RecordingDrafter(m.drafter({ tree }));
      const out = await decode(m, rec, prompt, { maxNewTokens: 70 });
      expect(out.tokens).toEqual(ar.tokens);
      let checked = 0;
      rec.records.forEach((r, i) => {
        if (i > 0) expect(r.windowStart).toBe(windowStart(rec.records[i - 1].seq.length, nano.blockSize));
        if (r.tree.tokens.length === 1) return;
        const depths = treeDepths(r.tree);
        const logits = headsDraftLogits(m, r.seq, r.windowStart, Math.max(...depths));
        const res = checkTreeAgainst(r.tree, (u) => logits[depths[u]], r.sampling);
        expect(res.error, `proposal ${i} at length ${r.seq.length}`).toBeNull();
        checked += res.checked;
      });
      expect(checked).toBeGreaterThan(tree.length > 3 ? 150 : 60);
      expect(rec.commits.some((c) => c.reset && c.windowStart > 0)).toBe(true);
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
    expect(all.steps).toEqual([1, 4, 4, 4, 4, 4, 4]); // the prefill has no head rows yet: one token, then K + 1 a step
    expect(all.stats.alpha).toEqual([1, 1, 1]);
    const again = await medusaGenerate(m, prompt, { maxNewTokens: 25, tree, acceptance: 'typical', temperature: 1, epsilon: 1e-30, seed: 4 });
    expect(again.tokens).toEqual(all.tokens);
    const other = await medusaGenerate(m, prompt, { maxNewTokens: 25, tree, acceptance: 'typical', temperature: 1, epsilon: 1e-30, seed: 5 });
    expect(other.tokens).not.toEqual(all.tokens);
    const none = await medusaGenerate(m, prompt, { maxNewTokens: 25, tree, acceptance: 'typical', temperature: 1, epsilon: 1, delta: 1e9 });
    expect(none.steps).toEqual(new Array(25).fill(1));
    expect(none.stats.tau).toBe(1);
    // (wrapped: medusaGenerate throws synchronously for bad options instead of rejecting)
    await expect((async () => medusaGenerate(m, prompt, { maxNewTokens: 5, tree, temperature: 0.5 }))()).rejects.toThrow(/temperature applies to acceptance 'typical' only/);
    await expect((async () => medusaGenerate(m, prompt, { maxNewTokens: 5, tree: chainTree(4) }))()).rejects.toThrow(/the tree is 4 deep, but this model drafts at most 3 tokens ahead/);
    m.dispose();
  });

  it('selfSpeculative decodes a medusa model with the chain of its heads, equal to plain greedy', async () => {
    const m = make(2, {}, { seed: 10 });
    perturbHeads(m, 10);
    const prompt = randomTokens(5, 256, 10);
    const ar = await generate(m.trunk, prompt, { maxNewTokens: 40 });
    const out = await selfSpeculative(m, prompt, { maxNewTokens: 40 });
    expect(out.tokens).toEqual(ar.tokens);
    expect(out.stats.method).toBe('medusa chain k=3 · greedy'); // both heads draft
    // every step drafts but the prefill and those with room for one token only (the window's end, the last token)
    let L = prompt.length;
    const drafting = out.steps.filter((n, i) => {
      const room = Math.min(prompt.length + 40 - L, roomInWindow(L, nano.blockSize));
      L += n;
      return i > 0 && room > 1;
    }).length;
    expect(out.stats.attempts[0]).toBe(drafting);
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
