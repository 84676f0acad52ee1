/**
 * Turning a tree shape (paths of top-k ranks, decode/tree.ts) into a draft tree, one depth at a time.
 *
 * A shape says, for every node, which ranks of the drafter's distribution become its children: the
 * path [0, 1] is "the best guess at depth 1, then the second-best guess after it". Heads that do not
 * see the tokens before them (parallel heads, Medusa) give one distribution per depth, shared by
 * every node there; drafters that read the path (sequential modules, a feature drafter) give one per
 * node. Either way the children come from `pickChildren`:
 * - greedy or typical verification: the top ranks themselves (deterministic children);
 * - speculative sampling at T > 0: the node's children are successive draws without replacement from
 *   q = the drafter's distribution after the run's sampling options, so the tree sampler
 *   (decode/acceptance.ts) can correct for q and stay exact. A chain draws one token per node.
 */
import type { Rng } from '../util/rng';
import type { ChildDraw } from './draft_tree';
import { DETERMINISTIC } from './draft_tree';
import { samplingProbs, sampleIndex, SamplingConfig } from './sampling';
import { chainTree, TreeChoices, treeBuffers } from './tree';

/** A tree shape with its nodes numbered as draft-tree nodes (root 0, then paths sorted by length, then rank). */
export class TreeShape {
  /** [N] path of ranks of each node (root: []). */
  readonly paths: number[][];
  /** [N] parent node (root −1). */
  readonly parents: number[];
  /** [N] depth of each node. */
  readonly depths: number[];
  /** [N] the ranks of each node's children, in node order. */
  readonly childRanks: number[][];
  /** [N] each node's children. */
  readonly children: number[][];
  /** Deepest path. */
  readonly depth: number;
  /** 1 + the largest rank used. */
  readonly topk: number;

  constructor(choices: TreeChoices) {
    const buf = treeBuffers(choices); // sorts and checks the paths (decode/tree.ts)
    this.paths = [[], ...buf.paths];
    this.parents = buf.parents;
    this.depths = buf.positions;
    this.depth = buf.depth;
    this.topk = buf.topk;
    this.children = this.paths.map(() => []);
    this.childRanks = this.paths.map(() => []);
    for (let i = 1; i < this.paths.length; i++) {
      this.children[this.parents[i]].push(i);
      this.childRanks[this.parents[i]].push(this.paths[i][this.paths[i].length - 1]);
    }
  }

  get size(): number {
    return this.paths.length;
  }
}

/** Indices of the `n` largest values, largest first (the lower index first on ties). */
export function topIndices(x: ArrayLike<number>, n: number): number[] {
  const best: number[] = [];
  for (let i = 0; i < x.length; i++) {
    if (best.length === n && x[i] <= x[best[n - 1]]) continue;
    let j = Math.min(best.length, n - 1);
    if (best.length < n) best.push(i);
    while (j > 0 && x[i] > x[best[j - 1]]) {
      best[j] = best[j - 1];
      j -= 1;
    }
    best[j] = i;
  }
  return best;
}

export interface Children {
  /** Child tokens, in order (possibly fewer than asked when q has too few tokens to draw from). */
  tokens: number[];
  /** How they were drawn. */
  draw: ChildDraw;
}

/**
 * Children of one node from the drafter's logits [V] there: the tokens at `ranks` (deterministic), or,
 * when `sample`, ranks.length successive draws without replacement from q = samplingProbs(logits).
 */
export function pickChildren(logits: ArrayLike<number>, ranks: readonly number[], sample: boolean, sampling: SamplingConfig, rng: Rng): Children {
  if (!sample || sampling.temperature === 0) {
    const top = topIndices(logits, 1 + Math.max(...ranks));
    return { tokens: ranks.map((r) => top[r]), draw: DETERMINISTIC };
  }
  const q = samplingProbs(logits, sampling);
  const left = Float64Array.from(q);
  let mass = 1;
  const tokens: number[] = [];
  for (let i = 0; i < ranks.length && mass > 1e-12; i++) {
    const t = sampleIndex(left.map((x) => x / mass), rng);
    tokens.push(t);
    mass -= left[t];
    left[t] = 0;
  }
  return { tokens, draw: { kind: 'without-replacement', q } };
}

/**
 * The tree shape a variant's drafter uses: `tree` when given (cut to depth k − 1 when k is given too),
 * else a chain k − 1 deep; `maxK` = 1 + the depth the variant can draft. Clear errors for bad values.
 * (Dynamic trees: decode/dynamic_tree.ts, resolveDynamicTree.)
 */
export function drafterShape(name: string, maxK: number, opts: { k?: number; tree?: TreeChoices } = {}): number[][] {
  const k = opts.k ?? maxK;
  if (!Number.isInteger(k) || k < 1 || k > maxK) throw new Error(`${name}: k (tokens per step) must be an integer in [1, ${maxK}], got ${k}`);
  if (!opts.tree) return k > 1 ? chainTree(k - 1) : [];
  const shape = new TreeShape(opts.tree);
  if (shape.depth > maxK - 1) throw new Error(`${name}: the tree is ${shape.depth} deep, but this model drafts at most ${maxK - 1} tokens ahead`);
  return shape.paths.slice(1).filter((p) => p.length <= k - 1);
}
