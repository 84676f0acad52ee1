/**
 * Drafting with the feature-level drafter (model/feature.ts; EAGLE, Li et al. 2024, §4), as a chain or a tree.
 *
 * The drafter's row at position j reads the state gⱼ and the token x[j+1] and predicts the state at j+1, whose
 * output-head distribution is the guess at x[j+2]. With L committed tokens (the root x[L−1] last), the trunk's
 * features are known up to position a = L−2, so each step runs the drafter
 * - once over its catch-up rows: the committed positions not yet in its KV cache, [end, a], reading the trunk's
 *   true features (the last one reads the root token); they stay in its cache. The output at a gives the root's
 *   children (depth 1);
 * - then once per depth δ = 1, 2, …: one row per node u of depth δ that has children in the shape, at position
 *   a + δ, reading the drafter's own prediction at u's parent and u's token; it attends to the cache (the committed
 *   rows) and to the rows of u's ancestors (tree attention inside the drafter). Its output gives u's children.
 * The tree rows read drafts, so they leave the cache when the proposal is done. This is the same set of rows the
 * training-time test trains on (FeatureModel.loss, ttTestMask).
 *
 * The tree is a fixed shape of ranks (decode/tree.ts) or dynamic (EAGLE-2 §4, decode/dynamic_tree.ts): each depth
 * expands the `expand` newest nodes of highest cumulative draft probability into their `branch` likeliest children
 * (or draws), and the `nodes` candidates of highest cumulative probability are verified.
 */
import * as tf from '@tensorflow/tfjs';
import type { CommitInfo, DraftContext, Drafter, DynamicTreeOptions } from '../decode/drafter';
import type { ChildDraw, DraftTree } from '../decode/draft_tree';
import { DETERMINISTIC, rootOnly } from '../decode/draft_tree';
import { checkDynamicOptions, DynamicTree, dynamicTreeName } from '../decode/dynamic_tree';
import type { TreeChoices } from '../decode/tree';
import { pickChildren, TreeShape } from '../decode/tree_shape';
import type { DraftTables, FeatureModel } from './feature';
import { KVCache } from './kv_cache';
import { MASKED } from './transformer';

export class FeatureDrafter implements Drafter {
  readonly name: string;
  readonly maxDepth: number;
  draftForwards = 0;
  private readonly shape: TreeShape;
  /** The drafter's KV cache: its rows for positions [windowStart, end). */
  private cache: KVCache;
  private end = 0;
  /** The trunk's features [n, F] at positions [end, end + n) not yet fed to the drafter. */
  private hold: tf.Tensor2D | null = null;
  private windowStart = -1;
  private readonly tables: DraftTables;

  /** A chain of top-1 drafts (greedy drafting can then run on the GPU in one submission). */
  private readonly chain: boolean = false;
  /** Set for a dynamic tree (then `shape` is unused). */
  private readonly dynamic: DynamicTreeOptions | null;

  constructor(
    private readonly model: FeatureModel,
    tree: { choices: TreeChoices } | { dynamic: DynamicTreeOptions },
  ) {
    if ('dynamic' in tree) {
      const d = tree.dynamic;
      checkDynamicOptions('feature drafter', d);
      this.dynamic = { ...d };
      this.shape = new TreeShape([]);
      this.maxDepth = d.depth;
      this.name = dynamicTreeName('feature drafter', d);
    } else {
      this.dynamic = null;
      this.shape = new TreeShape(tree.choices);
      this.maxDepth = this.shape.depth;
      this.chain = this.shape.paths.length === this.maxDepth + 1 && this.shape.childRanks.every((r) => r.length === 0 || (r.length === 1 && r[0] === 0));
      const kind = tree.choices.length === this.maxDepth ? 'chain' : `${tree.choices.length + 1}-node tree`;
      this.name = `feature drafter ${kind} k=${this.maxDepth + 1}`;
    }
    this.cache = new KVCache(model.mtp.layers);
    this.tables = model.draftTables();
  }

  commit(info: CommitInfo): void {
    if (this.maxDepth === 0) return;
    if (info.reset || this.windowStart < 0) {
      this.restart();
      this.windowStart = info.windowStart;
      this.end = info.windowStart;
    }
    const rows = tf.tidy(() => tf.gather(info.features, tf.tensor1d(info.rows as number[], 'int32'))) as tf.Tensor2D; // [R, F]
    const prev = this.hold;
    this.hold = prev ? (tf.concat([prev, rows], 0) as tf.Tensor2D) : rows;
    if (prev) tf.dispose([prev, rows]);
  }

