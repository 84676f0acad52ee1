/**
 * Acceptance rules: pure functions of (the target's outputs at the tree's nodes, the draft tree, a
 * seeded Rng) that return the accepted path from the root and the bonus token committed after it.
 * The decoding engine (decode/engine.ts) runs one verification forward over the tree and hands the
 * rows here; nothing in a rule touches tensors, so each is tested on hand-made logits.
 *
 * - greedy (lossless): descend while a child is the target's argmax (Stern et al. 2018; Medusa's
 *   greedy posterior);
 * - typical (lossy at T > 0): Medusa's typical acceptance (Cai et al. 2024, §2.3.1);
 * - sampling (lossless at T > 0): speculative sampling (Leviathan et al. 2023; Chen et al. 2023),
 *   over trees as in SpecInfer (Miao et al. 2024, i.i.d. children) and multi-candidate speculative
 *   decoding (Yang et al. 2024, children drawn without replacement);
 * - unverified (lossy): commit the first-child chain unchecked, for contrast.
 * `acceptanceRule(name, sampling)` builds any of them by name.
 */
import type { Rng } from '../util/rng';
import type { ChildDraw, DraftTree } from './draft_tree';
import { DETERMINISTIC } from './draft_tree';
import { chooseToken, resolveSampling, sampleIndex, SamplingConfig, samplingProbs } from './sampling';

/** The target model's outputs at every tree node, read to the host in one read. */
export interface TargetRows {
  /** V. */
  vocabSize: number;
  /** [N] argmax of the target logits at each node (first index on ties). */
  argmax: Int32Array;
  /** [N·V] the raw target logits at each node; present when the rule `reads` 'logits'. */
  logits?: Float32Array;
}

/** What a rule decides for one step. */
export interface Verdict {
  /** Accepted nodes from the root: path[0] = 0, then one node per accepted depth. */
  path: number[];
  /** The token committed after the last accepted node (the next step's root). */
  bonus: number;
}

export type AcceptanceName = 'greedy' | 'typical' | 'sampling' | 'unverified';

export interface AcceptanceRule {
  readonly name: AcceptanceName | string;
  /** What the engine must read from the device: argmaxes only, or full logit rows. */
  readonly reads: 'argmax' | 'logits';
  /** True when drafters should draw children from their distribution q (speculative sampling at T > 0). */
  readonly sampleDrafts: boolean;
  /** The sampling options the rule applies to the target (and drafters to q). */
  readonly sampling: SamplingConfig;
  /** True when the output equals the target's own decoding with `sampling` (greedy; sampling in distribution). */
  readonly lossless: boolean;
  accept(tree: DraftTree, target: TargetRows, rng: Rng): Verdict;
}

/** Children of each node, in index order. */
function childrenOf(tree: DraftTree): number[][] {
  const c: number[][] = tree.parents.map(() => []);
  for (let i = 1; i < tree.parents.length; i++) c[tree.parents[i]].push(i);
  return c;
}

/** The raw target logits [V] after `node` (a view into target.logits); a clear error when they were not read. */
function logitsAt(target: TargetRows, node: number, rule: string): Float32Array {
  if (!target.logits) throw new Error(`acceptance '${rule}': needs the target's logit rows, but only argmaxes were read`);
  const V = target.vocabSize;
  return target.logits.subarray(node * V, (node + 1) * V);
}

/** p renormalised to sum 1, or null when it has no mass left. */
function normalised(p: Float64Array): Float64Array | null {
  let sum = 0;
  for (let i = 0; i < p.length; i++) sum += p[i];
  if (!(sum > 0)) return null;
  for (let i = 0; i < p.length; i++) p[i] /= sum;
  return p;
}

/** A copy of p with token x removed, renormalised; null when nothing is left. */
function without(p: ArrayLike<number>, x: number): Float64Array | null {
  const r = Float64Array.from(p);
  r[x] = 0;
  return normalised(r);
}

/** The point mass on token x over V tokens: the q of a deterministic child. */
function pointMass(V: number, x: number): Float64Array {
  const q = new Float64Array(V);
  q[x] = 1;
  return q;
}

function checkNonNegative(rule: string, name: string, v: number): void {
  if (!(v >= 0 && Number.isFinite(v))) throw new Error(`acceptance '${rule}': ${name} must be a finite number ≥ 0, got ${v}`);
}

