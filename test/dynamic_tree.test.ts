/**
 * Dynamic draft trees (EAGLE-2; decode/dynamic_tree.ts) for every drafter that gives probabilities:
 * - the builder alone, on hand-made distributions: equal to a from-scratch statement of the rule (children = top
 *   ranks, expand the best `expand` per depth, keep the best `nodes` by cumulative log-probability, ties to the
 *   lower index), closed under ancestors when every score ties;
 * - speculative sampling over a sampled dynamic tree is exact: on a 5-token vocabulary with path-dependent draft
 *   and target distributions, the joint of the first three committed tokens matches exact enumeration by χ² at
 *   0.001, while ranking the drawn children by their own probability (instead of their rank's) is caught;
 * - Medusa heads, parallel heads and sequential modules on nano models, random (seeded) and lightly trained: greedy
 *   decoding with a dynamic tree equals plain greedy token for token (prompts that run past the 32-token window); every
 *   proposal equals the rule recomputed from scratch from the drafter's own distributions (fresh caches, full
 *   forwards); sampled proposals draw from those distributions; no tensor leaks;
 * - sequential modules (their distributions depend on the path) with a sampled dynamic tree: the first three tokens
 *   follow the trunk's distribution (χ² at 0.001 against exact enumeration; always-accept is caught).
 * Runs on the wasm backend.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { MTP_DEFAULTS, ModelConfig, resolveConfig } from '../src/config';
import { initBackend } from '../src/backend/index';
import { createModel, MtpModel } from '../src/model/create';
import type { SequentialModel } from '../src/model/sequential';
import { generate } from '../src/decode/ar';
import { AcceptanceRule, naiveAcceptance, speculativeAcceptance, TargetRows } from '../src/decode/acceptance';
import type { DynamicTreeOptions } from '../src/decode/drafter';
import type { ChildDraw, DraftTree } from '../src/decode/draft_tree';
import { DynamicTree } from '../src/decode/dynamic_tree';
import { decode } from '../src/decode/engine';
import { argmax, SamplingConfig, sampleIndex, samplingProbs } from '../src/decode/sampling';
import { Trainer } from '../src/train/trainer';
import { Rng } from '../src/util/rng';
import {
  checkTreeAgainst, chiSquare, exactJoint, headsDraftLogits, pathTokens, peakedConfig, ProposalRecord, randomTokens, RecordingDrafter, sequentialDraftLogits, TINY_V,
} from './helpers';

const T1: SamplingConfig = { temperature: 1, topK: 0, topP: 1 };

// ---------------------------------------------------------------------------------------------------
// The rule, stated from scratch (greedy drafting)

interface Reference {
  /** Kept nodes as token paths from the root, in creation order (depth by depth, parents in order, children by rank). */
  paths: number[][];
  /** True when a decision of the rule was a near-tie (within eps), so a float-level difference may flip it. */
  nearTie: boolean;
}

/**
 * EAGLE-2's dynamic tree from the drafter's logits at each path (`logitsAt(path)`: the distribution over the child of
 * the node reached by `path`), grown `depth` deep: children = the `branch` likeliest tokens, a node's score = the sum
 * of log-softmax along its path, each depth expands the `expand` best new nodes, the `nodes` best nodes are kept;
 * "best" = higher score, then earlier creation.
 */
