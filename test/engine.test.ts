/**
 * The decoding engine (decode/engine.ts), across drafters and acceptance rules:
 * - tree drafts are lossless: parallel heads (k = 4), sequential modules (D = 3) and Medusa (K = 4)
 *   with denseTree(3), sparseTree(3) and chains, random and lightly trained weights, 3 seeds × prompts
 *   of 1, 9 and 40 tokens × 70 new tokens (past the 32-token window): output = plain greedy;
 * - prompt lookup: `lookupContinuations` on hand-made sequences, the lookup tree, lossless decoding with
 *   one and three branches, τ > 1 on a repeating text;
 * - a new drafter is one object: a toy drafter defined here decodes losslessly on a plain model;
 * - bad arguments give clear errors (and leak nothing);
 * - no tensor leaks over 200 mixed decodes (every decoder and rule);
 * - speculative sampling over a tree (children drawn without replacement) is exact: the joint of the
 *   first tokens the tree judges matches exact enumeration by χ² at significance 0.001 over 3000 runs,
 *   while always-accept is rejected; a seed repeats a run.
 * Runs on the wasm backend.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { ModelConfig, MTP_DEFAULTS, MtpConfig, resolveConfig } from '../src/config';
import { initBackend } from '../src/backend/index';
import { createModel, MtpModel } from '../src/model/create';
import { generate } from '../src/decode/ar';
import { AcceptanceRule, naiveAcceptance, speculativeAcceptance } from '../src/decode/acceptance';
import { lookupGenerate, medusaGenerate, selfSpeculative, speculativeSample, unverifiedGenerate } from '../src/decode/decoders';
import type { Drafter } from '../src/decode/drafter';
import { chain, DraftTree } from '../src/decode/draft_tree';
import { decode } from '../src/decode/engine';
import { lookupContinuations, PromptLookupDrafter } from '../src/decode/lookup';
import type { SamplingConfig } from '../src/decode/sampling';
import { denseTree, sparseTree, TreeChoices } from '../src/decode/tree';
import { Trainer } from '../src/train/trainer';
import { Rng } from '../src/util/rng';
import { chiSquare, exactJoint, peakedConfig, randomTokens, RecordingDrafter, TINY_V, twoOfThree } from './helpers';

const nano = resolveConfig('nano').model;
const nanoTrain = resolveConfig('nano').train;
const TEXT = new TextEncoder().encode('abcdefgh'.repeat(100) + 'the cat sat on the mat. '.repeat(40));
const bytes = (s: string) => Array.from(new TextEncoder().encode(s));

/** A few AdamW steps on periodic text: drafts become mostly right (τ ≈ 3 with k = 4). */
async function quickTrain(m: MtpModel, steps: number, seed: number): Promise<void> {
  const trainer = new Trainer(m, { ...nanoTrain, lr: 1e-2, batchSize: 8, steps, warmupSteps: 5, seed }, { train: TEXT, val: TEXT });
  for (let i = 0; i < steps; i++) await trainer.trainStep();
  trainer.dispose();
}

/** True when a committed path is not the tree's first nodes (the cache then keeps its nodes by a gather). */
const gathered = (path: number[]) => path.some((j, i) => j !== i);

