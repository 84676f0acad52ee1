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
 * Tree rows are dropped from the module's cache right after (their tokens are drafts), and only the nodes
 * whose children come next and their ancestors get one. A chain is the one-path case; a wider shape gives
 * the EAGLE-style trees serving engines run these modules with. Rows before the context window's start
 * are left out, as they are for the trunk.
 *
 * The modules read the path, so in a dynamic tree (EAGLE-2, decode/dynamic_tree.ts) a node's children and
 * score come from module d's distribution after that node's own path: the score of a path is the sum of
 * the log-probabilities the modules give its tokens one after another, the same cumulative confidence
 * EAGLE-2 ranks its feature drafter's nodes by.
 */
import * as tf from '@tensorflow/tfjs';
import type { CommitInfo, DraftContext, Drafter, DynamicTreeOptions } from '../decode/drafter';
import type { ChildDraw, DraftTree } from '../decode/draft_tree';
import { rootOnly } from '../decode/draft_tree';
import { checkDynamicOptions, DynamicTree, dynamicTreeName } from '../decode/dynamic_tree';
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

  /** Set for a dynamic tree (then `shape` is the root alone). */
  private readonly dynamic: DynamicTreeOptions | null;

  /** `tree`: a fixed shape as paths of ranks (decode/tree.ts), or a dynamic tree as deep as the modules at most. */
  constructor(
    private readonly model: SequentialModel,
    tree: TreeChoices | { dynamic: DynamicTreeOptions },
  ) {
    if ('dynamic' in tree) {
      checkDynamicOptions('sequential modules', tree.dynamic);
      if (tree.dynamic.depth > model.depth) throw new Error(`sequential modules: the dynamic tree is ${tree.dynamic.depth} deep, but there are ${model.depth} modules`);
      this.dynamic = { ...tree.dynamic };
      this.shape = new TreeShape([]);
      this.maxDepth = tree.dynamic.depth;
      this.name = dynamicTreeName('sequential modules', tree.dynamic);
    } else {
      this.dynamic = null;
      this.shape = new TreeShape(tree);
      this.maxDepth = this.shape.depth;
      const kind = tree.length === this.maxDepth ? 'chain' : `${tree.length + 1}-node tree`;
      this.name = `sequential modules ${kind} k=${this.maxDepth + 1}`;
    }
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
    const depth = Math.min(this.maxDepth, ctx.maxDepth);
    if (depth === 0) return rootOnly(root);
    const run: ModuleRun = { out: null, rowOf: new Map() };
    try {
      if (this.dynamic) {
        const tree = new DynamicTree(root, { ...this.dynamic, depth }, ctx);
        for (let m = 1; tree.frontier.length > 0; m++) tree.grow(await this.moduleLogits(m, ctx.seq, tree, tree.frontier, run));
        return tree.tree();
      }
      const s = this.shape;
      const tree = { tokens: [root], parents: [-1], draws: [] as (ChildDraw | undefined)[] };
      const shapeOf = [0]; // tree node → shape node
      const nodeDepth = [0];
      for (let m = 1; m <= depth; m++) {
        // children of the depth m − 1 nodes that have some in the shape, from module m's logits there
        const expanding = nodeDepth.map((d, u) => (d === m - 1 && s.children[shapeOf[u]].length > 0 ? u : -1)).filter((u) => u >= 0);
        if (expanding.length === 0) break;
        const logits = await this.moduleLogits(m, ctx.seq, tree, expanding, run);
        expanding.forEach((u, i) => {
          if (!logits[i]) return;
          const su = shapeOf[u];
          const picked = pickChildren(logits[i]!, s.childRanks[su], ctx.sample, ctx.sampling, ctx.rng);
          tree.draws[u] = picked.draw;
          picked.tokens.forEach((t, j) => {
            tree.tokens.push(t);
            tree.parents.push(u);
            shapeOf.push(s.children[su][j]);
            nodeDepth.push(m);
          });
        });
      }
      return tree;
    } finally {
      run.out?.dispose();
    }
  }

  /**
   * Module m's logits [V] at each of `expanding` (nodes of depth m − 1 of `tree`): module m runs over its catch-up
   * rows (kept in its cache, and handed on to module m + 1) and the tree rows of those nodes and their ancestors,
   * reading module m − 1's rows in `run`, which then holds module m's. null where a node has no row.
   */
  private async moduleLogits(m: number, seq: readonly number[], tree: Pick<DraftTree, 'tokens' | 'parents'>, expanding: readonly number[], run: ModuleRun): Promise<(Float32Array | null)[]> {
    const L = seq.length;
    const onPaths = new Set<number>(); // the expanding nodes and their ancestors, root excluded
    for (const u of expanding) for (let v = u; v > 0 && !onPaths.has(v); v = tree.parents[v]) onPaths.add(v);
    const depthOf = (u: number): number => (u === 0 ? 0 : 1 + depthOf(tree.parents[u]));
    const treeNodes = [...onPaths].filter((u) => L - 1 - m + depthOf(u) >= this.windowStart).sort((a, b) => a - b);
    const { out, rowOf, nc } = this.runModule(m, seq, tree, treeNodes, run);
    run.out?.dispose();
    run.out = out;
    run.rowOf = rowOf;
    if (nc > 0 && m < this.maxDepth) this.append(m, tf.slice(out, [0, 0], [nc, -1]));
    const rows = expanding.filter((u) => rowOf.has(u));
    if (rows.length === 0) return expanding.map(() => null);
    const logits = tf.tidy(() => {
      const h = tf.gather(out, tf.tensor1d(rows.map((u) => rowOf.get(u)!), 'int32')); // [P, C]
      return this.model.trunk.decodeUnembed(h as tf.Tensor2D); // [P, V]
    });
    const data = (await logits.data()) as Float32Array;
    logits.dispose();
    const V = this.model.config.vocabSize;
    return expanding.map((u) => {
      const i = rows.indexOf(u);
      return i < 0 ? null : data.subarray(i * V, (i + 1) * V);
    });
  }

  dispose(): void {
    this.restart();
    for (const t of this.tables) tf.dispose([t.projH, t.tokenTable]);
  }

  /**
   * Module m over its catch-up rows and the tree rows of `treeNodes` (nodes of depth 1..m−1, ancestors
   * first; see the file comment), reading module m − 1's rows in `prev`. Returns its output rows, the row
   * of each node (the root's is the last catch-up row), and the number of catch-up rows nc, which stay in
   * its cache.
   */
  private runModule(
    m: number, seq: readonly number[], tree: Pick<DraftTree, 'tokens' | 'parents'>, treeNodes: readonly number[], prev: ModuleRun,
  ): { out: tf.Tensor2D; rowOf: Map<number, number>; nc: number } {
    const L = seq.length;
    const cache = this.caches[m - 1];
    const S0 = cache.length;
    const nc = Math.max(0, L - m - this.ends[m]); // positions [ends[m], L − 1 − m]
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
      if (treeNodes.length > 0) parts.push(tf.gather(prev.out!, tf.tensor1d(treeNodes.map((u) => prev.rowOf.get(tree.parents[u])!), 'int32')));
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

/** Module m − 1's output rows during a proposal, and the row of each tree node in them (the root: its root row). */
interface ModuleRun {
  out: tf.Tensor2D | null;
  rowOf: Map<number, number>;
}
