/**
 * Dynamic draft trees (EAGLE-2, Li et al. 2024, §4), one implementation for every drafter that gives a distribution
 * at each node: Medusa and parallel heads (decode/heads_drafter.ts), sequential modules (model/sequential_drafter.ts)
 * and the feature drafter (model/feature_drafter.ts). The drafter drives a `DynamicTree` depth by depth: it computes
 * its logits at the `frontier` nodes (a drafter forward, or a row it already holds) and hands them to `grow`.
 *
 * The rule, with DynamicTreeOptions { depth, expand, branch, nodes }:
 * - grow: node u's children are its `branch` likeliest tokens (greedy or typical verification) or `branch` successive
 *   draws without replacement from q = the drafter's distribution after the run's sampling options (speculative
 *   sampling at T > 0; the draw is recorded, decode/draft_tree.ts, so the acceptance rule can correct for q);
 * - score: the j-th child (j = 0, 1, …) of u scores score(u) + log P_u^(j), P_u^(j) the j-th largest probability of
 *   u's distribution (the softmax of its logits; q when sampling); the root scores 0. For top-ranked children that is
 *   the log-probability of the child's own token, so a node's score is the cumulative draft log-probability of its
 *   path, EAGLE-2's confidence. How the distribution at u arises is the drafter's business: heads that read the
 *   root's features only (Medusa, parallel) give one distribution per depth, so a score is the sum over the path of
 *   the heads' log-probabilities (the independence assumption of Medusa's tree); drafters that read the path
 *   (sequential modules, the feature drafter) give each node the distribution after its own path;
 * - expand: at each depth the `expand` best new nodes get children, until `depth` levels are grown;
 * - rerank: the `nodes` best nodes of the whole grown tree are verified (the root always).
 * "Best" is one total order: higher score first, then lower node index (creation order). A child never scores above
 * its parent and is created after it, so a parent always precedes its children: the kept set is closed under
 * ancestors (a tree), ties included, and a node's kept children are the first ones it drew.
 *
 * Why scores come from ranks, not from the drawn token: speculative sampling over children drawn from q is exact only
 * when whether the j-th draw is verified does not depend on which token it turned out to be (otherwise the kept
 * children are not distributed as q; keeping the likelier of two draws, say, favours likely tokens). A node's score
 * depends on its parent's distribution and its rank only, and everything that ranks above it is its ancestors, its
 * earlier siblings, their descendants and other subtrees, never its own token or its subtree; so whether it is
 * expanded and whether it is kept never depends on its own draw, and each kept child list is a prefix of the node's
 * draws whose length is fixed before the next draw is seen. Under greedy drafting the two coincide.
 *
 * Nodes are numbered in creation order: depth by depth, the frontier in index order, each node's children by rank
 * (or draw order). `tree()` keeps that order.
 */
import type { DraftContext, DrafterOptions, DynamicTreeOptions } from './drafter';
import type { ChildDraw, DraftTree } from './draft_tree';
import { pickChildren, topIndices } from './tree_shape';

/** What the builder needs from the decoding step: whether to draw children from q, with which options and stream. */
export type DrawContext = Pick<DraftContext, 'sample' | 'sampling' | 'rng'>;

/** One dynamic tree under construction (see the file comment). */
export class DynamicTree {
  /** [n] token of every grown node (tokens[0] = the root). */
  readonly tokens: number[];
  /** [n] parent of every grown node (root −1). */
  readonly parents: number[];
  /** [n] depth of every grown node. */
  readonly depths: number[];
  /** [n] score of every grown node: Σ along its path of the log-probability of its rank at its parent (root 0). */
  readonly scores: number[];
  /** Nodes whose children come next, ascending; all of depth `depth`. Empty when the tree is grown. */
  frontier: number[];
  /** Depth of the frontier nodes. */
  depth = 0;
  /** [n] how each node's children were drawn. */
  private readonly childDraws: (ChildDraw | undefined)[] = [];

  /** `opts.depth` is the deepest level grown (the caller cuts it to the room the step has). */
  constructor(
    root: number,
    private readonly opts: DynamicTreeOptions,
    private readonly ctx: DrawContext,
  ) {
    checkDynamicOptions('dynamic tree', opts);
    this.tokens = [root];
    this.parents = [-1];
    this.depths = [0];
    this.scores = [0];
    this.frontier = [0];
  }

