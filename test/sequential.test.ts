/**
 * Sequential MTP modules (DeepSeek-V3 §2.2) and their self-speculative decoder: the trunk equals the
 * plain model of the same seed; the D-module loss equals an independent float64 reference with the λ
 * schedule; greedy output equals plain greedy (random weights, several seeds, D = 1, 2, 3, past the
 * context limit) and with trained modules; τ = 1 with wrong drafts and τ = k with right ones; the
 * lagging module caches equal full forwards after every step, through rejections and window slides,
 * with greedy, sampled (speculative sampling) and unverified drafts; no tensor leaks.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { ModelConfig, resolveConfig, SequentialMtp } from '../src/config';
import { initBackend } from '../src/backend/index';
import { createModel } from '../src/model/create';
import { lambdaAt, SequentialModel } from '../src/model/sequential';
import { generate } from '../src/decode/ar';
import { SequentialSession, sequentialGenerate, StepRule } from '../src/decode/sequential';
import { emissionRule, speculativeRule } from '../src/decode/sequential_sampling';
import { selfSpeculative } from '../src/decode/speculative';
import { Trainer } from '../src/train/trainer';
import { Rng } from '../src/util/rng';
import { maxAbsDiff, randomTokens } from './helpers';

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

/** Compares a session's caches with fresh full forwards over its window (true tokens only). */
function expectCachesMatchFullForward(model: SequentialModel, s: SequentialSession): void {
  const { start, moduleEnd: E } = s;
  const truth = [...s.seq, s.next];
  const n = s.seq.length;
  expect(s.caches.trunk.length).toBe(n - start);
  const fresh = model.newCaches();
  tf.tidy(() => {
    let h = model.trunkStep(tf.tensor1d(truth.slice(start, n), 'int32'), fresh).hidden.slice([0, 0, 0], [1, E - start, -1]) as tf.Tensor3D;
    for (let l = 0; l < model.config.nLayer; l++) {
      expect(maxAbsDiff(s.caches.trunk.layer(l).k!.dataSync(), fresh.trunk.layer(l).k!.dataSync())).toBeLessThan(1e-4);
    }
    for (let m = 1; m <= s.depth; m++) {
      const cache = s.caches.extra[m - 1];
      expect(cache.length, `module ${m} cache length`).toBe(E - start);
      if (E === start) continue;
      h = model.moduleStep(m, h, tf.tensor1d(truth.slice(start + m, E + m), 'int32'), fresh).hidden;
      for (const kv of ['k', 'v'] as const) {
        expect(maxAbsDiff(cache.layer(0)[kv]!.dataSync(), fresh.extra[m - 1].layer(0)[kv]!.dataSync()), `module ${m} ${kv}, window [${start}, ${E})`).toBeLessThan(1e-4);
      }
    }
  });
  fresh.dispose();
}

/**
 * Wraps a model so module m's guess at x[i+m+1] comes from a known continuation `truth` (absolute
 * index → token): the true token where `right(index)` holds, another one elsewhere. `start` gives the
 * session's window start, to turn cache positions into absolute ones.
 */
function oracle(model: SequentialModel, truth: number[], right: (index: number) => boolean, start: () => number): SequentialModel {
  const wrapped: SequentialModel = Object.create(model);
  wrapped.moduleStep = (m, hidden, tokens, caches) => {
    const index = start() + caches.extra[m - 1].length + hidden.shape[1] + m; // x[i+m+1] for the last position i
    const out = model.moduleStep(m, hidden, tokens, caches);
    const t = truth[index] ?? 0;
    const id = right(index) ? t : (t + 1) % 256;
    return { hidden: out.hidden, last: tf.mul(tf.oneHot(tf.tensor1d([id], 'int32'), 256), 50).reshape([256]).asType('float32') as tf.Tensor1D };
  };
  return wrapped;
}

