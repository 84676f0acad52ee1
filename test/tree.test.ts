/**
 * Medusa tree buffers on plain arrays (docs/algorithms.md, tree buffers): hand-worked mask, tree indices, position
 * ids, parents and retrieve rows; the presets' shapes; optimizeTree against brute force; clear errors.
 */
import { describe, expect, it } from 'vitest';
import { chainTree, denseTree, expectedAccepted, optimizeTree, sparseTree, treeBuffers } from '../src/decode/tree';
import { draftTreePaths } from '../src/decode/draft_tree';

const perDepth = (paths: number[][]) => {
  const counts: number[] = [];
  for (const p of paths) counts[p.length - 1] = (counts[p.length - 1] ?? 0) + 1;
  return counts;
};

describe('tree buffers', () => {
  // root ─┬─ [0] ─┬─ [0,0] ── [0,0,0]
  //       │       └─ [0,1]
  //       └─ [1] ─── [1,0]
  const choices = [[1, 0], [0, 0, 0], [0], [0, 1], [1], [0, 0]];

  it('a hand-worked tree: sorted paths, mask, parents, position ids, retrieve rows', () => {
    const b = treeBuffers(choices);
    expect(b.paths).toEqual([[0], [1], [0, 0], [0, 1], [1, 0], [0, 0, 0]]);
    expect(b.size).toBe(7);
    expect(b.depth).toBe(3);
    expect(b.mask).toEqual([
      [1, 0, 0, 0, 0, 0, 0],
      [1, 1, 0, 0, 0, 0, 0],
      [1, 0, 1, 0, 0, 0, 0],
      [1, 1, 0, 1, 0, 0, 0],
      [1, 1, 0, 0, 1, 0, 0],
      [1, 0, 1, 0, 0, 1, 0],
      [1, 1, 0, 1, 0, 0, 1],
    ]);
    expect(b.parents).toEqual([-1, 0, 0, 1, 1, 2, 3]);
    expect(b.positions).toEqual([0, 1, 1, 2, 2, 2, 3]);
    expect(b.retrieve).toEqual([
      [0, 1, 3, 6],
      [0, 1, 4, -1],
      [0, 2, 5, -1],
    ]);
  });

  it('tree indices: candidates[1 + topk·(d − 1) + rank], for the smallest topk and for Medusa’s TOPK = 10', () => {
    expect(treeBuffers(choices).topk).toBe(2);
    expect(treeBuffers(choices).treeIndices).toEqual([0, 1, 2, 3, 4, 3, 5]);
    expect(treeBuffers(choices, 10).treeIndices).toEqual([0, 1, 2, 11, 12, 11, 21]);
  });

  it('a chain is blockwise decoding: lower-triangular mask, one retrieve row, consecutive positions', () => {
    const b = treeBuffers(chainTree(3));
    expect(b.mask).toEqual([
      [1, 0, 0, 0],
      [1, 1, 0, 0],
      [1, 1, 1, 0],
      [1, 1, 1, 1],
    ]);
    expect(b.treeIndices).toEqual([0, 1, 2, 3]);
    expect(b.positions).toEqual([0, 1, 2, 3]);
    expect(b.retrieve).toEqual([[0, 1, 2, 3]]);
  });

  it('the root alone is plain decoding', () => {
    const b = treeBuffers([]);
    expect(b).toMatchObject({ size: 1, depth: 0, mask: [[1]], treeIndices: [0], positions: [0], retrieve: [[0]] });
  });

  it('rejects trees that are not prefix-closed, repeated or malformed, with what is wrong', () => {
    expect(() => treeBuffers([[0, 1]])).toThrow(/path \[0, 1\] has no parent \[0\]/);
    expect(() => treeBuffers([[0], [0]])).toThrow(/listed twice/);
    expect(() => treeBuffers([[-1]])).toThrow(/integers ≥ 0/);
    expect(() => treeBuffers([[]])).toThrow(/at least one rank/);
    expect(() => treeBuffers([[0], [3]], 2)).toThrow(/topk must be an integer ≥ 4/);
  });
});