function referenceTree(logitsAt: (path: number[]) => ArrayLike<number>, o: DynamicTreeOptions, depth: number, eps = 1e-4): Reference {
  const nodes: { path: number[]; score: number }[] = [{ path: [], score: 0 }];
  let nearTie = false;
  const best = (ids: number[], n: number): number[] => {
    const sorted = [...ids].sort((a, b) => nodes[b].score - nodes[a].score || a - b);
    if (sorted.length > n && n > 0 && nodes[sorted[n - 1]].score - nodes[sorted[n]].score < eps) nearTie = true;
    return sorted.slice(0, n);
  };
  let frontier = [0];
  for (let d = 1; d <= depth && frontier.length > 0; d++) {
    const born: number[] = [];
    for (const u of frontier) {
      const logits = Array.from(logitsAt(nodes[u].path));
      const m = Math.max(...logits);
      const logZ = m + Math.log(logits.reduce((s, x) => s + Math.exp(x - m), 0));
      const order = logits.map((_, t) => t).sort((a, b) => logits[b] - logits[a] || a - b);
      const width = Math.min(o.branch, logits.length);
      if (width < logits.length && logits[order[width - 1]] - logits[order[width]] < eps) nearTie = true;
      for (const t of order.slice(0, width)) {
        born.push(nodes.length);
        nodes.push({ path: [...nodes[u].path, t], score: nodes[u].score + logits[t] - logZ });
      }
    }
    frontier = d < depth ? best(born, o.expand).sort((a, b) => a - b) : [];
  }
  const all = nodes.map((_, i) => i).slice(1);
  return { paths: best(all, o.nodes).sort((a, b) => a - b).map((u) => nodes[u].path), nearTie };
}

/** The tree's nodes as token paths (root excluded), in node order. */
const treePaths = (tree: DraftTree): number[][] => tree.tokens.slice(1).map((_, i) => pathTokens(tree, i + 1));

/** Grows a DynamicTree from `logitsAt(path)` (no model), as a drafter does. */
function buildTree(root: number, logitsAt: (path: number[]) => ArrayLike<number>, o: DynamicTreeOptions, ctx: { sample: boolean; sampling: SamplingConfig; rng: Rng }): DraftTree {
  const t = new DynamicTree(root, o, ctx);
  while (t.frontier.length > 0) t.grow(t.frontier.map((u) => logitsAt(pathTokens(t, u))));
  return t.tree();
}

// ---------------------------------------------------------------------------------------------------
// A tiny world with known distributions: speculative sampling over dynamic trees

const V = 5;
const PROMPT = [2, 0, 3];

/** Fixed random logits [V] for a context: a hash of (salt, tokens) seeds an Rng. */
function contextLogits(ctx: readonly number[], salt: number, std: number): Float32Array {
  let h = 2166136261 ^ salt;
  for (const t of ctx) h = Math.imul(h ^ (t + 1), 16777619);
  return new Rng(h >>> 0).normal(V, std);
}
const targetLogits = (ctx: readonly number[]) => contextLogits(ctx, 11, 1.5);
const draftLogits = (ctx: readonly number[]) => contextLogits(ctx, 29, 1.5);

/** TargetRows at every node of `tree` below the context `ctx`. */
function targetRows(ctx: readonly number[], tree: DraftTree): TargetRows {
  const logits = tree.tokens.map((_, u) => Array.from(targetLogits([...ctx, ...pathTokens(tree, u)])));
  return { vocabSize: V, argmax: Int32Array.from(logits.map((r) => argmax(r))), logits: Float32Array.from(logits.flat()) };
}

/**
 * A deliberately wrong sampled tree: `branch` children of the root drawn without replacement from q, the `nodes`
 * likeliest of them kept by their own q (not by the rank they were drawn at), recorded as draws from q.
 */
function rankedByValue(ctx: readonly number[], o: DynamicTreeOptions, s: SamplingConfig, rng: Rng): DraftTree {
  const q = samplingProbs(draftLogits(ctx), s);
  const left = Float64Array.from(q);
  const drawn: number[] = [];
  for (let i = 0; i < o.branch; i++) {
    const mass = left.reduce((a, b) => a + b, 0);
    const t = sampleIndex(left.map((x) => x / mass), rng);
    drawn.push(t);
    left[t] = 0;
  }
  const kept = drawn.sort((a, b) => q[b] - q[a]).slice(0, o.nodes);
  const draw: ChildDraw = { kind: 'without-replacement', q };
  return { tokens: [ctx[ctx.length - 1], ...kept], parents: [-1, ...kept.map(() => 0)], draws: [draw] };
}

