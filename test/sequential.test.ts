/**
 * Sequential MTP modules (DeepSeek-V3 §2.2) and their self-speculative decoder: the trunk equals the
 * plain model of the same seed; the D-module loss equals an independent float64 reference with the λ
 * schedule; greedy output equals plain greedy (random weights, several seeds, D = 1, 2, 3, past the
 * context limit) and with trained modules; with an oracle drafter on the sequential model the engine's
 * steps and statistics are exact (τ = 1 with wrong drafts, steps [k, …, k, 1] with right ones, partial
 * acceptance, window ends); every chain and tree the modules drafter proposes equals a from-scratch
 * recomputation (fresh caches: trunk over the window, then module m over positions [W, L − 2] reading
 * the token m places ahead), through partial acceptances, rejections and window slides, with greedy,
 * sampled (speculative sampling) and unverified drafts; module work is counted apart; no tensor leaks.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { ModelConfig, resolveConfig, SequentialMtp } from '../src/config';
import { initBackend } from '../src/backend/index';
import { createModel } from '../src/model/create';
import { lambdaAt, SequentialModel } from '../src/model/sequential';
import { generate } from '../src/decode/ar';
import { AcceptanceRule, speculativeAcceptance, unverifiedAcceptance } from '../src/decode/acceptance';
import { windowStart } from '../src/decode/context';
import { selfSpeculative, sequentialGenerate } from '../src/decode/decoders';
import { treeChildren, treeDepths } from '../src/decode/draft_tree';
import { decode } from '../src/decode/engine';
import { GREEDY } from '../src/decode/sampling';
import { denseTree, TreeChoices } from '../src/decode/tree';
import { Trainer } from '../src/train/trainer';
import { Rng } from '../src/util/rng';
import {
  checkTreeAgainst, greedyTruth, maxAbsDiff, OracleDrafter, oraclePlan, pathTokens, randomTokens, RecordingDrafter, sequentialDraftLogits,
} from './helpers';

const nano = resolveConfig('nano').model;
const seqMtp = (depth: number, extra: Partial<SequentialMtp> = {}): SequentialMtp => ({ kind: 'sequential', depth, lambda: 0.3, lambdaLate: 0.1, lambdaSwitch: 0.7, ...extra });
const cfgD = (depth: number, model: Partial<ModelConfig> = {}): ModelConfig => ({ ...nano, ...model, mtp: seqMtp(depth) });
const make = (depth: number, model: Partial<ModelConfig> = {}) => createModel(cfgD(depth, model)) as SequentialModel;

/** B rows of T inputs with k = 1 + D target rows (row j = x[t+j+1]) from a random stream. */
function batch(k: number, B: number, T: number, seed: number): { inputs: number[][]; targets: number[][][] } {
  const rows = Array.from({ length: B }, (_, b) => randomTokens(T + k, 256, seed * 10 + b));
  return { inputs: rows.map((r) => r.slice(0, T)), targets: Array.from({ length: k }, (_, j) => rows.map((r) => r.slice(j + 1, j + 1 + T))) };
}

