/**
 * Acceptance rules on hand-made trees and logits (no model, no tensors):
 * - greedy descends to the child that is the argmax, wherever it sits among its siblings;
 * - typical acceptance (Medusa §2.3.1): thresholds, deepest path, log-probability tie-break, greedy at T = 0;
 * - speculative sampling over trees is exact: with a synthetic target (fixed random logits per
 *   context) and trees drawn i.i.d., without replacement, deterministically (top-k, with duplicates)
 *   or as a chain, the joint distribution of the first two committed tokens matches sampling from the
 *   target alone (chi-square at significance 0.001), while always-accept and "without-replacement
 *   children judged as i.i.d." are rejected by the same test;
 * - unverified emission commits the first-child chain; the factory by name.
 */
import { describe, expect, it } from 'vitest';
import {
  ACCEPTANCE_NAMES,
  AcceptanceRule,
  acceptanceRule,
  greedyAcceptance,
  leviathanAcceptance,
  naiveAcceptance,
  speculativeAcceptance,
  TargetRows,
  TYPICAL_DEFAULTS,
  typicalAcceptance,
  typicalFilter,
  typicalThreshold,
  unverifiedAcceptance,
  Verdict,
} from '../src/decode/acceptance';
import { chain, ChildDraw, DETERMINISTIC, DraftTree } from '../src/decode/draft_tree';
import { argmax, SamplingConfig, sampleIndex, samplingProbs } from '../src/decode/sampling';
import { Rng } from '../src/util/rng';
import { chiSquare } from './helpers';

/** TargetRows from one logit row per node. */
function rows(logits: number[][]): TargetRows {
  const V = logits[0].length;
  return { vocabSize: V, argmax: Int32Array.from(logits.map((r) => argmax(r))), logits: Float32Array.from(logits.flat()) };
}

/** A logit row over V tokens that puts log-probability log(p[i]) on token i (rest 1e-9-ish). */
const logRow = (p: number[]) => p.map((x) => Math.log(Math.max(x, 1e-30)));

/** A row whose argmax is `tok` (V tokens). */
const peak = (tok: number, V = 6) => Array.from({ length: V }, (_, i) => (i === tok ? 5 : 0));

/** A random tree of n nodes over V tokens; a child takes its parent's argmax token with probability ½. */
function randomCase(seed: number, n: number, V: number): { tree: DraftTree; target: TargetRows } {
  const rng = new Rng(seed);
  const logits = Array.from({ length: n }, () => Array.from(rng.normal(V, 2)));
  const target = rows(logits);
  const tokens = [rng.int(V)];
  const parents = [-1];
  for (let i = 1; i < n; i++) {
    const u = rng.int(i);
    parents.push(u);
    tokens.push(rng.next() < 0.5 ? target.argmax[u] : rng.int(V));
  }
  return { tree: { tokens, parents }, target };
}

describe('greedy acceptance', () => {
  const rule = greedyAcceptance();

  it('accepts a whole chain of argmaxes, then the argmax after the leaf', () => {
    const tree = chain(0, [2, 3, 1]);
    expect(rule.accept(tree, rows([peak(2), peak(3), peak(1), peak(4)]), new Rng(0))).toEqual({ path: [0, 1, 2, 3], bonus: 4 });
  });

  it('stops at the first draft that is not the argmax; the bonus is the argmax there', () => {
    const tree = chain(0, [2, 3, 1]);
    expect(rule.accept(tree, rows([peak(2), peak(5), peak(1), peak(4)]), new Rng(0))).toEqual({ path: [0, 1], bonus: 5 });
    expect(rule.accept(tree, rows([peak(4), peak(3), peak(1), peak(4)]), new Rng(0))).toEqual({ path: [0], bonus: 4 });
    expect(rule.accept({ tokens: [3], parents: [-1] }, rows([peak(1)]), new Rng(0))).toEqual({ path: [0], bonus: 1 });
  });

  it('takes the child that matches, not the first child', () => {
    // root → {1: token 5, 2: token 2}; 1 → {3: token 0}; 2 → {4: token 4, 5: token 1}
    const tree: DraftTree = { tokens: [0, 5, 2, 0, 4, 1], parents: [-1, 0, 0, 1, 2, 2] };
    const target = rows([peak(2), peak(0), peak(1), peak(3), peak(3), peak(3)]);
    expect(rule.accept(tree, target, new Rng(0))).toEqual({ path: [0, 2, 5], bonus: 3 });
    expect(rule).toMatchObject({ name: 'greedy', reads: 'argmax', sampleDrafts: false, lossless: true });
  });
});