  async propose(ctx: DraftContext): Promise<DraftTree> {
    const L = ctx.seq.length;
    const a = L - 2; // the last position whose trunk features are known
    const root = ctx.seq[L - 1];
    const depth = Math.min(this.maxDepth, ctx.maxDepth);
    if (depth === 0 || a < this.windowStart || this.hold === null) return rootOnly(root);
    if (this.dynamic) return this.proposeDynamic(ctx, a, depth);
    if (this.chain && !ctx.sample) {
      const chain = await this.chainOnGpu(ctx.seq, a, depth);
      if (chain) return chain;
    }
    const s = this.shape;
    const V = this.model.config.vocabSize;
    const tree = { tokens: [root], parents: [-1], draws: [] as (ChildDraw | undefined)[] };
    const shapeOf = [0]; // tree node → shape node
    const states = new Map<number, tf.Tensor2D>(); // tree node → the drafter's prediction there [1, C]
    const logitsAt = new Map<number, Float32Array>(); // tree node → the logits of that prediction [V]
    const rowAt = new Map<number, number>(); // tree node (not the root) → its row's index in the cache
    try {
      await this.catchUp(ctx.seq, a, states, logitsAt); // the cache now holds positions [windowStart, a]
      let level = [0]; // nodes whose children come next
      for (let d = 1; d <= depth && level.length > 0; d++) {
        const born: number[] = [];
        for (const u of level) {
          const su = shapeOf[u];
          const picked = pickChildren(logitsAt.get(u)!, s.childRanks[su], ctx.sample, ctx.sampling, ctx.rng);
          tree.draws[u] = picked.draw;
          picked.tokens.forEach((t, j) => {
            born.push(tree.tokens.length);
            tree.tokens.push(t);
            tree.parents.push(u);
            shapeOf.push(s.children[su][j]);
          });
        }
        // the drafter's rows at the new nodes that have children of their own (none past the last depth)
        level = d < depth ? born.filter((u) => s.children[shapeOf[u]].length > 0) : [];
        if (level.length > 0) await this.treeRows(level, tree, states, logitsAt, rowAt, V);
      }
    } finally {
      tf.dispose([...states.values()]);
      this.cache.truncate(this.end - this.windowStart); // tree rows read drafts: they do not stay
    }
    return tree;
  }

  /**
   * A greedy chain drafted on the GPU in one submission and one read (FeatureModel.draftChainWebGpu): the same rows and
   * tokens as the catch-up and the depth-by-depth rows below. Null where that path does not apply.
   */
  private async chainOnGpu(seq: readonly number[], a: number, depth: number): Promise<DraftTree | null> {
    const hold = this.hold!;
    const n = a + 1 - this.end;
    if (hold.shape[0] !== n) throw new Error(`feature drafter: holds features for ${hold.shape[0]} positions, expected ${n}`);
    const g = tf.tidy(() => this.model.inputStates(hold)); // [n, C]
    try {
      const drafted = await this.model.draftChainWebGpu(g, seq.slice(this.end + 1, a + 2) as number[], this.cache, this.tables, depth);
      if (!drafted) return null;
      this.draftForwards += depth;
      hold.dispose();
      this.hold = null;
      this.end = a + 1;
      this.cache.truncate(this.end - this.windowStart); // the chain's rows read drafts: they do not stay
      const root = seq[seq.length - 1];
      return { tokens: [root, ...drafted], parents: [-1, ...drafted.map((_, i) => i)], draws: drafted.map(() => DETERMINISTIC) };
    } finally {
      if (g !== hold) g.dispose(); // inputStates is the identity for 'last' features
    }
  }