/** Float64 reference of L_main and every Lᵐ, from the parameter values and the formulas of DeepSeek-V3 §2.2. */
function referenceLosses(model: SequentialModel, inputs: number[][], targets: number[][][]): number[] {
  const P = (n: string) => Array.from(model.params.get(n)!.dataSync());
  const { nEmbd: C, nHead: H, normEps: eps, vocabSize: V } = model.config;
  const matmul = (x: number[][], w: number[], cols: number) => x.map((r) => Array.from({ length: cols }, (_, j) => r.reduce((s, v, i) => s + v * w[i * cols + j], 0)));
  const add = (a: number[][], b: number[][]) => a.map((r, i) => r.map((v, j) => v + b[i][j]));
  const ln = (x: number[][], g: number[], b: number[]) =>
    x.map((r) => {
      const mu = r.reduce((s, v) => s + v, 0) / C;
      const sd = Math.sqrt(r.reduce((s, v) => s + (v - mu) ** 2, 0) / C + eps);
      return r.map((v, i) => ((v - mu) / sd) * g[i] + b[i]);
    });
  const rms = (x: number[][], g: number[]) => x.map((r) => r.map((v, i) => (v / Math.sqrt(r.reduce((s, u) => s + u * u, 0) / C + eps)) * g[i]));
  const attn = (x: number[][], p: string) => {
    const qkv = matmul(x, P(`${p}wqkv`), 3 * C);
    const hs = C / H;
    const out = x.map(() => new Array(C).fill(0));
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < x.length; i++) {
        const s = Array.from({ length: i + 1 }, (_, j) => Array.from({ length: hs }, (_, d) => qkv[i][h * hs + d] * qkv[j][C + h * hs + d]).reduce((a, b) => a + b, 0) / Math.sqrt(hs));
        const mx = Math.max(...s);
        const e = s.map((v) => Math.exp(v - mx));
        const z = e.reduce((a, b) => a + b, 0);
        for (let j = 0; j <= i; j++) for (let d = 0; d < hs; d++) out[i][h * hs + d] += (e[j] / z) * qkv[j][2 * C + h * hs + d];
      }
    }
    return matmul(out, P(`${p}wo`), C);
  };
  const block = (x: number[][], p: string) => {
    const x1 = add(x, attn(ln(x, P(`${p}ln1g`), P(`${p}ln1b`)), p));
    const hid = matmul(ln(x1, P(`${p}ln2g`), P(`${p}ln2b`)), P(`${p}w1`), 4 * C).map((r) => r.map((v, i) => v + P(`${p}b1`)[i]).map((v) => v / (1 + Math.exp(-1.702 * v))));
    return add(x1, matmul(hid, P(`${p}w2`), C).map((r) => r.map((v, i) => v + P(`${p}b2`)[i])));
  };
  const emb = (toks: number[]) => toks.map((t) => P('tokEmb').slice(t * C, (t + 1) * C));
  const ce = (h: number[][], y: number[]) =>
    matmul(ln(h, P('lnfg'), P('lnfb')), P('head'), V).reduce((s, l, t) => {
      const mx = Math.max(...l);
      return s + mx + Math.log(l.reduce((a, v) => a + Math.exp(v - mx), 0)) - l[y[t]];
    }, 0);
  const sums = new Array(1 + model.depth).fill(0);
  inputs.forEach((toks, b) => {
    let h = add(emb(toks), toks.map((_, t) => P('posEmb').slice(t * C, (t + 1) * C)));
    for (let l = 0; l < model.config.nLayer; l++) h = block(h, `l${l}.`);
    sums[0] += ce(h, targets[0][b]);
    for (let m = 1; m <= model.depth; m++) {
      const both = rms(h, P(`m${m}.hnorm`)).map((r, t) => [...r, ...rms(emb(targets[m - 1][b]), P(`m${m}.enorm`))[t]]);
      h = block(matmul(both, P(`m${m}.proj`), C), `m${m}.`);
      sums[m] += ce(h, targets[m][b]);
    }
  });
  return sums.map((s) => s / (inputs.length * inputs[0].length));
}

/**
 * A test-only, lossy rule that forces partial acceptances whatever the target says: step n accepts the
 * first pattern[n mod length] nodes of the first-child chain (fewer where the tree is shallower); the
 * bonus is the target's argmax after the last accepted node.
 */
function forcedAcceptance(pattern: number[]): AcceptanceRule {
  let n = 0;
  return {
    name: 'forced',
    reads: 'argmax',
    sampleDrafts: false,
    sampling: GREEDY,
    lossless: false,
    accept(tree, target) {
      const children = treeChildren(tree);
      const want = pattern[n++ % pattern.length];
      const path = [0];
      while (path.length <= want && children[path[path.length - 1]].length > 0) path.push(children[path[path.length - 1]][0]);
      return { path, bonus: target.argmax[path[path.length - 1]] };
    },
  };
}