describe('tree presets', () => {
  it('chain: top-1 of every head', () => {
    expect(chainTree(4)).toEqual([[0], [0, 0], [0, 0, 0], [0, 0, 0, 0]]);
  });

  it('dense: every combination of the top ranks (top-3, then top-2)', () => {
    expect(perDepth(denseTree(4))).toEqual([3, 6, 12, 24]);
    expect(denseTree(2, [2])).toEqual([[0], [1], [0, 0], [0, 1], [1, 0], [1, 1]]);
    expect(treeBuffers(denseTree(4)).size).toBe(46);
  });

  it('sparse: 63 nodes shaped like Medusa’s mc_sim_7b_63 (10/28/23/2 per depth), ranks < 10, prefix-closed', () => {
    const s = sparseTree(4);
    expect(s.length).toBe(63);
    expect(perDepth(s)).toEqual([10, 28, 23, 2]);
    expect(treeBuffers(s).topk).toBe(10);
    expect(s.slice(0, 10)).toEqual(Array.from({ length: 10 }, (_, r) => [r]));
    expect(s.filter((p) => p.length === 4)).toEqual([[0, 0, 0, 0], [0, 0, 0, 1]]);
    expect(perDepth(sparseTree(3))).toEqual([10, 28, 23]);
    expect(perDepth(sparseTree(6))).toEqual([10, 28, 23, 2]);
  });
});

describe('optimizeTree', () => {
  const acc = [
    [0.6, 0.2, 0.1],
    [0.4, 0.2, 0.1],
    [0.3, 0.1],
  ];

  it('adds nodes by the product of accuracies along the path (a hand-worked case)', () => {
    // values: [0] .6, [0,0] .24, [1] .2, [0,1] .12, [2] .1, [1,0] .08, [0,0,0] .072, [0,2] .06
    expect(optimizeTree(acc, 8)).toEqual([[0], [1], [2], [0, 0], [0, 1], [0, 2], [1, 0], [0, 0, 0]]);
    expect(expectedAccepted(optimizeTree(acc, 8), acc)).toBeCloseTo(0.6 + 0.24 + 0.2 + 0.12 + 0.1 + 0.08 + 0.072 + 0.06, 12);
    expect(optimizeTree(acc, 0)).toEqual([]);
  });

  it('is optimal: equals the best prefix-closed tree of every size found by brute force (2 heads × 3 ranks)', () => {
    const a = [
      [0.5, 0.3, 0.15],
      [0.45, 0.25, 0.2],
    ];
    const all = [...denseTree(2, [3])];
    for (let N = 1; N <= all.length; N++) {
      let best = -1;
      for (let mask = 0; mask < 1 << all.length; mask++) {
        const set = all.filter((_, i) => mask & (1 << i));
        if (set.length !== N || set.some((p) => p.length > 1 && !set.some((q) => q.length === 1 && q[0] === p[0]))) continue;
        best = Math.max(best, expectedAccepted(set, a));
      }
      const greedy = optimizeTree(a, N);
      expect(() => treeBuffers(greedy)).not.toThrow();
      expect(expectedAccepted(greedy, a)).toBeCloseTo(best, 12);
    }
  });

  it('τ of a chain is 1 + a₁ + a₁a₂ + …; bad inputs are refused', () => {
    expect(1 + expectedAccepted(chainTree(3), acc)).toBeCloseTo(1 + 0.6 + 0.24 + 0.072, 12);
    expect(() => optimizeTree(acc, 100)).toThrow(/N must be an integer in \[0, 30\]/);
    expect(() => optimizeTree([[1.5]], 1)).toThrow(/numbers in \[0, 1\]/);
    expect(() => optimizeTree([], 1)).toThrow(/K must be an integer ≥ 1/);
  });
});

describe('draftTreePaths', () => {
  it('gives each node its parent’s path plus its rank among the siblings, root excluded, in node order', () => {
    // root → a, b; a → c, d; b → e; d → f
    const tree = { tokens: [9, 1, 2, 3, 4, 5, 6], parents: [-1, 0, 0, 1, 1, 2, 4] };
    expect(draftTreePaths(tree)).toEqual([[0], [1], [0, 0], [0, 1], [1, 0], [0, 1, 0]]);
    expect(draftTreePaths({ tokens: [9], parents: [-1] })).toEqual([]);
    expect(treeBuffers(draftTreePaths(tree)).paths.length).toBe(6); // a valid shape
  });
});