describe('typical acceptance', () => {
  // p = [.7, .2, .06, .04]: H = 0.8692 nats, δ·exp(−H) = 0.1258 at δ = 0.3, so the threshold is ε = 0.09
  const p = [0.7, 0.2, 0.06, 0.04];

  it('the threshold is min(ε, δ·exp(−H)) with H in nats; the filter keeps tokens at or above it', () => {
    const H = -p.reduce((a, x) => a + x * Math.log(x), 0);
    expect(typicalThreshold(p, 0.09, 0.3)).toBeCloseTo(0.09, 12);
    expect(typicalThreshold(p, 0.5, 0.3)).toBeCloseTo(0.3 * Math.exp(-H), 12);
    expect(typicalThreshold(p, 0.5, 0.1)).toBeCloseTo(0.04193, 4);
    const f = typicalFilter(p, 0.09, 0.3);
    [0.7 / 0.9, 0.2 / 0.9, 0, 0].forEach((x, i) => expect(f[i]).toBeCloseTo(x, 12));
    // the most likely token stays even when the threshold is above every probability
    expect([...typicalFilter([0.5, 0.5], 1, 5)]).toEqual([1, 0]);
  });

  it('an edge passes when p(token) > threshold; the deepest passing node wins', () => {
    // root → 1 (token 1, p .2) → 3 (token 2, p .06 at node 1); root → 2 (token 3, p .04)
    const tree: DraftTree = { tokens: [0, 1, 3, 2], parents: [-1, 0, 0, 1] };
    const target = rows([logRow(p), logRow(p), logRow(p), logRow(p)]);
    const strict = typicalAcceptance({ temperature: 1 }); // threshold .09: .2 passes, .06 and .04 fail
    expect(strict.accept(tree, target, new Rng(0)).path).toEqual([0, 1]);
    const loose = typicalAcceptance({ temperature: 1, epsilon: 0.5, delta: 0.1 }); // threshold .0419: .06 passes, .04 fails
    expect(loose.accept(tree, target, new Rng(0)).path).toEqual([0, 1, 3]);
    // ε out of the way, δ decides: δ = .3 → .1258 (.2 passes); δ = .5 → .2096 (.2 fails)
    expect(typicalAcceptance({ temperature: 1, epsilon: 0.5 }).accept(tree, target, new Rng(0)).path).toEqual([0, 1]);
    expect(typicalAcceptance({ temperature: 1, epsilon: 0.5, delta: 0.5 }).accept(tree, target, new Rng(0)).path).toEqual([0]);
    expect(strict).toMatchObject({ name: 'typical', reads: 'logits', sampleDrafts: false, lossless: false });
  });

  it('as ε → 0 every edge passes: the deepest node is taken (the lower index among equals)', () => {
    const V = 5;
    const tiny = typicalAcceptance({ temperature: 1, epsilon: 1e-300 });
    for (let seed = 0; seed < 50; seed++) {
      const rng = new Rng(seed);
      const n = 2 + rng.int(12);
      const tree: DraftTree = { tokens: [0], parents: [-1] };
      for (let i = 1; i < n; i++) {
        tree.parents.push(rng.int(i));
        tree.tokens.push(rng.int(V));
      }
      // equal rows: every path's Σ log p is then a function of its tokens; make all tokens equally likely
      const target = rows(Array.from({ length: n }, () => new Array(V).fill(0)));
      const depth = [0];
      for (let i = 1; i < n; i++) depth.push(depth[tree.parents[i]] + 1);
      const deepest = depth.indexOf(Math.max(...depth));
      const v = tiny.accept(tree, target, new Rng(seed));
      expect(v.path[v.path.length - 1]).toBe(deepest);
      expect(v.path.length).toBe(depth[deepest] + 1);
    }
  });

  it('between equally deep paths the larger Σ log p wins, then the lower node index', () => {
    // two depth-2 branches: 1 → 3 and 2 → 4; p(1)·p(x at 1) < p(2)·p(y at 2) although p(1) > p(2)
    const tree: DraftTree = { tokens: [0, 1, 2, 0, 0], parents: [-1, 0, 0, 1, 2] };
    const rootRow = logRow([0.1, 0.5, 0.4, 0, 0]);
    const target = rows([rootRow, logRow([0.3, 0.35, 0.35, 0, 0]), logRow([0.9, 0.05, 0.05, 0, 0]), logRow([1, 0, 0, 0, 0]), logRow([1, 0, 0, 0, 0])]);
    const rule = typicalAcceptance({ temperature: 1, epsilon: 0.01 });
    expect(rule.accept(tree, target, new Rng(0)).path).toEqual([0, 2, 4]); // .4·.9 > .5·.3
    // the same tokens in both branches with equal rows: the lower index wins
    const twin: DraftTree = { tokens: [0, 1, 1, 0, 0], parents: [-1, 0, 0, 1, 2] };
    const same = rows([rootRow, logRow([0.3, 0.35, 0.35, 0, 0]), logRow([0.3, 0.35, 0.35, 0, 0]), rootRow, rootRow]);
    expect(rule.accept(twin, same, new Rng(0)).path).toEqual([0, 1, 3]);
  });

  it('the bonus is drawn from the typical filter of the last accepted node (seeded)', () => {
    const tree = chain(0, [0]);
    const target = rows([logRow(p), logRow(p)]);
    const rule = typicalAcceptance({ temperature: 1 });
    const counts = [0, 0, 0, 0];
    const rng = new Rng(3);
    const n = 4000;
    for (let i = 0; i < n; i++) {
      const v = rule.accept(tree, target, rng);
      expect(v.path).toEqual([0, 1]);
      counts[v.bonus] += 1;
    }
    expect(counts[2] + counts[3]).toBe(0);
    expect(Math.abs(counts[0] / n - 0.7 / 0.9)).toBeLessThan(0.03);
    expect(rule.accept(tree, target, new Rng(9))).toEqual(rule.accept(tree, target, new Rng(9)));
  });

  it('at temperature 0 it is greedy acceptance, verdict for verdict, reading argmaxes only', () => {
    const rule = typicalAcceptance({ temperature: 0 });
    expect(rule).toMatchObject({ name: 'typical', reads: 'argmax', lossless: true, sampleDrafts: false });
    for (let seed = 0; seed < 200; seed++) {
      const { tree, target } = randomCase(seed, 2 + (seed % 14), 4);
      const argmaxOnly = { vocabSize: 4, argmax: target.argmax };
      expect(rule.accept(tree, argmaxOnly, new Rng(seed))).toEqual(greedyAcceptance().accept(tree, target, new Rng(seed)));
    }
  });

  it('rejects bad ε, δ and sampling settings', () => {
    expect(TYPICAL_DEFAULTS).toEqual({ epsilon: 0.09, delta: 0.3 });
    expect(() => typicalAcceptance({ temperature: 1, epsilon: -1 })).toThrow(/epsilon must be a finite number ≥ 0, got -1/);
    expect(() => typicalAcceptance({ temperature: 1, delta: NaN })).toThrow(/delta must be a finite number ≥ 0/);
    expect(() => typicalAcceptance({ temperature: -1 })).toThrow(/temperature must be ≥ 0/);
  });
});