/**
 * Decodes with the model's drafter wrapped in a recorder, then checks every proposal against
 * `sequentialDraftLogits` (fresh caches, full forwards over the window of the features the drafter
 * holds): each node's children are the top ranks of module d's logits along that node's path, or,
 * for sampled drafts, were drawn from q = those logits after the run's sampling options. Returns the
 * run, the recorder and the number of nodes checked.
 */
/** Runs `f` on the wasm backend (the from-scratch recomputations are many small forwards), then back to cpu. */
async function onWasm(f: () => Promise<void>): Promise<void> {
  await initBackend('wasm');
  try {
    await f();
  } finally {
    await initBackend('cpu');
  }
}

async function decodeRecorded(model: SequentialModel, prompt: number[], newTokens: number, opts: { tree?: TreeChoices; k?: number; acceptance?: AcceptanceRule; seed?: number } = {}) {
  const rec = new RecordingDrafter(model.drafter({ tree: opts.tree, k: opts.k }));
  const out = await decode(model, rec, prompt, { maxNewTokens: newTokens, acceptance: opts.acceptance, seed: opts.seed });
  let checked = 0;
  rec.records.forEach((r, i) => {
    if (i > 0) expect(r.windowStart).toBe(windowStart(rec.records[i - 1].seq.length, model.config.blockSize));
    if (r.tree.tokens.length === 1) return;
    const res = checkTreeAgainst(r.tree, (u) => sequentialDraftLogits(model, r.seq, r.windowStart, pathTokens(r.tree, u)), r.sampling);
    expect(res.error, `proposal ${i} at length ${r.seq.length}, window ${r.windowStart}`).toBeNull();
    checked += res.checked;
  });
  return { out, rec, checked };
}

