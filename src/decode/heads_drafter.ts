/**
 * Drafting from heads that read one hidden state: Gloeckle et al.'s parallel heads and Medusa heads.
 * At the last committed position t, head d gives a distribution over the token d places after the
 * root (the root itself, x[t+1], is the target's own bonus token). The heads do not see the drafts
 * before them, so every node at depth d takes its children from the same distribution: the tree shape
 * picks ranks (decode/tree_shape.ts), a chain takes rank 0 at every depth — blockwise parallel
 * decoding (Stern et al. 2018) — and a wider shape is Medusa's tree (Cai et al. 2024, §2.1.2).
 * A dynamic tree (EAGLE-2, decode/dynamic_tree.ts) hands head d's distribution to every node of depth d − 1, so a
 * node's score is the sum of the heads' log-probabilities along its path (Medusa's independence assumption).
 *
 * The variant supplies `HeadsSource.logits`: run after every verification forward, it turns the
 * target's features at the committed rows into the heads' logits at the last one (and keeps whatever
 * caches its heads need). One host read per step brings them back.
 */
import * as tf from '@tensorflow/tfjs';
import type { CommitInfo, DraftContext, Drafter, DynamicTreeOptions } from './drafter';
import type { ChildDraw, DraftTree } from './draft_tree';
import { rootOnly } from './draft_tree';
import { checkDynamicOptions, DynamicTree } from './dynamic_tree';
import { TreeChoices } from './tree';
import { Children, pickChildren, TreeShape } from './tree_shape';

export interface HeadsSource {
  /** Heads available for drafting (depths 1..heads). */
  readonly heads: number;
  /** Logits [depth, V] of heads 1..depth at the last committed row of `info` (inside tf.tidy). */
  logits(info: CommitInfo, depth: number): tf.Tensor2D;
  /** Forwards of the heads' own networks so far. */
  forwards: number;
  dispose(): void;
}

export class HeadsDrafter implements Drafter {
  readonly maxDepth: number;
  private readonly shape: TreeShape;
  /** Per depth d (index d − 1): the ranks the shape uses there, ascending, and the most children any node there has. */
  private readonly depthRanks: number[][];
  private readonly depthWidest: number[];
  /** [depth][V] the heads' logits at the last committed position (null before the prefill). */
  private rows: Float32Array[] | null = null;
  /** Set for a dynamic tree (then `shape` is the root alone). */
  private readonly dynamic: DynamicTreeOptions | null;

  /** `tree`: a fixed shape as paths of ranks (decode/tree.ts), or a dynamic tree (decode/dynamic_tree.ts). */
  constructor(
    readonly name: string,
    private readonly source: HeadsSource,
    tree: TreeChoices | { dynamic: DynamicTreeOptions },
    private readonly V: number,
  ) {
    if ('dynamic' in tree) {
      checkDynamicOptions(name, tree.dynamic);
      if (tree.dynamic.depth > source.heads) throw new Error(`${name}: the dynamic tree is ${tree.dynamic.depth} deep but there are ${source.heads} drafting heads`);
      this.dynamic = { ...tree.dynamic };
      this.shape = new TreeShape([]);
      this.maxDepth = tree.dynamic.depth;
      this.depthRanks = [];
      this.depthWidest = [];
      return;
    }
    this.dynamic = null;
    const choices = tree;
    this.shape = new TreeShape(choices);
    if (this.shape.depth > source.heads) throw new Error(`${name}: the tree is ${this.shape.depth} deep but there are ${source.heads} drafting heads`);
    if (this.shape.topk > V) throw new Error(`${name}: the tree uses rank ${this.shape.topk - 1}, beyond the vocabulary (${V} tokens)`);
    this.maxDepth = this.shape.depth;
    const s = this.shape;
    this.depthRanks = Array.from({ length: s.depth }, (_, i) => [...new Set(s.paths.filter((p) => p.length === i + 1).map((p) => p[i]))].sort((a, b) => a - b));
    this.depthWidest = Array.from({ length: s.depth }, (_, i) => Math.max(...s.children.filter((_, w) => s.depths[w] === i).map((c) => c.length)));
  }

  get draftForwards(): number {
    return this.source.forwards;
  }

  propose(ctx: DraftContext): DraftTree {
    const root = ctx.seq[ctx.seq.length - 1];
    if (!this.rows) return rootOnly(root);
    if (this.dynamic) return this.proposeDynamic(root, ctx);
    const s = this.shape;
    // depth d's candidates: node u's children are u's ranks (or that many draws) from head d's distribution
    const tokens = [root];
    const parents = [-1];
    const draws: (ChildDraw | undefined)[] = [];
    const kept = new Map<number, number>([[0, 0]]); // shape node → tree node
    const perDepth = new Map<number, Children & { ranks: number[] }>(); // depth → its candidates
    for (let u = 0; u < s.size; u++) {
      const node = kept.get(u);
      if (node === undefined || s.depths[u] >= ctx.maxDepth || s.children[u].length === 0) continue;
      const d = s.depths[u] + 1;
      if (!perDepth.has(d)) {
        const ranks = ctx.sample ? Array.from({ length: this.depthWidest[d - 1] }, (_, i) => i) : this.depthRanks[d - 1];
        perDepth.set(d, { ...pickChildren(this.rows[d - 1], ranks, ctx.sample, ctx.sampling, ctx.rng), ranks });
      }
      const cand = perDepth.get(d)!;
      draws[node] = cand.draw;
      s.children[u].forEach((w, i) => {
        const at = ctx.sample ? i : cand.ranks.indexOf(s.childRanks[u][i]);
        if (at >= cand.tokens.length) return; // q ran out of tokens to draw
        kept.set(w, tokens.length);
        tokens.push(cand.tokens[at]);
        parents.push(node);
      });
    }
    return { tokens, parents, draws };
  }

  /** The dynamic tree: every node of depth d takes its children from head d + 1's row (one array, so shared draws). */
  private proposeDynamic(root: number, ctx: DraftContext): DraftTree {
    const depth = Math.min(this.maxDepth, ctx.maxDepth);
    if (depth === 0) return rootOnly(root);
    const tree = new DynamicTree(root, { ...this.dynamic!, depth }, ctx);
    while (tree.frontier.length > 0) tree.grow(tree.frontier.map(() => this.rows![tree.depth]));
    return tree.tree();
  }

  async commit(info: CommitInfo): Promise<void> {
    const depth = this.maxDepth;
    if (depth === 0) return;
    const logits = tf.tidy(() => this.source.logits(info, depth)); // [depth, V]
    const data = (await logits.data()) as Float32Array;
    logits.dispose();
    this.rows = Array.from({ length: depth }, (_, d) => data.subarray(d * this.V, (d + 1) * this.V));
  }

  dispose(): void {
    this.rows = null;
    this.source.dispose();
  }
}