/**
 * Greedy verification (lossless): from the root, descend to the child whose token is the argmax of the
 * current node's target logits while one exists; the bonus is the argmax at the last accepted node.
 * The output equals plain greedy decoding token for token.
 */
export function greedyAcceptance(): AcceptanceRule {
  return {
    name: 'greedy',
    reads: 'argmax',
    sampleDrafts: false,
    sampling: { temperature: 0, topK: 0, topP: 1 },
    lossless: true,
    accept(tree, target) {
      const children = childrenOf(tree);
      const path = [0];
      let node = 0;
      for (;;) {
        const want = target.argmax[node];
        const next = children[node].find((c) => tree.tokens[c] === want);
        if (next === undefined) break;
        path.push(next);
        node = next;
      }
      return { path, bonus: target.argmax[node] };
    },
  };
}

/**
 * Probability of accepting draft x given target p and proposal q (one chain position). The default is
 * Leviathan's min(1, p/q); `naiveAcceptance` (always accept) shows what goes wrong without it.
 */
export type AcceptProbability = (p: ArrayLike<number>, q: ArrayLike<number>, x: number) => number;

export const leviathanAcceptance: AcceptProbability = (p, q, x) => (q[x] > 0 ? Math.min(1, p[x] / q[x]) : 1);

/** Accepts every draft: the output then follows q, not p (biased; for lessons and tests). */
export const naiveAcceptance: AcceptProbability = () => 1;

/** norm(max(0, p − q)); p itself when p ≤ q everywhere (possible only through rounding). */
export function residual(p: ArrayLike<number>, q: ArrayLike<number>): Float64Array {
  const r = new Float64Array(p.length);
  let sum = 0;
  for (let i = 0; i < p.length; i++) sum += r[i] = Math.max(0, p[i] - q[i]);
  if (sum <= 0) return Float64Array.from(p);
  for (let i = 0; i < r.length; i++) r[i] /= sum;
  return r;
}

// ---------------------------------------------------------------------------------------------------
// Typical acceptance (Cai et al. 2024, Medusa §2.3.1)

/** Medusa's typical-acceptance settings (§2.3.1; posterior_threshold and posterior_alpha in the reference code). */
export const TYPICAL_DEFAULTS = { epsilon: 0.09, delta: 0.3 } as const;

export interface TypicalOptions {
  /** Softmax temperature of the target; 0 makes the rule greedy. */
  temperature: number;
  topK?: number;
  topP?: number;
  /** Hard probability threshold ε (default 0.09). */
  epsilon?: number;
  /** Entropy-scaled threshold δ (default 0.3). */
  delta?: number;
}

/** The typical-acceptance threshold of a distribution: min(ε, δ·exp(−H(p))), H the entropy in nats. */
export function typicalThreshold(p: ArrayLike<number>, epsilon: number, delta: number): number {
  let H = 0;
  for (let i = 0; i < p.length; i++) if (p[i] > 0) H -= p[i] * Math.log(p[i]);
  return Math.min(epsilon, delta * Math.exp(-H));
}

/**
 * The distribution typical acceptance draws its bonus token from: p without the tokens below the
 * threshold, renormalised (the reference code's get_typical_one_token); the most likely token always stays.
 */
export function typicalFilter(p: ArrayLike<number>, epsilon: number, delta: number): Float64Array {
  const t = typicalThreshold(p, epsilon, delta);
  let top = 0;
  for (let i = 1; i < p.length; i++) if (p[i] > p[top]) top = i;
  return normalised(Float64Array.from(p, (x, i) => (x >= t || i === top ? x : 0)))!;
}

/**
 * Typical acceptance (Cai et al. 2024, §2.3.1): the edge u → c passes when p_u(token c) >
 * min(ε, δ·exp(−H(p_u))), p_u = samplingProbs(target logits at u) (the paper's softmax(logits / T),
 * here with the same top-k / top-p as every decoder) — a confident target accepts only its likely
 * tokens, an uncertain one accepts more. Of the nodes reached from the root through passing
 * edges the deepest wins; ties go to the larger Σ log p of its accepted tokens, then the lower node
 * index. The bonus is drawn from typicalFilter(p) at that node. Lossy at T > 0 (the output is not
 * distributed as sampling from p); at temperature 0 it is greedyAcceptance exactly.
 */