describe('sequential modules', () => {
  beforeAll(async () => {
    await initBackend('cpu');
  });

  it('k = 1 + D; the trunk is the plain model of the same seed; modules add their own parameters', () => {
    const plain = createModel(nano);
    const m = make(2);
    expect(m.k).toBe(3);
    for (const [name, v] of plain.params) expect(maxAbsDiff(v.dataSync(), m.params.get(name)!.dataSync()), name).toBe(0);
    const extra = [...m.params.keys()].filter((n) => !plain.params.has(n));
    expect(extra.filter((n) => n.startsWith('m1.'))).toEqual(expect.arrayContaining(['m1.hnorm', 'm1.enorm', 'm1.proj', 'm1.wqkv']));
    expect(extra.every((n) => /^m[12]\./.test(n))).toBe(true);
    expect(m.params.get('m2.proj')!.shape).toEqual([2 * nano.nEmbd, nano.nEmbd]);
    plain.dispose();
    m.dispose();
  });

  it('λ follows the schedule: lambda before lambdaSwitch, lambdaLate after and at evaluation', () => {
    const mtp = seqMtp(1);
    expect([lambdaAt(mtp, 0), lambdaAt(mtp, 0.69), lambdaAt(mtp, 0.7), lambdaAt(mtp)]).toEqual([0.3, 0.3, 0.1, 0.1]);
  });

  for (const depth of [1, 3]) {
    it(`D = ${depth}: the loss equals a float64 reference, L_main + (λ/D)·Σ Lᵐ (tolerance 1e-4)`, () => {
      const m = make(depth);
      const rng = new Rng(3);
      tf.tidy(() => {
        // norm gains around 1 and biases around 0 instead of exactly 1 and 0, so the reference sees every parameter
        for (const [name, v] of m.params) {
          const gain = /(norm|ln[12f]g)$/.test(name);
          if (gain || /(ln[12f]b|b[12])$/.test(name)) v.assign(tf.tensor(Array.from(rng.normal(v.size, 0.3), (x) => x + (gain ? 1 : 0)), v.shape));
        }
      });
      const { inputs, targets } = batch(1 + depth, 2, 10, depth);
      const ref = referenceLosses(m, inputs, targets);
      const x = tf.tensor2d(inputs, undefined, 'int32');
      const y = tf.tensor3d(targets, undefined, 'int32');
      for (const progress of [0.2, undefined]) {
        const lambda = progress === 0.2 ? 0.3 : 0.1;
        const [total, ...heads] = tf.tidy(() => {
          const out = m.loss(x, y, progress);
          return [out.loss, ...out.heads.map((h) => h.loss)].map((t) => t.dataSync()[0]);
        });
        heads.forEach((h, i) => expect(Math.abs(h - ref[i]), `head ${i}`).toBeLessThan(1e-4));
        expect(Math.abs(total - (ref[0] + (lambda / depth) * ref.slice(1).reduce((a, b) => a + b, 0)))).toBeLessThan(1e-4);
      }
      tf.dispose([x, y]);
      m.dispose();
    });
  }

  it('the memory-efficient backward is refused with a message; the joint one reaches every parameter and leaks nothing', () => {
    const m = make(2);
    const { inputs, targets } = batch(3, 2, 8, 9);
    const x = tf.tensor2d(inputs, undefined, 'int32');
    const y = tf.tensor3d(targets, undefined, 'int32');
    expect(() => m.lossAndGrads(x, y, 'memory-efficient')).toThrow(/not available for mtp.kind 'sequential'/);
    const run = () => {
      const r = m.lossAndGrads(x, y, 'joint', 0.5);
      const zero = Object.entries(r.grads).filter(([, g]) => tf.tidy(() => tf.max(tf.abs(g)).dataSync()[0]) === 0);
      tf.dispose([r.loss, ...r.heads.flatMap((h) => [h.loss, h.acc]), ...Object.values(r.grads)]);
      return { names: Object.keys(r.grads).length, zero: zero.length };
    };
    run();
    const before = tf.memory().numTensors;
    expect(run()).toEqual({ names: m.params.size, zero: 0 });
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([x, y]);
    m.dispose();
  });
});