  /** The dynamic tree (EAGLE-2, decode/dynamic_tree.ts): one drafter forward per depth over the frontier's rows. */
  private async proposeDynamic(ctx: DraftContext, a: number, depth: number): Promise<DraftTree> {
    const V = this.model.config.vocabSize;
    const tree = new DynamicTree(ctx.seq[ctx.seq.length - 1], { ...this.dynamic!, depth }, ctx);
    const states = new Map<number, tf.Tensor2D>();
    const logitsAt = new Map<number, Float32Array>();
    const rowAt = new Map<number, number>();
    try {
      await this.catchUp(ctx.seq, a, states, logitsAt); // the root's prediction
      while (tree.frontier.length > 0) {
        const level = tree.frontier;
        if (tree.depth > 0) await this.treeRows(level, tree, states, logitsAt, rowAt, V);
        tree.grow(level.map((u) => logitsAt.get(u)!));
      }
    } finally {
      tf.dispose([...states.values()]);
      this.cache.truncate(this.end - this.windowStart); // tree rows read drafts: they do not stay
    }
    return tree.tree();
  }

  dispose(): void {
    this.restart();
    tf.dispose([this.tables.projG, this.tables.tokenTable]);
  }

  /**
   * Feeds the committed positions [end, a] to the drafter (true features, tokens x[j+1]); they stay in its cache. Its
   * prediction at a (the root's state) and that prediction's logits go into `states` and `logitsAt` under node 0.
   */
  private async catchUp(seq: readonly number[], a: number, states: Map<number, tf.Tensor2D>, logitsAt: Map<number, Float32Array>): Promise<void> {
    const hold = this.hold!;
    const n = a + 1 - this.end;
    if (hold.shape[0] !== n) throw new Error(`feature drafter: holds features for ${hold.shape[0]} positions, expected ${n}`);
    const S0 = this.cache.length;
    const [state, logits] = tf.tidy(() => {
      const g = this.model.inputStates(hold); // [n, C]
      const tokens = tf.tensor1d(seq.slice(this.end + 1, a + 2) as number[], 'int32');
      const mask = new Float32Array(n * (S0 + n)).fill(MASKED);
      for (let r = 0; r < n; r++) mask.fill(0, r * (S0 + n), r * (S0 + n) + S0 + r + 1);
      const out = this.model.draftStep(g, tokens, tf.tensor2d(mask, [n, S0 + n]), this.cache, this.tables); // [n, C], [n, V]
      return [tf.slice(out.f, [n - 1, 0], [1, -1]) as tf.Tensor2D, tf.slice(out.logits, [n - 1, 0], [1, -1])];
    });
    this.draftForwards += 1;
    hold.dispose();
    this.hold = null;
    this.end = a + 1;
    states.set(0, state);
    logitsAt.set(0, (await logits.data()) as Float32Array);
    logits.dispose();
  }

  /** One drafter forward over the rows of `nodes` (one depth), appended to the cache after the rows before them. */
  private async treeRows(
    nodes: number[], tree: Pick<DraftTree, 'tokens' | 'parents'>, states: Map<number, tf.Tensor2D>, logitsAt: Map<number, Float32Array>, rowAt: Map<number, number>, V: number,
  ): Promise<void> {
    const S0 = this.cache.length;
    const n = nodes.length;
    nodes.forEach((u, i) => rowAt.set(u, S0 + i));
    const mask = new Float32Array(n * (S0 + n)).fill(MASKED);
    const committed = this.end - this.windowStart;
    nodes.forEach((u, i) => {
      const row = i * (S0 + n);
      mask.fill(0, row, row + committed); // every committed row
      for (let v = u; v > 0; v = tree.parents[v]) mask[row + rowAt.get(v)!] = 0; // u and its drafted ancestors
    });
    const { parts, logits } = tf.tidy(() => {
      const g = n === 1 ? states.get(tree.parents[nodes[0]])! : (tf.concat(nodes.map((u) => states.get(tree.parents[u])!), 0) as tf.Tensor2D); // the parents' predictions [n, C]
      const tokens = tf.tensor1d(nodes.map((u) => tree.tokens[u]), 'int32');
      const out = this.model.draftStep(g, tokens, tf.tensor2d(mask, [n, S0 + n]), this.cache, this.tables); // [n, C], [n, V]
      return { parts: n === 1 ? [out.f] : (tf.split(out.f, n, 0) as tf.Tensor2D[]), logits: out.logits };
    });
    this.draftForwards += 1;
    nodes.forEach((u, i) => states.set(u, parts[i]));
    const data = (await logits.data()) as Float32Array;
    logits.dispose();
    nodes.forEach((u, i) => logitsAt.set(u, data.subarray(i * V, (i + 1) * V)));
  }

  private restart(): void {
    this.cache.dispose();
    this.hold?.dispose();
    this.hold = null;
  }
}