// ---------------------------------------------------------------------------------------------------
// Speculative sampling over trees: exactness on a tiny vocabulary

const V = 5;
const PROMPT = [2, 0, 3];
const SAMPLES = 4000;

/** Fixed random logits [V] for a context: a hash of (salt, tokens) seeds an Rng. */
function contextLogits(ctx: readonly number[], salt: number, std: number): Float32Array {
  let h = 2166136261 ^ salt;
  for (const t of ctx) h = Math.imul(h ^ (t + 1), 16777619);
  return new Rng(h >>> 0).normal(V, std);
}
const targetLogits = (ctx: readonly number[]) => contextLogits(ctx, 11, 1.5);

/** How the children at one depth are drawn and how many there are. */
interface Level {
  draw: 'iid' | 'wor' | 'top' | 'dup';
  width: number;
}

/** q at a context: the drafter's own (differently seeded) logits after the sampling options. */
type Draft = (ctx: readonly number[]) => Float64Array;

/** Tokens of the `width` children of a node drawn from q, and how they were drawn. */
function drawChildren(q: Float64Array, level: Level, rng: Rng): { tokens: number[]; draw: ChildDraw } {
  const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => q[b] - q[a] || a - b);
  switch (level.draw) {
    case 'iid':
      return { tokens: Array.from({ length: level.width }, () => sampleIndex(q, rng)), draw: { kind: 'iid', q } };
    case 'wor': {
      const left = Float64Array.from(q);
      const tokens: number[] = [];
      for (let i = 0; i < level.width; i++) {
        const mass = left.reduce((a, b) => a + b, 0);
        if (mass <= 1e-12) break;
        const t = sampleIndex(left.map((x) => x / mass), rng);
        tokens.push(t);
        left[t] = 0;
      }
      return { tokens, draw: { kind: 'without-replacement', q } };
    }
    case 'top':
      return { tokens: order.slice(0, level.width), draw: DETERMINISTIC };
    case 'dup': // top-1 twice, then the next ranks: a repeated deterministic token
      return { tokens: [order[0], ...order.slice(0, level.width - 1)], draw: DETERMINISTIC };
  }
}

