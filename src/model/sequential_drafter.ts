/**
 * Drafting with DeepSeek-V3's sequential MTP modules (Technical Report §2.2), as a chain or a tree.
 *
 * Module m at position i reads h^{m−1}ᵢ and the token m places ahead, x[i+m], and predicts x[i+m+1].
 * With L committed tokens (the root x[L−1] last, the trunk's features known up to position L−2),
 * module m's entry at position i is certain while x[i+m] is committed: i ≤ L−1−m. So each step,
 * module m = 1..D runs once over
 * - catch-up rows: its certain positions not yet in its cache, [eₘ, L−1−m], the last of which (the
 *   "root row") reads the root token; these stay in its KV cache;
 * - tree rows: one per draft node u of depth δ = 1..m−1, at position L−1−m+δ, reading u's token and
 *   module m−1's state at u's parent; a tree row attends to the cache, the catch-up rows and the rows
 *   of u's ancestors (tree attention inside the module). Its output at the depth m−1 nodes (position
 *   L−2) gives their children at depth m.
 * Tree rows are dropped from the module's cache right after (their tokens are drafts). A chain is the
 * one-path case; a wider shape gives the EAGLE-style trees serving engines run these modules with.
 * Rows before the context window's start are left out, as they are for the trunk.
 */
import * as tf from '@tensorflow/tfjs';
import type { CommitInfo, DraftContext, Drafter } from '../decode/drafter';
import type { ChildDraw, DraftTree } from '../decode/draft_tree';
import { rootOnly } from '../decode/draft_tree';
import type { TreeChoices } from '../decode/tree';
import { pickChildren, TreeShape } from '../decode/tree_shape';
import { KVCache } from './kv_cache';
import type { SequentialModel } from './sequential';
import { MASKED } from './transformer';

export class SequentialDrafter implements Drafter {
  readonly name: string;
  readonly maxDepth: number;
  draftForwards = 0;
  private readonly shape: TreeShape;
  /** caches[m − 1]: module m's KV cache, positions [windowStart, ends[m]). */
  private caches: KVCache[];
  private readonly ends: number[];
  /** hold[m] (m = 0..D−1): hᵐ [n, C] at positions [ends[m + 1], …) not yet read by module m + 1 (hold[0]: the trunk's h⁰). */
  private hold: (tf.Tensor2D | null)[];
  private windowStart = -1;
  /** Per module, its decoding tables (SequentialModel.moduleTables). */
  private readonly tables: { projH: tf.Tensor2D; tokenTable: tf.Tensor2D }[];

  constructor(
    private readonly model: SequentialModel,
    choices: TreeChoices,
  ) {
    this.shape = new TreeShape(choices);
    this.maxDepth = this.shape.depth;
    const kind = choices.length === this.maxDepth ? 'chain' : `${choices.length + 1}-node tree`;
    this.name = `sequential modules ${kind} k=${this.maxDepth + 1}`;
    this.caches = Array.from({ length: this.maxDepth }, () => new KVCache(1));
    this.ends = new Array<number>(this.maxDepth + 1).fill(0);
    this.hold = new Array(this.maxDepth).fill(null);
    this.tables = Array.from({ length: this.maxDepth }, (_, i) => model.moduleTables(i + 1));
  }

  commit(info: CommitInfo): void {
    if (this.maxDepth === 0) return;
    if (info.reset || this.windowStart < 0) {
      this.restart();
      this.windowStart = info.windowStart;
      this.ends.fill(info.windowStart);
    }
    const rows = tf.tidy(() => tf.gather(info.features, tf.tensor1d(info.rows as number[], 'int32'))) as tf.Tensor2D; // h⁰ [R, C]
    this.append(0, rows);
  }

  async propose(ctx: DraftContext): Promise<DraftTree> {
    const L = ctx.seq.length;
    const W = this.windowStart;
    const root = ctx.seq[L - 1];
    if (!this.hold[0] || L - 2 < W) return rootOnly(root);
    const s = this.shape;
    const depth = Math.min(this.maxDepth, ctx.maxDepth);
    const tree = { tokens: [root], parents: [-1], draws: [] as (ChildDraw | undefined)[] };
    const shapeOf = [0]; // tree node → shape node
    const nodeDepth = [0];
    let prevOut: tf.Tensor2D | null = null; // module m−1's rows (catch-up, then tree rows)
    let prevRowOf = new Map<number, number>(); // tree node → its row in prevOut
    try {
      for (let m = 1; m <= depth; m++) {
        const { out, rowOf, nc } = this.runModule(m, ctx.seq, tree, nodeDepth, prevOut, prevRowOf);
        prevOut?.dispose();
        prevOut = out;
        prevRowOf = rowOf;
        if (nc > 0 && m < this.maxDepth) this.append(m, tf.slice(out, [0, 0], [nc, -1]));
        // children of the depth m − 1 nodes, from module m's logits there
        const parents = nodeDepth.map((d, u) => (d === m - 1 && s.children[shapeOf[u]].length > 0 && rowOf.has(u) ? u : -1)).filter((u) => u >= 0);
        if (parents.length === 0) break;
        const logits = tf.tidy(() => {
          const h = tf.gather(out, tf.tensor1d(parents.map((u) => rowOf.get(u)!), 'int32')); // [P, C]
          return this.model.trunk.unembed(tf.expandDims(h, 0) as tf.Tensor3D); // [1, P, V]
        });
        const data = (await logits.data()) as Float32Array;
        logits.dispose();
        const V = this.model.config.vocabSize;
        parents.forEach((u, i) => {
          const su = shapeOf[u];
          const picked = pickChildren(data.subarray(i * V, (i + 1) * V), s.childRanks[su], ctx.sample, ctx.sampling, ctx.rng);
          tree.draws[u] = picked.draw;
          picked.tokens.forEach((t, j) => {
            tree.tokens.push(t);
            tree.parents.push(u);
            shapeOf.push(s.children[su][j]);
            nodeDepth.push(m);
          });
        });
      }
    } finally {
      prevOut?.dispose();
    }
    return tree;
  }