/** Counts [V³] of the first three tokens committed with speculative sampling over trees from `propose`. */
function firstThree(rule: AcceptanceRule, propose: (ctx: number[], rng: Rng) => DraftTree, samples: number, seed: number): number[] {
  const counts = new Array(V * V * V).fill(0);
  const rng = new Rng(seed);
  for (let i = 0; i < samples; i++) {
    const out: number[] = [];
    while (out.length < 3) {
      const ctx = [...PROMPT, ...out];
      const tree = propose(ctx, rng);
      const v = rule.accept(tree, targetRows(ctx, tree), rng);
      out.push(...v.path.slice(1).map((n) => tree.tokens[n]), v.bonus);
    }
    counts[(out[0] * V + out[1]) * V + out[2]] += 1;
  }
  return counts;
}

/** Exact P(x1, x2, x3) of sampling from the target alone. */
function exactThree(s: SamplingConfig): number[] {
  const out: number[] = [];
  const walk = (ctx: number[], p: number, left: number) => {
    if (left === 0) return void out.push(p);
    const q = samplingProbs(targetLogits(ctx), s);
    for (let x = 0; x < V; x++) walk([...ctx, x], p * q[x], left - 1);
  };
  walk([...PROMPT], 1, 3);
  return out;
}

/** Marginal of the first two tokens from a joint (or counts) of three. */
const firstTwoOf = (j3: number[]) => Array.from({ length: V * V }, (_, i) => j3.slice(i * V, (i + 1) * V).reduce((a, b) => a + b, 0));

describe('the dynamic-tree builder', () => {
  const o: DynamicTreeOptions = { depth: 3, expand: 2, branch: 3, nodes: 6 };

  it('greedy: equals the rule stated from scratch on path-dependent distributions; at most `nodes` drafts, none deeper than `depth`', () => {
    let compared = 0;
    for (let seed = 0; seed < 40; seed++) {
      const ctx = randomTokens(4, V, seed);
      const logitsAt = (path: number[]) => draftLogits([...ctx, ...path]);
      const opts = { ...o, nodes: 2 + (seed % 9) };
      const tree = buildTree(ctx[3], logitsAt, opts, { sample: false, sampling: T1, rng: new Rng(seed) });
      const ref = referenceTree(logitsAt, opts, opts.depth);
      expect(tree.tokens.length).toBeLessThanOrEqual(1 + opts.nodes);
      expect(Math.max(...treePaths(tree).map((p) => p.length))).toBeLessThanOrEqual(opts.depth);
      expect(tree.draws!.every((d) => d === undefined || d.kind === 'deterministic')).toBe(true);
      if (ref.nearTie) continue;
      expect(treePaths(tree), `seed ${seed}`).toEqual(ref.paths);
      compared += 1;
    }
    expect(compared).toBeGreaterThan(30);
  });

  it('when every score ties (uniform drafts) the kept nodes are the earliest created, and still a tree', () => {
    const flat = () => new Float32Array(V);
    const tree = buildTree(0, flat, { depth: 3, expand: 2, branch: 2, nodes: 5 }, { sample: false, sampling: T1, rng: new Rng(1) });
    // grown: depth 1 nodes 1, 2; both expanded: 3, 4 (under 1), 5, 6 (under 2); the deeper ones score lower
    expect(tree.parents).toEqual([-1, 0, 0, 1, 1, 2]);
    expect(tree.tokens).toEqual([0, 0, 1, 0, 1, 0]);
  });

  it('sampled: children are draws without replacement from q, and a node keeps its first draws', () => {
    const s: SamplingConfig = { temperature: 0.8, topK: 4, topP: 1 };
    for (let seed = 0; seed < 20; seed++) {
      const ctx = randomTokens(4, V, 100 + seed);
      const tree = buildTree(ctx[3], (path) => draftLogits([...ctx, ...path]), o, { sample: true, sampling: s, rng: new Rng(seed) });
      const res = checkTreeAgainst(tree, (u) => draftLogits([...ctx, ...pathTokens(tree, u)]), s);
      expect(res.error).toBeNull();
      tree.parents.forEach((p, u) => {
        if (u === 0) return;
        expect(p).toBeLessThan(u);
        expect(tree.draws![p]!.kind).toBe('without-replacement');
      });
      expect(tree.tokens.length).toBe(1 + o.nodes);
    }
  });

  it('rejects bad options with the field named', () => {
    expect(() => new DynamicTree(0, { ...o, expand: 0 }, { sample: false, sampling: T1, rng: new Rng(0) })).toThrow(/dynamic.expand must be an integer ≥ 1, got 0/);
    expect(() => new DynamicTree(0, { ...o, branch: 1.5 }, { sample: false, sampling: T1, rng: new Rng(0) })).toThrow(/dynamic.branch must be an integer ≥ 1, got 1.5/);
  });
});

