/**
 * Medusa candidate trees (Cai et al. 2024, §2.1.2 "Tree attention" and §2.3.3 "Searching for the
 * optimized tree construction"). A tree is data: a list of paths, each a tuple of top-k ranks, one
 * rank per depth — `[0]` is head 1's best guess, `[0, 1]` head 2's second guess after it.
 * `treeBuffers` turns the list into everything a tree step needs, as plain arrays (docs/algorithms.md, tree buffers):
 *
 * 1. paths sorted by (length, lexicographic); node 0 is the root (the base model's next token), node
 *    i ≥ 1 is paths[i − 1], so N = paths + 1;
 * 2. attention mask N×N: a node sees itself, the root and every node whose path is a prefix of its own;
 * 3. tree indices: the node with path p at depth d takes candidates[1 + topk·(d − 1) + p[d − 1]], with
 *    candidates = [root, top-topk of head 1, top-topk of head 2, …];
 * 4. position ids: the node's depth (the committed length is added at run time);
 * 5. retrieve indices: one row per leaf, the nodes from the root to that leaf, padded with −1.
 *
 * Presets are functions of the number of heads K; `optimizeTree` builds the tree that maximises the
 * expected accepted length from measured per-head rank accuracies.
 */

/** A tree topology: paths of top-k ranks (prefix-closed: every path's parent path is listed too). */
export type TreeChoices = readonly (readonly number[])[];

export interface TreeBuffers {
  /** The paths sorted by (length, lexicographic); node i ≥ 1 is paths[i − 1]. */
  paths: number[][];
  /** N: nodes including the root. */
  size: number;
  /** Deepest path length D (0 for a root-only tree). */
  depth: number;
  /** Ranks each head contributes to the candidates list: 1 + the largest rank used (or as given). */
  topk: number;
  /** [N][N]: 1 where node i may attend to node j (itself, the root, its ancestors), else 0. */
  mask: number[][];
  /** [N]: index of each node's token in candidates = [root, top-topk of head 1, …]. */
  treeIndices: number[];
  /** [N]: position offset of each node after the committed sequence = its depth. */
  positions: number[];
  /** [N]: parent node (−1 for the root). */
  parents: number[];
  /** [leaves][D + 1]: nodes root → leaf, one row per leaf in lexicographic order of the leaf paths, padded with −1. */
  retrieve: number[][];
}

/** Orders paths by length, then lexicographically. */
export function comparePaths(a: readonly number[], b: readonly number[]): number {
  if (a.length !== b.length) return a.length - b.length;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] - b[i];
  return 0;
}

function lexicographic(a: readonly number[], b: readonly number[]): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
  return a.length - b.length;
}

const key = (p: readonly number[]) => p.join(',');

/** The buffers of a tree (see the file comment). `topk` defaults to the smallest that holds every rank used. */
export function treeBuffers(choices: TreeChoices, topk?: number): TreeBuffers {
  const paths = choices.map((p) => [...p]).sort(comparePaths);
  const index = new Map<string, number>();
  paths.forEach((p, i) => {
    if (p.length === 0) throw new Error('tree: a path must hold at least one rank (the root is implicit)');
    for (const r of p) if (!Number.isInteger(r) || r < 0) throw new Error(`tree: ranks must be integers ≥ 0, got [${p.join(', ')}]`);
    if (index.has(key(p))) throw new Error(`tree: path [${p.join(', ')}] is listed twice`);
    index.set(key(p), i + 1);
  });
  const parents = [-1];
  for (const p of paths) {
    const parent = p.length === 1 ? 0 : index.get(key(p.slice(0, -1)));
    if (parent === undefined) throw new Error(`tree: path [${p.join(', ')}] has no parent [${p.slice(0, -1).join(', ')}] in the list`);
    parents.push(parent);
  }
  const needed = paths.reduce((m, p) => Math.max(m, ...p.map((r) => r + 1)), 0);
  const k = topk ?? needed;
  if (!Number.isInteger(k) || k < needed) throw new Error(`tree: topk must be an integer ≥ ${needed} (1 + the largest rank used), got ${k}`);
  const N = paths.length + 1;
  const depths = [0, ...paths.map((p) => p.length)];
  const depth = Math.max(...depths);
  const mask = Array.from({ length: N }, () => new Array<number>(N).fill(0));
  for (let i = 0; i < N; i++) for (let j = i; j >= 0; j = parents[j]) mask[i][j] = 1;
  const treeIndices = [0, ...paths.map((p) => 1 + k * (p.length - 1) + p[p.length - 1])];
  const isParent = new Set(parents);
  const leaves = paths.map((p, i) => ({ p, node: i + 1 })).filter(({ node }) => !isParent.has(node));
  leaves.sort((a, b) => lexicographic(a.p, b.p));
  const retrieve = leaves.map(({ node }) => {
    const row: number[] = [];
    for (let j = node; j >= 0; j = parents[j]) row.unshift(j);
    return [...row, ...new Array<number>(depth + 1 - row.length).fill(-1)];
  });
  if (N === 1) retrieve.push([0]);
  return { paths, size: N, depth, topk: k, mask, treeIndices, positions: depths, parents, retrieve };
}