  dispose(): void {
    this.restart();
    for (const t of this.tables) tf.dispose([t.projH, t.tokenTable]);
  }

  /**
   * Module m over its catch-up rows and the tree rows of the nodes of depth 1..m−1 (see the file
   * comment). Returns its output rows, the row of each node (the root's is the last catch-up row), and
   * the number of catch-up rows nc, which stay in its cache.
   */
  private runModule(
    m: number, seq: readonly number[], tree: DraftTree, nodeDepth: number[], prevOut: tf.Tensor2D | null, prevRowOf: Map<number, number>,
  ): { out: tf.Tensor2D; rowOf: Map<number, number>; nc: number } {
    const L = seq.length;
    const W = this.windowStart;
    const cache = this.caches[m - 1];
    const S0 = cache.length;
    const nc = Math.max(0, L - m - this.ends[m]); // positions [ends[m], L − 1 − m]
    const treeNodes = nodeDepth.map((d, u) => (d >= 1 && d <= m - 1 && L - 1 - m + d >= W ? u : -1)).filter((u) => u >= 0);
    const R = nc + treeNodes.length;
    const rowOf = new Map<number, number>();
    if (nc > 0) rowOf.set(0, nc - 1);
    treeNodes.forEach((u, i) => rowOf.set(u, nc + i));
    const tokens = [
      ...Array.from({ length: nc }, (_, j) => seq[this.ends[m] + j + m]),
      ...treeNodes.map((u) => tree.tokens[u]),
    ];
    const mask = new Float32Array(R * (S0 + R)).fill(MASKED);
    for (let r = 0; r < R; r++) {
      const row = r * (S0 + R);
      if (r < nc) {
        mask.fill(0, row, row + S0 + r + 1);
        continue;
      }
      mask.fill(0, row, row + S0 + nc);
      for (let u = treeNodes[r - nc]; u > 0; u = tree.parents[u]) if (rowOf.has(u)) mask[row + S0 + rowOf.get(u)!] = 0;
    }
    const out = tf.tidy(() => {
      const parts: tf.Tensor2D[] = [];
      if (nc > 0) parts.push(tf.slice(this.hold[m - 1]!, [0, 0], [nc, -1]));
      if (treeNodes.length > 0) parts.push(tf.gather(prevOut!, tf.tensor1d(treeNodes.map((u) => prevRowOf.get(tree.parents[u])!), 'int32')));
      const hidden = tf.concat(parts, 0) as tf.Tensor2D; // h^{m−1} [R, C]
      return this.model.moduleRows(m, hidden, tf.tensor1d(tokens, 'int32'), tf.tensor2d(mask, [R, S0 + R]), cache, this.tables[m - 1]); // hᵐ [R, C]
    });
    this.draftForwards += 1;
    cache.truncate(S0 + nc); // tree rows read drafts: they do not stay
    if (nc > 0) {
      const rest = this.hold[m - 1]!.shape[0] - nc;
      const kept = rest > 0 ? tf.slice(this.hold[m - 1]!, [nc, 0], [rest, -1]) : null;
      this.hold[m - 1]!.dispose();
      this.hold[m - 1] = kept as tf.Tensor2D | null;
      this.ends[m] += nc;
    }
    return { out, rowOf, nc };
  }

  /** hold[m] ← hold[m] followed by rows [n, C] (takes ownership of rows). */
  private append(m: number, rows: tf.Tensor2D): void {
    const prev = this.hold[m];
    this.hold[m] = prev ? (tf.concat([prev, rows], 0) as tf.Tensor2D) : rows;
    if (prev) tf.dispose([prev, rows]);
  }

  private restart(): void {
    for (const c of this.caches) c.dispose();
    tf.dispose(this.hold.filter((h): h is tf.Tensor2D => h !== null));
    this.hold.fill(null);
  }
}