describe('speculative sampling over sampled dynamic trees is exact (5 tokens, path-dependent q and p)', () => {
  const SAMPLES = 12000;
  for (const s of [T1, { temperature: 0.8, topK: 4, topP: 0.9 }]) {
    it(`the first three tokens follow the target (T = ${s.temperature}, top-k ${s.topK}, top-p ${s.topP}; χ² at 0.001); ranking draws by their own q is caught`, () => {
      const exact = exactThree(s);
      const o: DynamicTreeOptions = { depth: 3, expand: 2, branch: 3, nodes: 5 }; // 15 nodes grown, 5 kept
      const dynamic = (ctx: number[], rng: Rng) => buildTree(ctx[ctx.length - 1], (path) => draftLogits([...ctx, ...path]), o, { sample: true, sampling: s, rng });
      const right = chiSquare(firstThree(speculativeAcceptance(s), dynamic, SAMPLES, 7), exact, SAMPLES);
      expect(right.stat).toBeLessThan(right.critical);
      // one level, two draws, one kept: by rank (the first draw) it is exact; by value it is biased towards likely tokens
      const one: DynamicTreeOptions = { depth: 1, expand: 1, branch: 2, nodes: 1 };
      const byRank = (ctx: number[], rng: Rng) => buildTree(ctx[ctx.length - 1], (path) => draftLogits([...ctx, ...path]), one, { sample: true, sampling: s, rng });
      const fair = chiSquare(firstTwoOf(firstThree(speculativeAcceptance(s), byRank, SAMPLES, 8)), firstTwoOf(exact), SAMPLES);
      expect(fair.stat).toBeLessThan(fair.critical);
      const biased = chiSquare(firstTwoOf(firstThree(speculativeAcceptance(s), (ctx, rng) => rankedByValue(ctx, one, s, rng), SAMPLES, 8)), firstTwoOf(exact), SAMPLES);
      expect(biased.stat).toBeGreaterThan(biased.critical);
    });
  }
});

// ---------------------------------------------------------------------------------------------------
// The variants' drafters on nano models

const nano = resolveConfig('nano').model;
const nanoTrain = resolveConfig('nano').train;
const TEXT = new TextEncoder().encode('abcdefgh'.repeat(100) + 'the cat sat on the mat. '.repeat(40));

/** A few AdamW steps on periodic text, so drafts are often right (accepted paths, through later children too). */
async function quickTrain(m: MtpModel, steps: number, seed: number): Promise<void> {
  const trainer = new Trainer(m, { ...nanoTrain, lr: 1e-2, batchSize: 8, steps, warmupSteps: 5, seed }, { train: TEXT, val: TEXT });
  for (let i = 0; i < steps; i++) await trainer.trainStep();
  trainer.dispose();
}

const DYNAMIC: DynamicTreeOptions = { depth: 3, expand: 2, branch: 3, nodes: 7 }; // 15 nodes grown, 7 verified

/** Heads = their init plus noise (Medusa's start as copies of the LM head), so the heads differ from each other. */
function perturbHeads(m: MtpModel, prefix: string, seed: number): void {
  const rng = new Rng(seed);
  for (const [name, v] of m.params) {
    if (!name.startsWith(prefix)) continue;
    const noise = tf.tensor(rng.normal(v.size, 0.2), v.shape);
    v.assign(tf.add(v, noise));
    noise.dispose();
  }
}

interface Variant {
  name: string;
  make(seed: number): MtpModel;
  /** The drafter's logits at every path of a recorded proposal, from scratch (fresh caches, full forwards). */
  reference(m: MtpModel, r: ProposalRecord): (path: number[]) => ArrayLike<number>;
}