  /**
   * Adds the children of every frontier node from the drafter's logits [V] there (logits[i] for frontier[i]; null
   * where the drafter has no distribution: no children), then picks the next frontier. Frontier nodes handed the same
   * array share their candidates (heads that do not see the path give one distribution per depth, as fixed trees do).
   */
  grow(logits: readonly (ArrayLike<number> | null)[]): void {
    if (logits.length !== this.frontier.length) throw new Error(`dynamic tree: ${logits.length} logit rows for ${this.frontier.length} frontier nodes`);
    const born: number[] = [];
    const shared = new Map<ArrayLike<number>, Candidates>();
    this.frontier.forEach((u, i) => {
      const row = logits[i];
      if (!row) return;
      let c = shared.get(row);
      if (!c) shared.set(row, (c = this.candidates(row)));
      this.childDraws[u] = c.draw;
      c.tokens.forEach((t, j) => {
        born.push(this.tokens.length);
        this.tokens.push(t);
        this.parents.push(u);
        this.depths.push(this.depth + 1);
        this.scores.push(this.scores[u] + c!.logp[j]);
      });
    });
    this.depth += 1;
    this.frontier = this.depth < this.opts.depth ? this.best(born, this.opts.expand).sort((a, b) => a - b) : [];
  }

  /** The tree to verify: the root and the `nodes` best grown nodes, in creation order, renumbered. */
  tree(): DraftTree {
    const all = Array.from({ length: this.tokens.length - 1 }, (_, i) => i + 1);
    const kept = [0, ...this.best(all, this.opts.nodes).sort((a, b) => a - b)];
    const index = new Map(kept.map((u, i) => [u, i]));
    return {
      tokens: kept.map((u) => this.tokens[u]),
      parents: kept.map((u) => (u === 0 ? -1 : index.get(this.parents[u])!)),
      draws: kept.map((u) => this.childDraws[u]),
    };
  }

  /** The `n` best of `ids`: higher score first, then lower index. */
  private best(ids: number[], n: number): number[] {
    return [...ids].sort((a, b) => this.scores[b] - this.scores[a] || a - b).slice(0, n);
  }

  /** A node's children from its logits, with the log-probability of each child's rank (≤ 0). */
  private candidates(logits: ArrayLike<number>): Candidates {
    const { sample, sampling, rng } = this.ctx;
    const width = Math.min(this.opts.branch, logits.length);
    const picked = pickChildren(logits, Array.from({ length: width }, (_, j) => j), sample, sampling, rng);
    let logp: number[];
    if (picked.draw.kind === 'deterministic') {
      const logZ = logSumExp(logits);
      logp = picked.tokens.map((t) => Math.min(0, logits[t] - logZ));
    } else {
      const q = picked.draw.q;
      logp = topIndices(q, picked.tokens.length).map((t) => Math.min(0, Math.log(q[t])));
    }
    return { tokens: picked.tokens, draw: picked.draw, logp };
  }
}

interface Candidates {
  tokens: number[];
  draw: ChildDraw;
  /** [children] log-probability of each child's rank at its parent. */
  logp: number[];
}

/** Throws a clear error unless every field of a dynamic tree's options is an integer ≥ 1. */
export function checkDynamicOptions(name: string, d: DynamicTreeOptions): void {
  for (const f of ['depth', 'expand', 'branch', 'nodes'] as const) {
    if (!Number.isInteger(d[f]) || d[f] < 1) throw new Error(`${name}: dynamic.${f} must be an integer ≥ 1, got ${d[f]}`);
  }
}

/**
 * The dynamic tree a variant's drafter runs with, from its `drafter()` options: each field checked, `depth` cut to
 * k − 1 when k (tokens per step) is given, and at most `maxDepth`, the deepest draft the variant makes (Infinity for
 * a drafter of any depth). Clear errors name the drafter and the allowed values.
 */
export function resolveDynamicTree(name: string, opts: DrafterOptions, maxDepth: number): DynamicTreeOptions {
  const d = opts.dynamic!;
  if (opts.tree) throw new Error(`${name}: give a fixed tree or a dynamic one, not both`);
  checkDynamicOptions(name, d);
  const k = opts.k;
  if (k !== undefined && !(Number.isInteger(k) && k >= 2 && k <= maxDepth + 1)) {
    const allowed = Number.isFinite(maxDepth) ? `in [2, ${maxDepth + 1}]` : '≥ 2';
    throw new Error(`${name}: with a dynamic tree, k (tokens per step) must be an integer ${allowed}, got ${k}`);
  }
  const depth = k !== undefined ? Math.min(d.depth, k - 1) : d.depth;
  if (depth > maxDepth) throw new Error(`${name}: the dynamic tree is ${depth} deep, but this model drafts at most ${maxDepth} tokens ahead`);
  return { depth, expand: d.expand, branch: d.branch, nodes: d.nodes };
}

/** A drafter's name with its dynamic tree, e.g. 'medusa dynamic tree (depth 5, expand 4, branch 4, 12 nodes)'. */
export function dynamicTreeName(drafter: string, d: DynamicTreeOptions): string {
  return `${drafter} dynamic tree (depth ${d.depth}, expand ${d.expand}, branch ${d.branch}, ${d.nodes} nodes)`;
}

/** log Σ exp(x), stably. */
function logSumExp(x: ArrayLike<number>): number {
  let m = -Infinity;
  for (let i = 0; i < x.length; i++) m = Math.max(m, x[i]);
  let s = 0;
  for (let i = 0; i < x.length; i++) s += Math.exp(x[i] - m);
  return m + Math.log(s);
}