export function typicalAcceptance(opts: TypicalOptions): AcceptanceRule {
  const sampling = resolveSampling(opts);
  const epsilon = opts.epsilon ?? TYPICAL_DEFAULTS.epsilon;
  const delta = opts.delta ?? TYPICAL_DEFAULTS.delta;
  checkNonNegative('typical', 'epsilon', epsilon);
  checkNonNegative('typical', 'delta', delta);
  if (sampling.temperature === 0) return { ...greedyAcceptance(), name: 'typical', sampling };
  return {
    name: 'typical',
    reads: 'logits',
    sampleDrafts: false,
    sampling,
    lossless: false,
    accept(tree, target, rng) {
      const N = tree.tokens.length;
      const probs = new Map<number, { p: Float64Array; threshold: number }>();
      const at = (u: number) => {
        if (!probs.has(u)) {
          const p = samplingProbs(logitsAt(target, u, 'typical'), sampling);
          probs.set(u, { p, threshold: typicalThreshold(p, epsilon, delta) });
        }
        return probs.get(u)!;
      };
      // parents come before children, so one pass in index order finds every node reachable
      // through passing edges, with its depth and the Σ log p of the accepted tokens on its path
      const reached = new Uint8Array(N);
      const depth = new Int32Array(N);
      const logp = new Float64Array(N);
      reached[0] = 1;
      let best = 0;
      for (let i = 1; i < N; i++) {
        const u = tree.parents[i];
        if (!reached[u]) continue;
        const { p, threshold } = at(u);
        const px = p[tree.tokens[i]];
        if (!(px > threshold)) continue;
        reached[i] = 1;
        depth[i] = depth[u] + 1;
        logp[i] = logp[u] + Math.log(px);
        // strict comparisons: on equal depth and Σ log p the lower index (met first) stays
        if (depth[i] > depth[best] || (depth[i] === depth[best] && logp[i] > logp[best])) best = i;
      }
      const path: number[] = [];
      for (let v = best; v >= 0; v = tree.parents[v]) path.unshift(v);
      return { path, bonus: sampleIndex(typicalFilter(at(best).p, epsilon, delta), rng) };
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// Speculative sampling over a tree (Leviathan et al. 2023; Chen et al. 2023; Miao et al. 2024; Yang et al. 2024)

/** The 'sampling' rule's defaults: temperature 1 (as speculativeSample), no top-k / top-p. */
const SAMPLING_DEFAULTS: SamplingConfig = { temperature: 1, topK: 0, topP: 1 };

/**
 * One node of speculative sampling: tries the children `kids` (drawn as `draw` says) in index order
 * against the target distribution p [V]. Returns the accepted child, or child −1 with the distribution
 * the bonus token is drawn from (p after every rejection's update).
 *
 * - i.i.d. from q (SpecInfer, Miao et al. 2024): accept with test(p, q, x) = min(1, p(x)/q(x)); on
 *   rejection p ← norm(max(0, p − q)).
 * - without replacement from q (Yang et al. 2024): the same, and on rejection q ← q without x,
 *   renormalised (the next child was drawn from that q); no mass left in q ends the tries.
 * - deterministic (q = the point mass on x): accept with test(p, δₓ, x) = p(x); on rejection
 *   p ← p without x, renormalised — so a later sibling with the same token has p(x) = 0.
 * A child whose token has q(x) = 0 cannot have been drawn from q (say a repeated token under
 * without-replacement): it is skipped, as if absent, which keeps the output exact.
 */
function tryChildren(
  p0: Float64Array,
  kids: number[],
  tokens: number[],
  draw: ChildDraw,
  test: AcceptProbability,
  rng: Rng,
): { child: number; p: Float64Array } {
  const V = p0.length;
  let p = p0;
  if (draw.kind !== 'deterministic' && draw.q.length !== V) {
    throw new Error(`acceptance 'sampling': a draw distribution q has ${draw.q.length} entries, but the vocabulary has ${V}`);
  }
  let q: Float64Array | null = draw.kind === 'deterministic' ? null : draw.q;
  for (const c of kids) {
    const x = tokens[c];
    if (q === null) {
      if (rng.next() < test(p, pointMass(V, x), x)) return { child: c, p };
      p = without(p, x) ?? p;
      continue;
    }
    if (!(q[x] > 0)) continue;
    if (rng.next() < test(p, q, x)) return { child: c, p };
    p = residual(p, q);
    if (draw.kind === 'without-replacement') {
      q = without(q, x);
      if (q === null) break;
    }
  }
  return { child: -1, p };
}

/**
 * Speculative sampling over a draft tree (lossless at T > 0): the committed tokens — the accepted path,
 * then the bonus — are distributed exactly as sampling them one by one from the target with `sampling`.
 * From the root: p = samplingProbs(target logits at the current node); its children are tried as in
 * `tryChildren`; an accepted child becomes the current node, with a fresh p from its own row; when
 * every child is rejected, or at a leaf, the bonus is drawn from the current (possibly residual) p.
 * With one child per node this is Leviathan et al. 2023 / Chen et al. 2023. `test` = naiveAcceptance
 * (accept everything) shows the bias the min(1, p/q) test removes. At temperature 0 p is the one-hot
 * argmax, and with the Leviathan test the rule is greedyAcceptance exactly (it reads argmaxes only).
 * Sampling defaults: temperature 1, no top-k / top-p. Draws come from `rng`: a seed repeats a run.
 */
export function speculativeAcceptance(sampling: Partial<SamplingConfig> = {}, test: AcceptProbability = leviathanAcceptance): AcceptanceRule {
  const s = resolveSampling(sampling, SAMPLING_DEFAULTS);
  const greedy = s.temperature === 0;
  const lossless = test === leviathanAcceptance;
  if (greedy && lossless) return { ...greedyAcceptance(), name: 'sampling', sampling: s };
  return {
    name: 'sampling',
    reads: greedy ? 'argmax' : 'logits',
    sampleDrafts: !greedy,
    sampling: s,
    lossless,
    accept(tree, target, rng) {
      const children = childrenOf(tree);
      const V = target.vocabSize;
      const pAt = (u: number) => (greedy ? pointMass(V, target.argmax[u]) : samplingProbs(logitsAt(target, u, 'sampling'), s));
      const path = [0];
      let node = 0;
      for (;;) {
        const draw = tree.draws?.[node] ?? DETERMINISTIC;
        const { child, p } = tryChildren(pAt(node), children[node], tree.tokens, draw, test, rng);
        if (child < 0) return { path, bonus: sampleIndex(p, rng) };
        path.push(child);
        node = child;
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// Unverified emission (lossy)

/**
 * Unverified emission — LOSSY, for contrast: commits the first-child chain from the root to its leaf
 * without looking at the target; the bonus is the target's own choice after the leaf (chooseToken:
 * argmax at T = 0, a sample at T > 0). Drafts are guesses made without seeing each other, so errors
 * enter the text and compound. Sampling defaults: greedy.
 */
export function unverifiedAcceptance(sampling: Partial<SamplingConfig> = {}): AcceptanceRule {
  const s = resolveSampling(sampling);
  const greedy = s.temperature === 0;
  return {
    name: 'unverified',
    reads: greedy ? 'argmax' : 'logits',
    sampleDrafts: !greedy,
    sampling: s,
    lossless: false,
    accept(tree, target, rng) {
      const children = childrenOf(tree);
      const path = [0];
      let node = 0;
      while (children[node].length > 0) path.push((node = children[node][0]));
      const bonus = greedy ? target.argmax[node] : chooseToken(logitsAt(target, node, 'unverified'), s, rng);
      return { path, bonus };
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// By name

export const ACCEPTANCE_NAMES: readonly AcceptanceName[] = ['greedy', 'typical', 'sampling', 'unverified'];

/**
 * The rule called `name`, with the target's sampling options (unset ones: greedy, except 'sampling',
 * which defaults to temperature 1). `extra` sets typical acceptance's ε and δ (ignored by the others).
 * greedy at temperature > 0 is an error: greedy verification is deterministic.
 */
export function acceptanceRule(name: AcceptanceName, sampling: Partial<SamplingConfig> = {}, extra: { epsilon?: number; delta?: number } = {}): AcceptanceRule {
  switch (name) {
    case 'greedy': {
      const s = resolveSampling(sampling);
      if (s.temperature > 0) {
        throw new Error(
          `acceptance 'greedy' is deterministic (temperature 0), got temperature ${s.temperature}; use 'sampling' (lossless) or 'typical' to sample`,
        );
      }
      return greedyAcceptance();
    }
    case 'typical':
      return typicalAcceptance({ ...resolveSampling(sampling), epsilon: extra.epsilon, delta: extra.delta });
    case 'sampling':
      return speculativeAcceptance(sampling);
    case 'unverified':
      return unverifiedAcceptance(sampling);
    default:
      throw new Error(`acceptance must be one of ${ACCEPTANCE_NAMES.map((n) => `'${n}'`).join(', ')}; got ${JSON.stringify(name)}`);
  }
}