const headsReference = (m: MtpModel, r: ProposalRecord) => {
  const rows = headsDraftLogits(m, r.seq, r.windowStart, DYNAMIC.depth);
  return (path: number[]) => rows[path.length];
};

const VARIANTS: Variant[] = [
  {
    name: 'medusa',
    make: (seed) => {
      const m = createModel({ ...nano, seed, mtp: { ...MTP_DEFAULTS.medusa, heads: 3, frozenTrunk: false } });
      perturbHeads(m, 'medusa', seed);
      return m;
    },
    reference: headsReference,
  },
  { name: 'parallel heads', make: (seed) => createModel({ ...nano, seed, mtp: { ...MTP_DEFAULTS.parallel, k: 4 } }), reference: headsReference },
  {
    name: 'sequential modules',
    make: (seed) => createModel({ ...nano, seed, mtp: { ...MTP_DEFAULTS.sequential, depth: 3 } }),
    reference: (m, r) => {
      const memo = new Map<string, Float32Array>();
      return (path) => {
        const key = path.join(',');
        if (!memo.has(key)) memo.set(key, sequentialDraftLogits(m as SequentialModel, r.seq, r.windowStart, path));
        return memo.get(key)!;
      };
    },
  },
];

describe('dynamic trees on every variant', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  for (const v of VARIANTS) {
    it(`${v.name}: greedy output equals plain greedy (random and lightly trained weights, past the window); every proposal is the rule recomputed from scratch`, async () => {
      let compared = 0;
      let nearTies = 0;
      let gathers = 0;
      for (const [seed, trained] of [[1, false], [2, true]] as const) {
        const m = v.make(seed);
        if (trained) await quickTrain(m, 40, seed);
        const prompt = trained ? Array.from(new TextEncoder().encode('the cat sat on ')) : randomTokens(5, m.config.vocabSize, seed);
        const ar = await generate(m, prompt, { maxNewTokens: 60 });
        const rec = new RecordingDrafter(m.drafter({ dynamic: DYNAMIC }));
        expect(rec.name).toMatch(/dynamic tree \(depth 3, expand 2, branch 3, 7 nodes\)$/);
        const out = await decode(m, rec, prompt, { maxNewTokens: 60 });
        expect(out.tokens).toEqual(ar.tokens);
        if (trained) expect(out.stats.tau, 'τ, trained').toBeGreaterThan(1.4);
        gathers += rec.commits.filter((c) => c.path.some((j, i) => j !== i)).length; // accepted paths through later children
        expect(rec.commits.some((c) => c.reset && c.windowStart > 0)).toBe(true); // the window slid
        for (const r of rec.records) {
          const depth = Math.min(DYNAMIC.depth, r.maxDepth);
          if (r.tree.tokens.length === 1) {
            expect(r.windowStart < 0 || depth === 0 || r.seq.length - 2 < r.windowStart, `root alone at length ${r.seq.length}`).toBe(true);
            continue;
          }
          expect(r.tree.tokens.length).toBeLessThanOrEqual(1 + DYNAMIC.nodes);
          const ref = referenceTree(v.reference(m, r), DYNAMIC, depth);
          if (ref.nearTie && JSON.stringify(treePaths(r.tree)) !== JSON.stringify(ref.paths)) {
            nearTies += 1;
            continue;
          }
          expect(treePaths(r.tree), `proposal at length ${r.seq.length}`).toEqual(ref.paths);
          compared += 1;
        }
        m.dispose();
      }
      expect(compared).toBeGreaterThan(40);
      expect(nearTies).toBeLessThanOrEqual(2);
      expect(gathers).toBeGreaterThan(2);
    });
  }

  for (const v of VARIANTS) {
    it(`${v.name}: sampled dynamic trees draw from the drafter's distributions (T = 1); no tensor leaks`, async () => {
      const m = v.make(3);
      const prompt = randomTokens(6, m.config.vocabSize, 3);
      const rec = new RecordingDrafter(m.drafter({ dynamic: DYNAMIC }));
      await decode(m, rec, prompt, { maxNewTokens: 30, acceptance: speculativeAcceptance(T1), seed: 4 });
      let checked = 0;
      for (const r of rec.records) {
        if (r.tree.tokens.length === 1) continue;
        expect(r.tree.tokens.length).toBeLessThanOrEqual(1 + DYNAMIC.nodes);
        const ref = v.reference(m, r);
        const res = checkTreeAgainst(r.tree, (u) => ref(pathTokens(r.tree, u)), T1);
        expect(res.error, `proposal at length ${r.seq.length}`).toBeNull();
        checked += res.checked;
      }
      expect(checked).toBeGreaterThan(20);
      const run = (acceptance?: AcceptanceRule) => decode(m, m.drafter({ dynamic: DYNAMIC }), prompt, { maxNewTokens: 40, acceptance, seed: 5 });
      await run();
      const before = tf.memory().numTensors;
      await run();
      await run(speculativeAcceptance(T1));
      expect(tf.memory().numTensors).toBe(before);
      m.dispose();
    });
  }

  it('bad options name the drafter and the allowed values', () => {
    const medusa = VARIANTS[0].make(1);
    expect(() => medusa.drafter({ dynamic: { ...DYNAMIC, depth: 4 } })).toThrow(/medusa: the dynamic tree is 4 deep, but this model drafts at most 3 tokens ahead/);
    expect(() => medusa.drafter({ dynamic: DYNAMIC, k: 6 })).toThrow(/medusa: with a dynamic tree, k \(tokens per step\) must be an integer in \[2, 4\], got 6/);
    expect(() => medusa.drafter({ dynamic: DYNAMIC, tree: [[0]] })).toThrow(/not both/);
    const cut = medusa.drafter({ dynamic: DYNAMIC, k: 3 });
    expect(cut.maxDepth).toBe(2);
    cut.dispose();
    medusa.dispose();
    const seq = VARIANTS[2].make(1);
    expect(() => seq.drafter({ dynamic: { ...DYNAMIC, nodes: 0 } })).toThrow(/sequential modules: dynamic.nodes must be an integer ≥ 1, got 0/);
    seq.dispose();
  });
});