describe('tree drafts are lossless on every variant', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  const variants: [string, MtpConfig][] = [
    ['parallel heads k = 4', { ...MTP_DEFAULTS.parallel, k: 4 }],
    ['sequential modules D = 3', { ...MTP_DEFAULTS.sequential, depth: 3 }],
    ['medusa K = 4', { ...MTP_DEFAULTS.medusa, heads: 4, frozenTrunk: false }],
  ];
  const shapes: [string, TreeChoices | undefined][] = [
    ['chain', undefined],
    ['dense', denseTree(3)],
    ['sparse', sparseTree(3)],
  ];

  for (const [name, mtp] of variants) {
    for (const seed of [1, 2, 3]) {
      it(`${name}, seed ${seed}: chain, denseTree(3) and sparseTree(3) equal plain greedy, random and trained weights, prompts of 1, 9 and 40 tokens, 70 new tokens`, async () => {
        const m = createModel({ ...nano, nLayer: 3, seed, mtp });
        for (const trained of [false, true]) {
          if (trained) await quickTrain(m, 40, seed);
          let tokens = 0;
          let forwards = 0;
          let gathers = 0;
          for (const len of [1, 9, 40]) {
            const prompt = randomTokens(len, 256, seed * 100 + len);
            const ar = await generate(m, prompt, { maxNewTokens: 70 });
            for (const [shape, tree] of shapes) {
              const rec = new RecordingDrafter(m.drafter(tree ? { tree } : { k: 4 }));
              const out = await decode(m, rec, prompt, { maxNewTokens: 70 });
              expect(out.tokens, `${shape}, prompt ${len}${trained ? ', trained' : ''}`).toEqual(ar.tokens);
              expect(out.steps.reduce((a, b) => a + b, 0)).toBe(70);
              expect(out.stats.forwards).toBe(out.steps.length);
              if (tree) {
                tokens += 70;
                forwards += out.stats.forwards;
                gathers += rec.commits.filter((c) => gathered(c.path)).length;
              }
            }
          }
          // trained drafts are mostly right: long accepted paths, many of them through later children
          if (trained) {
            expect(tokens / forwards, 'τ of the trees, trained').toBeGreaterThan(1.6);
            expect(gathers).toBeGreaterThan(5);
          }
        }
        m.dispose();
      });
    }
  }
});