/** Decodes step by step (greedy unless a rule is given), checking the caches against full forwards after the prefill and every step. */
async function decodeChecked(model: SequentialModel, prompt: number[], newTokens: number, wrap?: (start: () => number) => SequentialModel, rule?: StepRule): Promise<SequentialSession> {
  let s: SequentialSession | undefined;
  s = new SequentialSession(wrap ? wrap(() => s!.start) : model, prompt, model.depth, rule);
  await s.prefill();
  expectCachesMatchFullForward(model, s);
  while (s.seq.length < prompt.length + newTokens) {
    await s.step(prompt.length + newTokens - s.seq.length);
    expectCachesMatchFullForward(model, s);
    // the lag n − E stays bounded (≤ D + 1 after a drafting step, one more after a step at the window's end that cannot
    // draft) except right after a window slide, which restarts the modules at the window start
    if (s.moduleEnd > s.start) expect(s.seq.length - s.moduleEnd, `n ${s.seq.length}, E ${s.moduleEnd}`).toBeLessThanOrEqual(s.depth + 2);
  }
  return s;
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

  it('τ = 1 exactly when the modules are always wrong, τ = k when always right; module work is counted apart', async () => {
    const m = make(3, { seed: 7 });
    const prompt = [5, 6, 7];
    const ar = await generate(m.trunk, prompt, { maxNewTokens: 25 });
    const truth = [...prompt, ...ar.tokens];
    const wrong = await sequentialGenerate(oracle(m, truth, () => false, () => 0), prompt, { maxNewTokens: 25 });
    expect(wrong.tokens).toEqual(ar.tokens);
    expect(wrong.stats.tau).toBe(1);
    expect(wrong.stats.alpha[0]).toBe(0);
    const right = await sequentialGenerate(oracle(m, truth, () => true, () => 0), prompt, { maxNewTokens: 25 });
    expect(right.tokens).toEqual(ar.tokens);
    expect(right.steps).toEqual([4, 4, 4, 4, 4, 4, 1]); // 24 tokens in blocks of k, the last one needs no forward
    expect(right.stats.alpha).toEqual([1, 1, 1]);
    expect(right.stats.forwards).toBe(7); // prefill + 6 verifications
    expect(right.stats.draftSteps).toBe(18); // 3 modules × 6 steps
    m.dispose();
  });

  it('module caches equal full forwards after every step: partial acceptances, rejections, window slides (D = 3)', async () => {
    const m = make(3, { seed: 8 });
    const prompt = [3, 1, 4, 1, 5];
    const ar = await generate(m.trunk, prompt, { maxNewTokens: 90 });
    const truth = [...prompt, ...ar.tokens];
    const s = await decodeChecked(m, prompt, 90, (start) => oracle(m, truth, (i) => i % 4 !== 0 && i % 7 !== 0, start));
    expect(s.seq.slice(prompt.length)).toEqual(ar.tokens);
    expect(s.accepts[0]).toBeGreaterThan(0);
    expect(s.accepts[2]).toBeGreaterThan(0);
    expect(s.accepts[0]).toBeLessThan(s.attempts[0]);
    expect(s.start).toBeGreaterThan(0);
    s.dispose();
    m.dispose();
  });

  it('sampled drafts and corrections keep the lag right: caches equal full forwards after every step under speculative sampling and unverified emission (D = 3)', async () => {
    const m = make(3, { seed: 9 });
    const T1 = { temperature: 1, topK: 0, topP: 1 };
    const s = await decodeChecked(m, [2, 7, 1, 8], 70, undefined, speculativeRule(T1, new Rng(1)));
    expect(s.accepts[0]).toBeGreaterThan(0);
    expect(s.accepts[2]).toBeGreaterThan(0);
    expect(s.accepts[0]).toBeLessThan(s.attempts[0]);
    expect(s.start).toBeGreaterThan(0);
    s.dispose();
    const u = await decodeChecked(m, [2, 7, 1, 8], 70, undefined, emissionRule(T1, new Rng(2)));
    expect(u.accepts).toEqual(u.attempts);
    u.dispose();
    m.dispose();
  });

  it('k = 1 discards the modules: plain greedy, τ = 1, no draft work; selfSpeculative routes here; k > 1 + D is refused', async () => {
    const m = make(2, { seed: 4 });
    const ar = await generate(m.trunk, [9, 8], { maxNewTokens: 20 });
    const one = await sequentialGenerate(m, [9, 8], { maxNewTokens: 20, k: 1 });
    expect(one.tokens).toEqual(ar.tokens);
    expect([one.stats.tau, one.stats.draftSteps, one.stats.attempts.length]).toEqual([1, 0, 0]);
    const viaEntry = await selfSpeculative(m, [9, 8], { maxNewTokens: 20 });
    expect(viaEntry.tokens).toEqual(ar.tokens);
    expect(viaEntry.stats.method).toBe('sequential D=2');
    await expect(sequentialGenerate(m, [1], { maxNewTokens: 3, k: 4 })).rejects.toThrow(/k must be an integer in \[1, 3\]/);
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

  it('trained modules (wasm): the loss falls, drafts are mostly accepted, output equals greedy, caches match', async () => {
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
    const s = await decodeChecked(m, Array.from(new TextEncoder().encode('the cat ')), 60);
    s.dispose();
    m.dispose();
    await initBackend('cpu');
  }, 120_000);
});