describe('speculative sampling with a sampled dynamic tree of sequential modules', () => {
  const cfg: ModelConfig = peakedConfig({ kind: 'sequential', depth: 2, lambda: 0.3, lambdaLate: 0.1, lambdaSwitch: 0.7 });
  const prompt = [1, 4, 2];
  const SAMPLES = 3000;
  const NAIVE_SAMPLES = 500;
  const o: DynamicTreeOptions = { depth: 2, expand: 2, branch: 3, nodes: 4 }; // 9 nodes grown, 4 verified
  let model: SequentialModel;
  beforeAll(async () => {
    await initBackend('wasm');
    model = createModel(cfg) as SequentialModel;
  });

  /** Counts of the first three tokens: the prefill samples x1, the next step's dynamic tree drafts x2, x3 (modules 1, 2). */
  async function sampleJoint3(runs: number, acceptance: AcceptanceRule): Promise<number[]> {
    const counts = new Array(TINY_V ** 3).fill(0);
    for (let i = 0; i < runs; i++) {
      const out = await decode(model, model.drafter({ dynamic: o }), prompt, { maxNewTokens: 4, acceptance, seed: 1000 + i });
      counts[(out.tokens[0] * TINY_V + out.tokens[1]) * TINY_V + out.tokens[2]] += 1;
    }
    return counts;
  }

  it(`the first three tokens follow the trunk (T = 1; χ² at 0.001, ${SAMPLES} runs); always-accept is rejected`, async () => {
    const exact = exactJoint(model.trunk, prompt, T1, 3);
    const counts = await sampleJoint3(SAMPLES, speculativeAcceptance(T1));
    const right = chiSquare(counts, exact, SAMPLES);
    expect(right.stat).toBeLessThan(right.critical);
    const naive = await sampleJoint3(NAIVE_SAMPLES, speculativeAcceptance(T1, naiveAcceptance));
    const wrong = chiSquare(naive, exact, NAIVE_SAMPLES);
    expect(wrong.stat).toBeGreaterThan(wrong.critical);
  }, 60_000);
});