describe('prompt lookup', () => {
  it('lookupContinuations: the longest matching suffix, most recent occurrences first, distinct continuations, clipped', () => {
    // the 3-gram [1, 2, 3] occurred at 0: what followed it, up to the depth (and the sequence's end)
    expect(lookupContinuations([1, 2, 3, 4, 1, 2, 3], 2, 3, 1)).toEqual([[4, 1]]);
    expect(lookupContinuations([1, 2, 3, 4, 1, 2, 3], 9, 3, 1)).toEqual([[4, 1, 2, 3]]);
    // the last token never occurred before: nothing
    expect(lookupContinuations([1, 2, 3, 4], 3, 3, 1)).toEqual([]);
    expect(lookupContinuations([7], 3, 3, 1)).toEqual([]);
    expect(lookupContinuations([1, 2, 1], 0, 3, 1)).toEqual([]);
    // no 3- or 2-gram match: falls back to the 1-gram [6], seen at 1
    expect(lookupContinuations([5, 6, 9, 7, 6], 2, 3, 1)).toEqual([[9, 7]]);
    // a longer match wins over a more recent shorter one
    const seq = [1, 8, 9, 4, 2, 8, 9, 6, 1, 8, 9];
    expect(lookupContinuations(seq, 2, 3, 1)).toEqual([[4, 2]]);
    expect(lookupContinuations(seq, 2, 2, 1)).toEqual([[6, 1]]);
    // branches: the most recent occurrences first; repeated continuations count once
    expect(lookupContinuations([1, 2, 1, 3, 1, 4, 1], 2, 1, 3)).toEqual([[4, 1], [3, 1], [2, 1]]);
    expect(lookupContinuations([1, 2, 1, 3, 1, 4, 1], 2, 1, 2)).toEqual([[4, 1], [3, 1]]);
    expect(lookupContinuations([1, 2, 1, 2, 1], 1, 1, 2)).toEqual([[2]]);
  });

  it('the lookup drafter merges continuations that share a prefix into one tree', () => {
    const ctx = (seq: number[], maxDepth = 4) => ({ seq, maxDepth, sampling: { temperature: 0, topK: 0, topP: 1 }, sample: false, rng: new Rng(0) });
    const tree = new PromptLookupDrafter({ k: 3, maxNgram: 1, branches: 2 }).propose(ctx([1, 5, 6, 1, 5, 7, 1]));
    expect(tree).toEqual({ tokens: [1, 5, 7, 6], parents: [-1, 0, 1, 1] });
    const three = new PromptLookupDrafter({ k: 3, maxNgram: 1, branches: 3 }).propose(ctx([1, 2, 1, 3, 1, 4, 1]));
    expect(three).toEqual({ tokens: [1, 4, 1, 3, 1, 2, 1], parents: [-1, 0, 1, 0, 3, 0, 5] });
    // the engine's depth limit applies; no match: the root alone
    expect(new PromptLookupDrafter({ k: 5 }).propose(ctx([1, 2, 3, 1, 2, 3], 1))).toEqual({ tokens: [3, 1], parents: [-1, 0] });
    expect(new PromptLookupDrafter().propose(ctx([1, 2, 3]))).toEqual({ tokens: [3], parents: [-1] });
    expect(() => new PromptLookupDrafter({ branches: 0 })).toThrow(/branches must be an integer ≥ 1, got 0/);
  });

  it('equals plain greedy with one and three branches (random weights past the window; a trained model on a repeating text, where τ > 1)', async () => {
    await initBackend('wasm');
    const m = createModel({ ...nano, seed: 21, mtp: { kind: 'none' } });
    for (const len of [1, 9, 40]) {
      const prompt = randomTokens(len, 256, 21 + len);
      const ar = await generate(m, prompt, { maxNewTokens: 70 });
      for (const branches of [1, 3]) expect((await lookupGenerate(m, prompt, { maxNewTokens: 70, k: 5, maxNgram: 3, branches })).tokens).toEqual(ar.tokens);
    }
    await quickTrain(m, 40, 21);
    const prompt = bytes('the cat sat on the mat. the cat sat on the mat. the');
    const ar = await generate(m, prompt, { maxNewTokens: 70 });
    for (const branches of [1, 3]) {
      const out = await lookupGenerate(m, prompt, { maxNewTokens: 70, k: 5, maxNgram: 3, branches });
      expect(out.tokens, `branches ${branches}`).toEqual(ar.tokens);
      expect(out.stats.tau, `branches ${branches}`).toBeGreaterThan(1.5);
      expect(out.stats.draftForwards).toBe(0);
    }
    m.dispose();
  });

  it('lookupGenerate with its options left out uses the defaults (k 5, maxNgram 3, one branch)', async () => {
    await initBackend('wasm');
    const m = createModel({ ...nano, seed: 22, mtp: { kind: 'none' } });
    const prompt = [1, 2, 3, 4, 1, 2, 3];
    const ref = await decode(m, new PromptLookupDrafter({ k: 5, maxNgram: 3, branches: 1 }), prompt, { maxNewTokens: 20 });
    const out = await (async () => lookupGenerate(m, prompt, { maxNewTokens: 20 }))();
    expect(out.tokens).toEqual(ref.tokens);
    expect(out.stats.method).toBe('prompt lookup k=5 · greedy');
    expect(new PromptLookupDrafter({ k: 3, branches: undefined }).maxDepth).toBe(2);
    m.dispose();
  });
});

describe('a new drafter is one object', () => {
  it('a toy drafter (“the last token, twice”) decodes losslessly on a plain model, its drafts verified by the engine', async () => {
    await initBackend('wasm');
    const m = createModel({ ...nano, seed: 5, mtp: { kind: 'none' } });
    const seen: number[][] = [];
    const toy: Drafter = {
      name: 'repeat twice',
      maxDepth: 2,
      draftForwards: 0,
      propose: ({ seq }) => chain(seq[seq.length - 1], [seq[seq.length - 1], seq[seq.length - 1]]),
      commit: ({ path }) => void seen.push([...path]),
      dispose: () => {},
    };
    for (const prompt of [[7], randomTokens(9, 256, 5), [3, 3, 3, 3, 3, 3, 3, 3]]) {
      seen.length = 0;
      const ar = await generate(m, prompt, { maxNewTokens: 60 });
      const out = await decode(m, toy, prompt, { maxNewTokens: 60 });
      expect(out.tokens).toEqual(ar.tokens);
      expect(out.stats.method).toBe('repeat twice · greedy');
      expect(seen.length).toBe(out.steps.length);
      expect(out.stats.attempts[0]).toBeGreaterThan(out.steps.length / 2); // the engine verified drafts at most steps
      expect(out.steps.map((n) => n - 1)).toEqual(seen.map((p) => p.length - 1));
    }
    m.dispose();
  });
});