/** Top-1 of every head: the chain [0], [0, 0], …, K long (blockwise decoding as a tree). */
export function chainTree(K: number): number[][] {
  checkHeads(K);
  return Array.from({ length: K }, (_, d) => new Array<number>(d + 1).fill(0));
}

/**
 * Every combination of the top ranks: depth d keeps widths[min(d, last)] children per node, so the
 * default [3, 2] is top-3 of head 1 then top-2 of every later head (3 + 6 + 12 + 24 = 45 nodes for K = 4).
 */
export function denseTree(K: number, widths: readonly number[] = [3, 2]): number[][] {
  checkHeads(K);
  if (widths.length === 0 || widths.some((w) => !Number.isInteger(w) || w < 1)) {
    throw new Error(`denseTree: widths must be integers ≥ 1, got [${widths.join(', ')}]`);
  }
  const out: number[][] = [];
  let level: number[][] = [[]];
  for (let d = 0; d < K; d++) {
    const w = widths[Math.min(d, widths.length - 1)];
    level = level.flatMap((p) => Array.from({ length: w }, (_, r) => [...p, r]));
    out.push(...level);
  }
  return out;
}

/** Nodes per depth of Medusa's 63-node tree for Vicuna-7B (mc_sim_7b_63): 10, 28, 23, 2. */
export const SPARSE_63_COUNTS: readonly number[] = [10, 28, 23, 2];

/**
 * A sparse tree with a fixed number of nodes per depth (default 10/28/23/2 = 63 nodes, the shape of
 * Medusa's mc_sim_7b_63; the depths beyond K are dropped). Built without measurements: at each depth
 * keep the children of the kept nodes with the largest Zipf prior Π 1/(rank + 1) along the path
 * (ties: lexicographic), ranks < 10 as in Medusa's TOPK. `optimizeTree` replaces the prior with
 * measured accuracies.
 */
export function sparseTree(K: number, counts: readonly number[] = SPARSE_63_COUNTS, topk = 10): number[][] {
  checkHeads(K);
  const out: number[][] = [];
  let level: { p: number[]; score: number }[] = [{ p: [], score: 1 }];
  for (let d = 0; d < Math.min(K, counts.length); d++) {
    const children = level.flatMap(({ p, score }) => Array.from({ length: topk }, (_, r) => ({ p: [...p, r], score: score / (r + 1) })));
    children.sort((a, b) => b.score - a.score || lexicographic(a.p, b.p));
    level = children.slice(0, counts[d]);
    out.push(...level.map((c) => c.p));
  }
  return out.sort(comparePaths);
}

/**
 * Expected accepted drafts per step of a tree, under the independence model of Medusa's tree
 * optimisation: Σ over nodes of Π along its path of accuracies[d][rank], where accuracies[d][i] is
 * the probability that head d + 1's rank-i token is the right one. τ ≈ 1 + this.
 */
export function expectedAccepted(choices: TreeChoices, accuracies: readonly (readonly number[])[]): number {
  let sum = 0;
  for (const p of choices) {
    let prod = 1;
    p.forEach((r, d) => (prod *= accuracies[d]?.[r] ?? 0));
    sum += prod;
  }
  return sum;
}

/**
 * The N-node tree (root not counted) with the largest expectedAccepted, built greedily (Cai et al.
 * 2024, §2.3.3): repeatedly add the frontier node — a child of the tree — with the largest product
 * of accuracies along its path (ties: shorter, then lexicographic). Products never grow along a path
 * (accuracies ≤ 1), so the N best nodes of the full tree are prefix-closed and greedy is optimal for
 * this objective. accuracies: [K][R] (head, rank), values in [0, 1].
 */
export function optimizeTree(accuracies: readonly (readonly number[])[], N: number): number[][] {
  const K = accuracies.length;
  checkHeads(K);
  for (const row of accuracies) {
    if (row.length === 0 || row.some((a) => !(a >= 0 && a <= 1))) throw new Error(`optimizeTree: accuracies must be rows of numbers in [0, 1], got [${row.join(', ')}]`);
  }
  let capacity = 0;
  let width = 1;
  for (const row of accuracies) capacity += width *= row.length;
  if (!Number.isInteger(N) || N < 0 || N > capacity) throw new Error(`optimizeTree: N must be an integer in [0, ${capacity}] (nodes available with these heads and ranks), got ${N}`);
  const frontier: { p: number[]; v: number }[] = accuracies[0].map((a, r) => ({ p: [r], v: a }));
  const out: number[][] = [];
  while (out.length < N) {
    let best = 0;
    for (let i = 1; i < frontier.length; i++) {
      const a = frontier[i];
      const b = frontier[best];
      if (a.v > b.v || (a.v === b.v && comparePaths(a.p, b.p) < 0)) best = i;
    }
    const { p, v } = frontier.splice(best, 1)[0];
    out.push(p);
    if (p.length < K) accuracies[p.length].forEach((a, r) => frontier.push({ p: [...p, r], v: v * a }));
  }
  return out.sort(comparePaths);
}

function checkHeads(K: number): void {
  if (!Number.isInteger(K) || K < 1) throw new Error(`tree: the number of heads K must be an integer ≥ 1, got ${K}`);
}