/** A draft tree below the context `ctx` (its last token is the root), drawn level by level. */
function drawTree(ctx: readonly number[], levels: readonly Level[], draft: Draft, rng: Rng): { tree: DraftTree; target: TargetRows } {
  const tree: DraftTree = { tokens: [ctx[ctx.length - 1]], parents: [-1], draws: [] };
  const contexts: number[][] = [[...ctx]];
  let frontier = [0];
  for (const level of levels) {
    const next: number[] = [];
    for (const u of frontier) {
      const { tokens, draw } = drawChildren(draft(contexts[u]), level, rng);
      tree.draws![u] = draw;
      for (const t of tokens) {
        next.push(tree.tokens.length);
        tree.tokens.push(t);
        tree.parents.push(u);
        contexts.push([...contexts[u], t]);
      }
    }
    frontier = next;
  }
  const logits = contexts.map((c) => Array.from(targetLogits(c)));
  return { tree, target: rows(logits) };
}

/** Counts [V·V] of the first two tokens a decoder commits with `rule`, steps continuing until two are committed. */
function firstTwo(rule: AcceptanceRule, levels: readonly Level[], draft: Draft, seed: number, relabel?: (t: DraftTree) => DraftTree): number[] {
  const counts = new Array(V * V).fill(0);
  const rng = new Rng(seed);
  for (let i = 0; i < SAMPLES; i++) {
    const out: number[] = [];
    while (out.length < 2) {
      const { tree, target } = drawTree([...PROMPT, ...out], levels, draft, rng);
      const v: Verdict = rule.accept(relabel ? relabel(tree) : tree, target, rng);
      out.push(...v.path.slice(1).map((n) => tree.tokens[n]), v.bonus);
    }
    counts[out[0] * V + out[1]] += 1;
  }
  return counts;
}

/** Exact P(x1, x2) of sampling two tokens from the target alone. */
function exactTwo(s: SamplingConfig): number[] {
  const p1 = samplingProbs(targetLogits(PROMPT), s);
  const joint: number[] = [];
  for (let a = 0; a < V; a++) {
    const p2 = samplingProbs(targetLogits([...PROMPT, a]), s);
    for (let b = 0; b < V; b++) joint.push(p1[a] * p2[b]);
  }
  return joint;
}

const draftOf = (s: SamplingConfig, std: number, salt = 29): Draft => (ctx) => samplingProbs(contextLogits(ctx, salt, std), s);

