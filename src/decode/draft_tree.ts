/**
 * The draft tree: what every drafter proposes and every acceptance rule judges (one decoding step).
 *
 * Node 0 is the root: the last committed token, whose successors the tree drafts. Every other node i
 * holds a draft token and a parent index (parents[i] < i, so nodes are in topological order); a node at
 * depth d drafts the token d places after the root. A chain — one child per node — is blockwise drafting;
 * a single root is a plain autoregressive step.
 *
 * The children of a node are tried in index order. How they were drawn matters to speculative sampling
 * (decode/acceptance.ts), so each node records it:
 * - deterministic: picked without randomness (top-k ranks, an n-gram match); q is a point mass;
 * - iid: each child drawn independently from q (SpecInfer);
 * - without-replacement: drawn one after another from q with earlier draws removed (EAGLE).
 * Pure data on the host; `treeMask` and `treeDepths` give what the verification forward needs.
 */

/** How a node's children were drawn. */
export type ChildDraw =
  | { kind: 'deterministic' }
  | { kind: 'iid'; q: Float64Array }
  | { kind: 'without-replacement'; q: Float64Array };

export interface DraftTree {
  /** [N] token of each node; tokens[0] is the root (the last committed token). */
  tokens: number[];
  /** [N] parent of each node: parents[0] = −1, 0 ≤ parents[i] < i. */
  parents: number[];
  /** [N] how each node's children were drawn; a missing entry means deterministic. */
  draws?: (ChildDraw | undefined)[];
}

export const DETERMINISTIC: ChildDraw = { kind: 'deterministic' };

/** A tree of the root alone: a plain autoregressive step. */
export function rootOnly(root: number): DraftTree {
  return { tokens: [root], parents: [-1] };
}

/** A chain root → drafts[0] → drafts[1] → …; draws[i] says how node i's child was drawn. */
export function chain(root: number, drafts: readonly number[], draws?: (ChildDraw | undefined)[]): DraftTree {
  return { tokens: [root, ...drafts], parents: [-1, ...drafts.map((_, i) => i)], draws };
}

/** [N] depth of each node (root 0). */
export function treeDepths(tree: DraftTree): number[] {
  const d = [0];
  for (let i = 1; i < tree.parents.length; i++) d.push(d[tree.parents[i]] + 1);
  return d;
}

/** [N] children of each node, in index order. */
export function treeChildren(tree: DraftTree): number[][] {
  const c: number[][] = tree.parents.map(() => []);
  for (let i = 1; i < tree.parents.length; i++) c[tree.parents[i]].push(i);
  return c;
}

/** True when every node's parent is the node before it (causal attention suffices). */
export function isChain(tree: DraftTree): boolean {
  return tree.parents.every((p, i) => p === i - 1);
}

/** Throws a clear error unless the tree is well formed over a vocabulary of V tokens. */
export function checkTree(tree: DraftTree, V: number): void {
  const N = tree.tokens.length;
  if (N === 0) throw new Error('draft tree: it must hold at least the root');
  if (tree.parents.length !== N) throw new Error(`draft tree: ${N} tokens but ${tree.parents.length} parents`);
  if (tree.parents[0] !== -1) throw new Error(`draft tree: the root's parent must be −1, got ${tree.parents[0]}`);
  for (let i = 0; i < N; i++) {
    const t = tree.tokens[i];
    if (!Number.isInteger(t) || t < 0 || t >= V) throw new Error(`draft tree: node ${i} holds token ${t}, outside the vocabulary [0, ${V})`);
    if (i > 0 && !(Number.isInteger(tree.parents[i]) && tree.parents[i] >= 0 && tree.parents[i] < i)) {
      throw new Error(`draft tree: node ${i} has parent ${tree.parents[i]}; parents must come before their children (0 ≤ parent < ${i})`);
    }
  }
  if (tree.draws && tree.draws.length > N) throw new Error(`draft tree: ${tree.draws.length} draw entries for ${N} nodes`);
}

/** The nodes of depth ≤ maxDepth, renumbered (a subtree: parents stay before children). */
export function pruneTree(tree: DraftTree, maxDepth: number): DraftTree {
  const depths = treeDepths(tree);
  if (depths.every((d) => d <= maxDepth)) return tree;
  const keep = depths.map((d, i) => (d <= maxDepth ? i : -1)).filter((i) => i >= 0);
  const index = new Map(keep.map((old, i) => [old, i]));
  return {
    tokens: keep.map((i) => tree.tokens[i]),
    parents: keep.map((i) => (i === 0 ? -1 : index.get(tree.parents[i])!)),
    draws: tree.draws ? keep.map((i) => tree.draws![i]) : undefined,
  };
}

/** [N][N] 1 where node i may attend to node j (itself and its ancestors, the root included), else 0. */
export function treeMask(tree: DraftTree): Uint8Array[] {
  const N = tree.parents.length;
  const m = Array.from({ length: N }, () => new Uint8Array(N));
  for (let i = 0; i < N; i++) for (let j = i; j >= 0; j = tree.parents[j]) m[i][j] = 1;
  return m;
}

/**
 * The tree's nodes as paths of sibling ranks, root excluded, in node order: node u's path is its parent's path plus its
 * index among the parent's children (the drafters add children in rank order: 0 = the likeliest). The form treeFigure
 * and treeBuffers read, so a drafted tree (a dynamic one too) can be drawn or reused as a fixed shape.
 */
export function draftTreePaths(tree: DraftTree): number[][] {
  const paths: number[][] = [[]];
  const children = tree.parents.map(() => 0);
  for (let u = 1; u < tree.tokens.length; u++) {
    const p = tree.parents[u];
    paths.push([...paths[p], children[p]++]);
  }
  return paths.slice(1);
}