describe('sequential self-speculative decoding is lossless', { timeout: 30_000 }, () => {
  beforeAll(async () => {
    await initBackend('cpu');
  });

  for (const seed of [11, 12]) {
    for (const depth of [1, 2, 3]) {
      it(`random weights, seed ${seed}, D = ${depth}: equals greedy for prompts of 1, 9 and 40 tokens, 60 new tokens (past the 32-token window)`, async () => {
        const m = make(depth, { seed });
        for (const len of [1, 9, 40]) {
          const prompt = randomTokens(len, 256, seed * 100 + len);
          const ar = await generate(m.trunk, prompt, { maxNewTokens: 60 });
          const sq = await sequentialGenerate(m, prompt, { maxNewTokens: 60 });
          expect(sq.tokens).toEqual(ar.tokens);
          expect(sq.steps.reduce((a, b) => a + b, 0)).toBe(60);
        }
        m.dispose();
      });
    }
  }

  it('oracle drafts on the sequential model: τ = 1 exactly when always wrong, steps [k, …, k, 1] when always right, partial acceptance, past the window', async () => {
    const m = make(3, { seed: 7 });
    const prompt = [5, 6, 7];
    const truth = await greedyTruth(m, prompt, 80);
    const run = (n: number, rankOf?: (i: number, d: number) => number) => decode(m, new OracleDrafter(truth, 256, { depth: 3, rankOf }), prompt, { maxNewTokens: n });
    const wrong = await run(25, () => -1);
    expect(wrong.tokens).toEqual(truth.slice(3, 28));
    expect(wrong.stats.tau).toBe(1);
    expect(wrong.stats.alpha).toEqual([0]);
    const right = await run(25);
    expect(right.tokens).toEqual(truth.slice(3, 28));
    expect(right.steps).toEqual([4, 4, 4, 4, 4, 4, 1]); // 24 tokens in blocks of k (the prefill drafts too), then the last one alone
    expect(right.stats.alpha).toEqual([1, 1, 1]);
    expect(right.stats.forwards).toBe(7);
    // partial: right where the token index is not a multiple of 4 or 7, 80 tokens (past the 32-token window)
    const rankOf = (i: number) => (i % 4 !== 0 && i % 7 !== 0 ? 0 : -1);
    const partial = await run(80, rankOf);
    const plan = oraclePlan(3, 80, nano.blockSize, { depth: 3, rankOf });
    expect(partial.tokens).toEqual(truth.slice(3));
    expect(partial.steps).toEqual(plan.steps);
    expect(partial.stats.attempts).toEqual(plan.attempts);
    expect(partial.stats.accepts).toEqual(plan.accepts);
    expect(partial.stats.accepts[2]).toBeGreaterThan(0);
    expect(partial.stats.accepts[0]).toBeLessThan(partial.stats.attempts[0]);
    m.dispose();
  });

  it('the modules drafter’s chains and dense trees equal a from-scratch recomputation at every proposal, through window slides; module work is counted apart (D = 3, greedy)', async () => {
    await onWasm(async () => {
      const m = make(3, { seed: 8 });
      const prompt = [3, 1, 4, 1, 5];
      const ar = await generate(m.trunk, prompt, { maxNewTokens: 70 });
      for (const tree of [undefined, denseTree(3)]) {
        const { out, rec, checked } = await decodeRecorded(m, prompt, 70, { tree });
        expect(out.tokens).toEqual(ar.tokens);
        expect(checked).toBeGreaterThan(tree ? 300 : 100);
        expect(rec.commits.some((c) => c.reset && c.windowStart > 0)).toBe(true);
        // one module forward per draft depth of every proposal; verification forwards are the steps
        expect(out.stats.draftForwards).toBe(rec.records.reduce((a, r) => a + Math.max(...treeDepths(r.tree)), 0));
        expect(out.stats.forwards).toBe(out.steps.length);
      }
      m.dispose();
    });
  });

  it('forced partial acceptances and rejections (a lossy test rule) keep the modules drafter consistent with a from-scratch recomputation, chain and tree (D = 3)', async () => {
    await onWasm(async () => {
      const m = make(3, { seed: 8 });
      for (const tree of [undefined, denseTree(3, [2])]) {
        const { out, checked } = await decodeRecorded(m, [2, 7, 1, 8, 2, 8], 80, { tree, acceptance: forcedAcceptance([0, 1, 3, 2, 3, 0, 3, 1]) });
        expect(new Set(out.steps)).toEqual(new Set([1, 2, 3, 4]));
        expect(checked).toBeGreaterThan(tree ? 150 : 60);
      }
      m.dispose();
    });
  });

  it('sampled drafts (speculative sampling and unverified emission, T = 1): every q equals the from-scratch module distribution along the drafted path (D = 3)', async () => {
    await onWasm(async () => {
      const m = make(3, { seed: 9 });
      const T1 = { temperature: 1, topK: 0, topP: 1 };
      const sp = await decodeRecorded(m, [2, 7, 1, 8], 70, { acceptance: speculativeAcceptance(T1), seed: 1 });
      expect(sp.out.stats.accepts[0]).toBeGreaterThan(0);
      expect(sp.out.stats.accepts[0]).toBeLessThan(sp.out.stats.attempts[0]);
      expect(sp.checked).toBeGreaterThan(30);
      expect(sp.rec.records.every((r) => r.tree.tokens.length === 1 || r.tree.draws?.[0]?.kind === 'without-replacement')).toBe(true);
      const sptree = await decodeRecorded(m, [2, 7, 1, 8], 40, { tree: denseTree(2, [2]), acceptance: speculativeAcceptance({ ...T1, topK: 20 }), seed: 2 });
      expect(sptree.checked).toBeGreaterThan(30);
      const un = await decodeRecorded(m, [2, 7, 1, 8], 70, { acceptance: unverifiedAcceptance(T1), seed: 2 });
      expect(un.out.stats.accepts).toEqual(un.out.stats.attempts);
      expect(un.checked).toBeGreaterThan(30);
      m.dispose();
    });
  });

  it('k = 1 discards the modules: plain greedy, τ = 1, no draft work; selfSpeculative routes here; k > 1 + D is refused', async () => {
    const m = make(2, { seed: 4 });
    const ar = await generate(m.trunk, [9, 8], { maxNewTokens: 20 });
    const one = await sequentialGenerate(m, [9, 8], { maxNewTokens: 20, k: 1 });
    expect(one.tokens).toEqual(ar.tokens);
    expect([one.stats.tau, one.stats.draftForwards, one.stats.attempts.length]).toEqual([1, 0, 0]);
    const viaEntry = await selfSpeculative(m, [9, 8], { maxNewTokens: 20 });
    expect(viaEntry.tokens).toEqual(ar.tokens);
    expect(viaEntry.stats.method).toBe('sequential modules chain k=3 · greedy');
    // (wrapped: sequentialGenerate throws synchronously for bad options instead of rejecting)
    await expect((async () => sequentialGenerate(m, [1], { maxNewTokens: 3, k: 4 }))()).rejects.toThrow(/k \(tokens per step\) must be an integer in \[1, 3\], got 4/);
    m.dispose();
  });

  it('leaks no tensors across generations', async () => {
    const m = make(3);
    await sequentialGenerate(m, [1, 2], { maxNewTokens: 5 });
    const before = tf.memory().numTensors;
    await sequentialGenerate(m, [1, 2, 3], { maxNewTokens: 50 });
    expect(tf.memory().numTensors).toBe(before);
    m.dispose();
  });

  it('trained modules (wasm): the loss falls, drafts are mostly accepted, output equals greedy, drafts match a from-scratch recomputation', async () => {
    await initBackend('wasm');
    const m = make(2, { seed: 5 });
    const text = new TextEncoder().encode('abcdefgh'.repeat(100) + 'the cat sat on the mat. '.repeat(40));
    const trainer = new Trainer(m, { ...resolveConfig('nano').train, lr: 1e-2, batchSize: 8, steps: 80, warmupSteps: 5 }, { train: text, val: text });
    const first = await trainer.trainStep();
    let last = first;
    for (let i = 1; i < 80; i++) last = await trainer.trainStep();
    trainer.dispose();
    last.heads.forEach((h, i) => expect(h.loss, `head ${i}`).toBeLessThan(first.heads[i].loss / 2));
    const prompt = Array.from(new TextEncoder().encode('abcdefghab'));
    const ar = await generate(m.trunk, prompt, { maxNewTokens: 70 });
    for (const k of [1, 2, 3]) {
      const sq = await sequentialGenerate(m, prompt, { maxNewTokens: 70, k });
      expect(sq.tokens).toEqual(ar.tokens);
      if (k === 3) {
        expect(sq.stats.tau).toBeGreaterThan(2);
        expect(sq.stats.alpha[0]).toBeGreaterThan(0.5);
      }
    }
    const rec = await decodeRecorded(m, Array.from(new TextEncoder().encode('the cat ')), 60, { tree: denseTree(2) });
    expect(rec.out.tokens).toEqual((await generate(m.trunk, Array.from(new TextEncoder().encode('the cat ')), { maxNewTokens: 60 })).tokens);
    expect(rec.out.stats.tau).toBeGreaterThan(2);
    expect(rec.checked).toBeGreaterThan(20);
    m.dispose();
    await initBackend('cpu');
  }, 120_000);
});