describe('speculative sampling over trees', () => {
  const settings: SamplingConfig[] = [
    { temperature: 1, topK: 0, topP: 1 },
    { temperature: 0.8, topK: 4, topP: 0.9 },
  ];
  const shapes: [string, Level[]][] = [
    ['a chain drawn from q (Leviathan)', [{ draw: 'iid', width: 1 }, { draw: 'iid', width: 1 }, { draw: 'iid', width: 1 }]],
    ['children drawn i.i.d. (SpecInfer)', [{ draw: 'iid', width: 3 }, { draw: 'iid', width: 2 }]],
    ['children drawn without replacement', [{ draw: 'wor', width: 3 }, { draw: 'wor', width: 2 }]],
    ['deterministic top-k children', [{ draw: 'top', width: 3 }, { draw: 'top', width: 2 }]],
    ['deterministic children with a repeated token, then sampled', [{ draw: 'dup', width: 3 }, { draw: 'wor', width: 2 }]],
  ];

  it('the exact joint is what sampling from the target gives (sanity of the harness)', () => {
    const s = settings[0];
    const exact = exactTwo(s);
    expect(exact.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
    // plain sampling from the target, no drafts: a root-only tree every step
    const counts = firstTwo(speculativeAcceptance(s), [], draftOf(s, 1), 5);
    const chi = chiSquare(counts, exact, SAMPLES);
    expect(chi.stat).toBeLessThan(chi.critical);
  });

  for (const s of settings) {
    for (const [label, levels] of shapes) {
      it(`${label}: the first two tokens follow the target (T = ${s.temperature}, top-k ${s.topK}, top-p ${s.topP})`, () => {
        const exact = exactTwo(s);
        const counts = firstTwo(speculativeAcceptance(s), levels, draftOf(s, 1.5), 17);
        const chi = chiSquare(counts, exact, SAMPLES);
        expect(chi.stat).toBeLessThan(chi.critical);
      });
    }
  }

  it('the test has power: always-accept is rejected on a chain and on a tree', () => {
    const s = settings[0];
    const exact = exactTwo(s);
    for (const levels of [shapes[0][1], shapes[2][1]]) {
      const chi = chiSquare(firstTwo(speculativeAcceptance(s, naiveAcceptance), levels, draftOf(s, 1.5), 17), exact, SAMPLES);
      expect(chi.stat).toBeGreaterThan(chi.critical);
    }
  });

  it('the test has power: children drawn without replacement but judged as i.i.d. (no q update) are rejected', () => {
    const s = settings[0];
    const exact = exactTwo(s);
    // a peaked q: judged as i.i.d., the second child "should" often repeat q's favourite (and be rejected),
    // but drawn without replacement it is another token with a small q(x), accepted almost surely
    const levels: Level[] = [{ draw: 'wor', width: 3 }];
    const draft = draftOf(s, 2, 37);
    const asIid = (t: DraftTree): DraftTree => ({ ...t, draws: t.draws?.map((d) => (d && d.kind === 'without-replacement' ? { kind: 'iid', q: d.q } : d)) });
    const right = chiSquare(firstTwo(speculativeAcceptance(s), levels, draft, 23), exact, SAMPLES);
    expect(right.stat).toBeLessThan(right.critical);
    const wrong = chiSquare(firstTwo(speculativeAcceptance(s), levels, draft, 23, asIid), exact, SAMPLES);
    expect(wrong.stat).toBeGreaterThan(wrong.critical);
  });

  it('a repeated deterministic token is never accepted after its rejection', () => {
    // root children [1, 1, 2], deterministic; p(1) = .3: the second 1 has p(1) = 0 once the first is rejected
    const tree: DraftTree = { tokens: [0, 1, 1, 2], parents: [-1, 0, 0, 0] };
    const target = rows([logRow([0.1, 0.3, 0.2, 0.4]), peak(0, 4), peak(0, 4), peak(0, 4)]);
    const rule = speculativeAcceptance({ temperature: 1 });
    const rng = new Rng(1);
    const seen = new Map<string, number>();
    const n = 6000;
    for (let i = 0; i < n; i++) {
      const v = rule.accept(tree, target, rng);
      const key = `${v.path.join('-')}:${v.path.length > 1 ? '' : v.bonus}`;
      seen.set(key, (seen.get(key) ?? 0) + 1);
    }
    expect(seen.has('0-2:')).toBe(false);
    // node 1 is accepted with p(1) = .3; node 3 with .7 · p'(2) = .7 · (.2 / .7) = .2; else the bonus is
    // drawn from p without 1 and 2, [.1, 0, 0, .4] / .5: token 0 (.1) or 3 (.4)
    expect(Math.abs((seen.get('0-1:') ?? 0) / n - 0.3)).toBeLessThan(0.02);
    expect(Math.abs((seen.get('0-3:') ?? 0) / n - 0.2)).toBeLessThan(0.02);
    expect(Math.abs((seen.get('0:3') ?? 0) / n - 0.4)).toBeLessThan(0.02);
    expect([...seen.keys()].filter((k) => k.startsWith('0:')).sort()).toEqual(['0:0', '0:3']);
  });

  it('a child whose token has q = 0 (a repeat under without-replacement) is skipped, not accepted', () => {
    // a malformed tree: token 0 twice under without-replacement; after rejecting the first, q(0) = 0
    const q = Float64Array.from([0.5, 0.5, 0, 0]);
    const tree: DraftTree = { tokens: [0, 0, 0], parents: [-1, 0, 0], draws: [{ kind: 'without-replacement', q }] };
    const target = rows([logRow([0.25, 0.25, 0.25, 0.25]), peak(0, 4), peak(0, 4)]);
    const rule = speculativeAcceptance({ temperature: 1 });
    const rng = new Rng(6);
    const bonus = [0, 0, 0, 0];
    const n = 4000;
    for (let i = 0; i < n; i++) {
      const v = rule.accept(tree, target, rng);
      expect(v.path).not.toEqual([0, 2]);
      if (v.path.length === 1) bonus[v.bonus] += 1;
    }
    // node 1 is accepted with min(1, .25/.5) = ½; else the bonus follows residual(p, q) = [0, 0, ½, ½]
    expect(Math.abs(bonus[2] / n - 0.25)).toBeLessThan(0.02);
    expect(bonus[0] + bonus[1]).toBe(0);
  });

  it('at temperature 0 it is greedy acceptance (also through the general loop), whatever the draws say', () => {
    const rule = speculativeAcceptance({ temperature: 0 });
    expect(rule).toMatchObject({ name: 'sampling', reads: 'argmax', sampleDrafts: false, lossless: true });
    const general = speculativeAcceptance({ temperature: 0 }, (p, q, x) => leviathanAcceptance(p, q, x)); // not the default: runs the loop on one-hot p
    expect(general.reads).toBe('argmax');
    for (let seed = 0; seed < 200; seed++) {
      const { tree, target } = randomCase(seed, 2 + (seed % 14), 4);
      const qs = new Rng(seed + 1);
      const q = () => samplingProbs(Array.from(qs.normal(4, 1)), { temperature: 1, topK: 0, topP: 1 });
      const drawOf = (i: number): ChildDraw | undefined => [undefined, { kind: 'iid', q: q() } as const, { kind: 'without-replacement', q: q() } as const][i % 3];
      const draws = tree.tokens.map((_, i) => drawOf(i));
      const want = greedyAcceptance().accept(tree, target, new Rng(0));
      const argmaxOnly = { vocabSize: 4, argmax: target.argmax };
      expect(rule.accept({ ...tree, draws }, argmaxOnly, new Rng(seed))).toEqual(want);
      expect(general.accept(tree, argmaxOnly, new Rng(seed))).toEqual(want);
    }
  });

  it('flags and seeding: lossless only with the Leviathan test; the same seed repeats a verdict', () => {
    expect(speculativeAcceptance({ temperature: 0.7 })).toMatchObject({ name: 'sampling', reads: 'logits', sampleDrafts: true, lossless: true });
    expect(speculativeAcceptance({ temperature: 0.7 }, naiveAcceptance).lossless).toBe(false);
    expect(speculativeAcceptance({}).sampling).toEqual({ temperature: 1, topK: 0, topP: 1 });
    const s = settings[1];
    const { tree, target } = drawTree(PROMPT, shapes[2][1], draftOf(s, 1.5), new Rng(4));
    const rule = speculativeAcceptance(s);
    expect(rule.accept(tree, target, new Rng(8))).toEqual(rule.accept(tree, target, new Rng(8)));
    expect(() => rule.accept(tree, { vocabSize: V, argmax: target.argmax }, new Rng(0))).toThrow(/needs the target's logit rows/);
  });
});

describe('unverified acceptance', () => {
  it('commits the whole first-child chain unchecked; the bonus is the argmax after it at T = 0', () => {
    const rule = unverifiedAcceptance({});
    expect(rule).toMatchObject({ name: 'unverified', reads: 'argmax', lossless: false, sampleDrafts: false });
    // root → {1: token 5 → 3: token 4 → 5: token 1, 2: token 2 → 4: token 0}; the target agrees with none of it
    const tree: DraftTree = { tokens: [0, 5, 2, 4, 0, 1], parents: [-1, 0, 0, 1, 2, 3] };
    const target = rows([peak(2), peak(0), peak(0), peak(3), peak(3), peak(1)]);
    expect(rule.accept(tree, { vocabSize: 6, argmax: target.argmax }, new Rng(0))).toEqual({ path: [0, 1, 3, 5], bonus: 1 });
    expect(rule.accept({ tokens: [4], parents: [-1] }, rows([peak(3)]), new Rng(0))).toEqual({ path: [0], bonus: 3 });
  });

  it('at T > 0 the bonus is sampled from the target after the leaf', () => {
    const rule = unverifiedAcceptance({ temperature: 1, topK: 2 });
    expect(rule).toMatchObject({ reads: 'logits', sampleDrafts: true, lossless: false });
    const tree = chain(0, [1, 2]);
    const target = rows([peak(0, 4), peak(0, 4), logRow([0.1, 0.5, 0.1, 0.3])]);
    const counts = [0, 0, 0, 0];
    const rng = new Rng(2);
    for (let i = 0; i < 3000; i++) {
      const v = rule.accept(tree, target, rng);
      expect(v.path).toEqual([0, 1, 2]);
      counts[v.bonus] += 1;
    }
    expect(counts[0] + counts[2]).toBe(0);
    expect(Math.abs(counts[1] / 3000 - 0.625)).toBeLessThan(0.03);
  });
});

describe('acceptanceRule by name', () => {
  it('builds each rule with its sampling options', () => {
    expect(ACCEPTANCE_NAMES).toEqual(['greedy', 'typical', 'sampling', 'unverified']);
    expect(acceptanceRule('greedy')).toMatchObject({ name: 'greedy', lossless: true, reads: 'argmax' });
    expect(acceptanceRule('typical')).toMatchObject({ name: 'typical', reads: 'argmax', lossless: true });
    const warm = acceptanceRule('typical', { temperature: 0.7, topK: 8 });
    expect(warm).toMatchObject({ reads: 'logits', lossless: false, sampling: { temperature: 0.7, topK: 8, topP: 1 } });
    expect(acceptanceRule('sampling')).toMatchObject({ name: 'sampling', lossless: true, sampleDrafts: true, sampling: { temperature: 1, topK: 0, topP: 1 } });
    expect(acceptanceRule('sampling', { temperature: 0 })).toMatchObject({ reads: 'argmax', sampleDrafts: false });
    expect(acceptanceRule('unverified', { temperature: 0.5 })).toMatchObject({ name: 'unverified', lossless: false, reads: 'logits' });
    // ε and δ reach typical acceptance: with ε → 0 the low-probability chain is accepted
    const tree = chain(0, [3]);
    const target = rows([logRow([0.7, 0.2, 0.06, 0.04]), logRow([1, 0, 0, 0])]);
    expect(acceptanceRule('typical', { temperature: 1 }).accept(tree, target, new Rng(0)).path).toEqual([0]);
    expect(acceptanceRule('typical', { temperature: 1 }, { epsilon: 1e-6 }).accept(tree, target, new Rng(0)).path).toEqual([0, 1]);
  });

  it('clear errors: an unknown name lists the allowed ones; greedy cannot sample', () => {
    expect(() => acceptanceRule('medusa' as never)).toThrow(/acceptance must be one of 'greedy', 'typical', 'sampling', 'unverified'; got "medusa"/);
    expect(() => acceptanceRule('greedy', { temperature: 0.8 })).toThrow(/'greedy' is deterministic.*use 'sampling' \(lossless\) or 'typical'/);
    expect(() => acceptanceRule('sampling', { topP: 0 })).toThrow(/topP must be in \(0, 1\]/);
  });
});