describe('clear errors for bad arguments', () => {
  let m: MtpModel;
  beforeAll(async () => {
    await initBackend('wasm');
    m = createModel({ ...nano, mtp: { kind: 'none' } });
  });
  /** A drafter proposing `make(root)` every step. */
  const proposing = (make: (root: number) => DraftTree): Drafter => ({
    name: 'bad',
    maxDepth: 2,
    draftForwards: 0,
    propose: ({ seq }) => make(seq[seq.length - 1]),
    commit: () => {},
    dispose: () => {},
  });

  it('an empty prompt, a token outside the vocabulary, a bad length', async () => {
    const before = tf.memory().numTensors;
    await expect(decode(m, null, [], { maxNewTokens: 3 })).rejects.toThrow(/prompt must hold at least one token/);
    await expect(decode(m, null, [1, 256], { maxNewTokens: 3 })).rejects.toThrow(/prompt token 256 is outside the vocabulary \[0, 256\)/);
    await expect(decode(m, null, [1, -1], { maxNewTokens: 3 })).rejects.toThrow(/prompt token -1 is outside the vocabulary/);
    await expect(decode(m, null, [1, 2.5], { maxNewTokens: 3 })).rejects.toThrow(/prompt token 2.5 is outside the vocabulary/);
    await expect(decode(m, null, [1], { maxNewTokens: -1 })).rejects.toThrow(/maxNewTokens must be an integer ≥ 0, got -1/);
    await expect(lookupGenerate(m, [], { maxNewTokens: 3, k: 5, maxNgram: 3, branches: 1 })).rejects.toThrow(/prompt must hold at least one token/);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('a drafter proposing the wrong root, or a tree token outside the vocabulary', async () => {
    const before = tf.memory().numTensors;
    await expect(decode(m, proposing((r) => chain((r + 1) % 256, [5])), [1, 2, 3], { maxNewTokens: 5 })).rejects.toThrow(
      /drafter 'bad' proposed root 4, but the last committed token is 3/,
    );
    await expect(decode(m, proposing((r) => chain(r, [5, 300])), [1, 2, 3], { maxNewTokens: 5 })).rejects.toThrow(/node 2 holds token 300, outside the vocabulary \[0, 256\)/);
    await expect(decode(m, proposing((r) => ({ tokens: [r, 5], parents: [-1] })), [1, 2, 3], { maxNewTokens: 5 })).rejects.toThrow(/2 tokens but 1 parents/);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('a malformed tree: a parent after its child, a node its own parent, a second root', async () => {
    const before = tf.memory().numTensors;
    // node 1's parent is node 2, which comes after it
    await expect(decode(m, proposing((r) => ({ tokens: [r, 5, 6], parents: [-1, 2, 0] })), [1, 2, 3], { maxNewTokens: 5 })).rejects.toThrow(
      /node 1 has parent 2; parents must come before their children/,
    );
    await expect(decode(m, proposing((r) => ({ tokens: [r, 5], parents: [-1, 1] })), [1, 2, 3], { maxNewTokens: 5 })).rejects.toThrow(/node 1 has parent 1/);
    await expect(decode(m, proposing((r) => ({ tokens: [r, 5], parents: [-1, -1] })), [1, 2, 3], { maxNewTokens: 5 })).rejects.toThrow(/node 1 has parent -1/);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('an acceptance rule whose verdict is not a path down the tree, or whose bonus is not a token', async () => {
    const rule = (path: number[], bonus: number): AcceptanceRule => ({
      name: 'broken',
      reads: 'argmax',
      sampleDrafts: false,
      sampling: { temperature: 0, topK: 0, topP: 1 },
      lossless: false,
      accept: () => ({ path, bonus }),
    });
    const tree = proposing((r) => ({ tokens: [r, 5, 6], parents: [-1, 0, 0] }));
    await expect(decode(m, tree, [1, 2, 3], { maxNewTokens: 5, acceptance: rule([0, 1, 2], 0) })).rejects.toThrow(/the path \[0, 1, 2\] is not a root-first path down the draft tree/);
    await expect(decode(m, tree, [1, 2, 3], { maxNewTokens: 5, acceptance: rule([1], 0) })).rejects.toThrow(/not a root-first path/);
    await expect(decode(m, tree, [1, 2, 3], { maxNewTokens: 5, acceptance: rule([0], 256) })).rejects.toThrow(/bonus token 256 is outside the vocabulary/);
  });
});

describe('no tensor leaks', () => {
  it('200 mixed decodes (AR, every variant’s chain and tree, lookup, speculative sampling, typical, unverified) leave the tensor count unchanged', async () => {
    await initBackend('wasm');
    const plain = createModel({ ...nano, seed: 1, mtp: { kind: 'none' } });
    const par = createModel({ ...nano, seed: 2, mtp: { ...MTP_DEFAULTS.parallel, k: 4 } });
    const seq = createModel({ ...nano, seed: 3, mtp: { ...MTP_DEFAULTS.sequential, depth: 3 } });
    const med = createModel({ ...nano, seed: 4, mtp: { ...MTP_DEFAULTS.medusa, heads: 3 } });
    const T1 = { temperature: 1 };
    const runs: ((p: number[], n: number, s: number) => Promise<{ tokens: number[] }>)[] = [
      (p, n) => generate(plain, p, { maxNewTokens: n }),
      (p, n, s) => generate(plain, p, { maxNewTokens: n, temperature: 0.8, topK: 20, seed: s }),
      (p, n) => selfSpeculative(par, p, { maxNewTokens: n }),
      (p, n) => decode(par, par.drafter({ tree: denseTree(3) }), p, { maxNewTokens: n }),
      (p, n) => selfSpeculative(seq, p, { maxNewTokens: n }),
      (p, n) => decode(seq, seq.drafter({ tree: denseTree(3, [2]) }), p, { maxNewTokens: n }),
      (p, n) => medusaGenerate(med, p, { maxNewTokens: n, tree: sparseTree(3) }),
      (p, n, s) => medusaGenerate(med, p, { maxNewTokens: n, tree: denseTree(3), acceptance: 'typical', temperature: 0.7, seed: s }),
      (p, n) => lookupGenerate(plain, p, { maxNewTokens: n, k: 4, maxNgram: 2, branches: 3 }),
      (p, n, s) => speculativeSample(par, p, { maxNewTokens: n, ...T1, seed: s }),
      (p, n, s) => speculativeSample(seq, p, { maxNewTokens: n, ...T1, topP: 0.9, seed: s }),
      (p, n, s) => decode(par, par.drafter({ tree: denseTree(2) }), p, { maxNewTokens: n, acceptance: speculativeAcceptance(T1), seed: s }),
      (p, n) => unverifiedGenerate(med, p, { maxNewTokens: n }),
      (p, n, s) => unverifiedGenerate(seq, p, { maxNewTokens: n, ...T1, seed: s }),
    ];
    let generated = 0;
    let wanted = 0;
    const once = async (i: number) => {
      const n = 8 + (i % 13);
      wanted += n;
      generated += (await runs[i % runs.length](randomTokens(1 + ((i * 7) % 30), 256, i), n, i)).tokens.length; // prompts of 1–30: some decodes slide the window
    };
    for (let i = 0; i < runs.length; i++) await once(i); // warm-up: lazily built kernels and constants
    const before = tf.memory().numTensors;
    for (let i = 0; i < 200; i++) await once(i);
    expect(tf.memory().numTensors).toBe(before);
    expect(generated).toBe(wanted);
    for (const x of [plain, par, seq, med]) x.dispose();
  });
});

describe('speculative sampling over a draft tree', () => {
  const V = TINY_V;
  const cfg: ModelConfig = peakedConfig({ kind: 'parallel', k: 3, headLayers: 1, matchParams: false, headWeights: [] });
  const prompt = [1, 4, 2];
  const SAMPLES = 3000;
  const NAIVE_SAMPLES = 1000;
  const T1: SamplingConfig = { temperature: 1, topK: 0, topP: 1 };
  let model: MtpModel;
  beforeAll(async () => {
    await initBackend('wasm');
    model = createModel(cfg);
  });

  /** Exact P(x1, x2, x3) of sampling from the next-token head alone; P(x2, x3): the two tokens the tree's step commits (x1 comes from the prefill). */
  const exactJoint3 = (s: SamplingConfig) => exactJoint(model.trunk, prompt, s, 3);
  const lastTwo = (j3: number[]) => twoOfThree(j3, V, 'last');

  /** Counts of (x1, x2, x3) over seeded runs: the prefill samples x1, then denseTree(2) (3 × 2 children, drawn without replacement) drafts x2, x3. */
  async function sampleJoint3(runs: number, acceptance: AcceptanceRule): Promise<number[]> {
    const counts = new Array(V * V * V).fill(0);
    for (let i = 0; i < runs; i++) {
      const out = await decode(model, model.drafter({ tree: denseTree(2) }), prompt, { maxNewTokens: 4, acceptance, seed: 1000 + i });
      counts[(out.tokens[0] * V + out.tokens[1]) * V + out.tokens[2]] += 1;
    }
    return counts;
  }

  it('the tree is drafted by sampling: 9 nodes, children drawn without replacement from the heads', async () => {
    const rec = new RecordingDrafter(model.drafter({ tree: denseTree(2) }));
    await decode(model, rec, prompt, { maxNewTokens: 4, acceptance: speculativeAcceptance(T1), seed: 1 });
    const r = rec.records[1]; // the prefill proposes the root alone (no head rows yet)
    expect(r.tree.tokens).toHaveLength(10);
    expect(r.tree.parents).toEqual([-1, 0, 0, 0, 1, 1, 2, 2, 3, 3]);
    expect(r.tree.draws?.[0]?.kind).toBe('without-replacement');
    expect(new Set(r.tree.tokens.slice(1, 4)).size).toBe(3);
  });

  for (const setting of [
    { temperature: 1, topK: 0, topP: 1 },
    { temperature: 0.7, topK: 4, topP: 0.95 },
  ]) {
    it(`the two tokens the tree commits, and the first three, follow the target (T = ${setting.temperature}, top-k ${setting.topK}, top-p ${setting.topP}; χ² at 0.001, ${SAMPLES} runs); always-accept is rejected`, async () => {
      const exact3 = exactJoint3(setting);
      const counts3 = await sampleJoint3(SAMPLES, speculativeAcceptance(setting));
      const two = chiSquare(lastTwo(counts3), lastTwo(exact3), SAMPLES);
      expect(two.stat).toBeLessThan(two.critical);
      const three = chiSquare(counts3, exact3, SAMPLES);
      expect(three.stat).toBeLessThan(three.critical);
      const naive = await sampleJoint3(NAIVE_SAMPLES, speculativeAcceptance(setting, naiveAcceptance));
      const wrong = chiSquare(lastTwo(naive), lastTwo(exact3), NAIVE_SAMPLES);
      expect(wrong.stat).toBeGreaterThan(wrong.critical);
    }, 120_000);
  }

  it('the same seed repeats a run exactly; another seed differs', async () => {
    const run = (seed: number) => decode(model, model.drafter({ tree: denseTree(2) }), prompt, { maxNewTokens: 30, acceptance: speculativeAcceptance(T1), seed });
    const a = await run(3);
    const b = await run(3);
    const c = await run(4);
    expect(a.tokens).toEqual(b.tokens);
    expect(a.steps).toEqual(b.steps);
    expect(a.tokens).not.toEqual(c.tokens);
    expect(a.stats.accepts[0]).toBeGreaterThan(0);
  });
});
