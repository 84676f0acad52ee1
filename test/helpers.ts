/** Small helpers shared by the tests. */
import * as tf from '@tensorflow/tfjs';
import { beforeAll } from 'vitest';
import { initBackend } from '../src/backend/index';
import { roomInWindow } from '../src/decode/context';
import type { CommitInfo, DraftContext, Drafter, VerifyTarget } from '../src/decode/drafter';
import type { ChildDraw, DraftTree } from '../src/decode/draft_tree';
import { generate } from '../src/decode/ar';
import { SamplingConfig, samplingProbs } from '../src/decode/sampling';
import type { MtpConfig, ModelConfig } from '../src/config';
import { MODEL_DEFAULTS } from '../src/config';
import type { MtpModel } from '../src/model/mtp_model';
import type { Transformer } from '../src/model/transformer';
import type { SequentialModel } from '../src/model/sequential';
import { Rng } from '../src/util/rng';

/** Largest absolute elementwise difference of two equally long arrays. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length mismatch: ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return Number.isNaN(m) ? Infinity : m;
}

/** Largest |a − b| over the largest |b| (at least 1, so an absolute error for small values); Infinity for NaN. */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let scale = 1;
  for (let i = 0; i < b.length; i++) scale = Math.max(scale, Math.abs(b[i]));
  return maxAbsDiff(a, b) / scale;
}

/** n random token ids in [0, V) from a seed. */
export function randomTokens(n: number, V: number, seed: number): number[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => rng.int(V));
}

/**
 * Pearson chi-square of observed counts against expected probabilities, pooling cells whose expected
 * count is below 5; returns the statistic and the 0.999 critical value (Wilson–Hilferty).
 */
export function chiSquare(counts: number[], probs: number[], n: number): { stat: number; critical: number } {
  const bins: [number, number][] = [];
  let pooled: [number, number] = [0, 0];
  counts.forEach((c, i) => {
    const e = probs[i] * n;
    if (e < 5) pooled = [pooled[0] + c, pooled[1] + e];
    else bins.push([c, e]);
  });
  if (pooled[1] > 0) bins.push(pooled);
  const stat = bins.reduce((acc, [o, e]) => acc + (o - e) ** 2 / Math.max(e, 1e-9), 0);
  const df = bins.length - 1;
  const z = 3.0902; // standard normal 0.999 quantile
  const critical = df * (1 - 2 / (9 * df) + z * Math.sqrt(2 / (9 * df))) ** 3;
  return { stat, critical };
}

// ---------------------------------------------------------------------------------------------------
// Decoding-engine helpers: the true greedy continuation, an oracle drafter that drafts from it, the
// step counts the engine must report for such a drafter, a recording wrapper around a real drafter,
// and from-scratch references of the variants' drafts (fresh caches, full forwards over the window).

/** The prompt followed by its plain greedy continuation of n tokens: absolute index → the true token. */
export async function greedyTruth(target: VerifyTarget, prompt: readonly number[], n: number): Promise<number[]> {
  return [...prompt, ...(await generate(target, prompt, { maxNewTokens: n })).tokens];
}

export interface OracleOptions {
  /** Deepest draft (tokens per step ≤ depth + 1). */
  depth: number;
  /** Children of every node (default 1: a chain); the tree is complete, width^d nodes at depth d. */
  width?: number;
  /**
   * Where the true token x[index] sits among the children of a node on the true path, at draft depth
   * `depth` (1-based): 0 = the first child, 1 = the second, …; < 0 or ≥ width = absent (every child
   * wrong). Default: always the first child.
   */
  rankOf?: (index: number, depth: number) => number;
}

/**
 * A test-only drafter that knows the true greedy continuation `truth` (from `greedyTruth`) and drafts
 * complete trees whose nodes are right or deliberately wrong where `rankOf` says. It drafts from the
 * first step on (the prefill included) and throws if the committed sequence ever leaves the truth.
 * Nodes are numbered depth by depth, so a true path through later children is not the first nodes.
 */
export class OracleDrafter implements Drafter {
  readonly name = 'oracle';
  readonly maxDepth: number;
  readonly draftForwards = 0;
  /** Every tree proposed, and the accepted path of every commit. */
  readonly trees: DraftTree[] = [];
  readonly paths: number[][] = [];
  private readonly width: number;
  private readonly rankOf: (index: number, depth: number) => number;

  constructor(
    private readonly truth: readonly number[],
    private readonly V: number,
    opts: OracleOptions,
  ) {
    this.maxDepth = opts.depth;
    this.width = opts.width ?? 1;
    this.rankOf = opts.rankOf ?? (() => 0);
  }

  propose(ctx: DraftContext): DraftTree {
    const L = ctx.seq.length;
    ctx.seq.forEach((t, i) => {
      if (t !== this.truth[i]) throw new Error(`oracle: the committed sequence left the truth at index ${i}`);
    });
    const tokens = [ctx.seq[L - 1]];
    const parents = [-1];
    const onTruth = [true];
    let level = [0];
    for (let d = 1; d <= Math.min(this.maxDepth, ctx.maxDepth); d++) {
      const i = L - 1 + d;
      const t = this.truth[i];
      if (t === undefined) throw new Error(`oracle: no true token at index ${i}; generate a longer truth`);
      const r = this.rankOf(i, d);
      const wrongs = Array.from({ length: this.width }, (_, j) => (t + 1 + j) % this.V);
      const next: number[] = [];
      for (const u of level) {
        const kids = onTruth[u] && r >= 0 && r < this.width ? [...wrongs.slice(0, r), t, ...wrongs.slice(r, this.width - 1)] : wrongs;
        for (const tok of kids) {
          next.push(tokens.length);
          tokens.push(tok);
          parents.push(u);
          onTruth.push(onTruth[u] && tok === t);
        }
      }
      level = next;
    }
    const tree = { tokens, parents };
    this.trees.push(tree);
    return tree;
  }

  commit(info: CommitInfo): void {
    this.paths.push([...info.path]);
  }

  dispose(): void {}
}

/**
 * What the engine must report for an OracleDrafter run of `n` tokens after a prompt of `promptLength`
 * (greedy acceptance): each step drafts min(depth, tokens left − 1, room in the window − 1) deep
 * (decode/context.ts) and accepts the leading depths whose truth the tree holds; depth j is attempted
 * when the accepted node at depth j − 1 has children.
 */
export function oraclePlan(
  promptLength: number, n: number, blockSize: number, opts: OracleOptions,
): { steps: number[]; attempts: number[]; accepts: number[]; alpha: number[] } {
  const width = opts.width ?? 1;
  const rankOf = opts.rankOf ?? (() => 0);
  const steps: number[] = [];
  const attempts: number[] = [];
  const accepts: number[] = [];
  const end = promptLength + n;
  for (let L = promptLength; L < end; ) {
    const d = Math.max(0, Math.min(opts.depth, end - L - 1, roomInWindow(L, blockSize) - 1));
    let a = 0;
    while (a < d) {
      const r = rankOf(L + a, a + 1);
      if (r < 0 || r >= width) break;
      a += 1;
    }
    for (let j = 0; j <= Math.min(a, d - 1); j++) {
      attempts[j] = (attempts[j] ?? 0) + 1;
      accepts[j] = (accepts[j] ?? 0) + (j < a ? 1 : 0);
    }
    steps.push(a + 1);
    L += a + 1;
  }
  return { steps, attempts, accepts, alpha: attempts.map((x, i) => accepts[i] / x) };
}

/** One proposal of a wrapped drafter: what it saw and what it returned. */
export interface ProposalRecord {
  /** Committed tokens at the proposal (the root last). */
  seq: number[];
  maxDepth: number;
  sample: boolean;
  sampling: SamplingConfig;
  tree: DraftTree;
  /** Window of the last verification forward: the one whose target features the drafter holds (−1 before the prefill). */
  windowStart: number;
}

/** Wraps a drafter, delegating everything, and records each proposal (copied) and each commit. */
export class RecordingDrafter implements Drafter {
  readonly records: ProposalRecord[] = [];
  readonly commits: { path: number[]; windowStart: number; reset: boolean }[] = [];
  private lastWindow = -1;

  constructor(readonly inner: Drafter) {}

  get name(): string {
    return this.inner.name;
  }

  get maxDepth(): number {
    return this.inner.maxDepth;
  }

  get draftForwards(): number {
    return this.inner.draftForwards;
  }

  async propose(ctx: DraftContext): Promise<DraftTree> {
    const tree = await this.inner.propose(ctx);
    const draws = tree.draws?.map((d): ChildDraw | undefined => (d && d.kind !== 'deterministic' ? { kind: d.kind, q: d.q.slice() } : d));
    this.records.push({
      seq: [...ctx.seq],
      maxDepth: ctx.maxDepth,
      sample: ctx.sample,
      sampling: { ...ctx.sampling },
      tree: { tokens: [...tree.tokens], parents: [...tree.parents], draws },
      windowStart: this.lastWindow,
    });
    return tree;
  }

  commit(info: CommitInfo): void | Promise<void> {
    this.lastWindow = info.windowStart;
    this.commits.push({ path: [...info.path], windowStart: info.windowStart, reset: info.reset });
    return this.inner.commit(info);
  }

  dispose(): void {
    this.inner.dispose();
  }
}

/** The tokens of the path root → node, the root excluded. */
export function pathTokens(tree: DraftTree, node: number): number[] {
  const out: number[] = [];
  for (let u = node; u > 0; u = tree.parents[u]) out.unshift(tree.tokens[u]);
  return out;
}

/**
 * Checks a proposed tree against reference logits: for every node u with children, `logitsAt(u)` is
 * the drafter's distribution there, recomputed from scratch. Sampled children (draws[u] not
 * deterministic) must come with q = samplingProbs(logits) (to 1e-4) and distinct tokens of q > 0;
 * deterministic ones must be the top ranks 0, 1, … of the logits in order (ties within `eps` allowed).
 * Returns a description of the first mismatch, or null; and how many nodes were checked.
 */
export function checkTreeAgainst(
  tree: DraftTree, logitsAt: (node: number) => ArrayLike<number>, sampling: SamplingConfig, eps = 1e-4,
): { error: string | null; checked: number } {
  const kids: number[][] = tree.parents.map(() => []);
  tree.parents.forEach((p, i) => i > 0 && kids[p].push(i));
  let checked = 0;
  for (let u = 0; u < tree.tokens.length; u++) {
    if (kids[u].length === 0) continue;
    const logits = logitsAt(u);
    const toks = kids[u].map((c) => tree.tokens[c]);
    if (new Set(toks).size !== toks.length) return { error: `node ${u}: repeated child tokens [${toks}]`, checked };
    const draw = tree.draws?.[u];
    checked += 1;
    if (draw && draw.kind !== 'deterministic') {
      const q = samplingProbs(logits, sampling);
      const diff = maxAbsDiff(q, draw.q);
      if (!(diff < 1e-4)) return { error: `node ${u}: q differs from the reference by ${diff}`, checked };
      if (toks.some((t) => !(q[t] > 0))) return { error: `node ${u}: a child token has q = 0`, checked };
      continue;
    }
    for (let j = 0; j + 1 < toks.length; j++) {
      if (logits[toks[j]] < logits[toks[j + 1]] - eps) return { error: `node ${u}: children [${toks}] not in rank order`, checked };
    }
    const lowest = logits[toks[toks.length - 1]];
    for (let v = 0; v < logits.length; v++) {
      if (!toks.includes(v) && logits[v] > lowest + eps) return { error: `node ${u}: token ${v} (logit ${logits[v]}) outranks the children [${toks}] (lowest ${lowest})`, checked };
    }
  }
  return { error: null, checked };
}

/**
 * Heads' drafts from scratch (parallel heads, Medusa): fresh caches, `decodeLogits` over the window's
 * committed tokens before the root, seq[W .. L−2]; row d at the last position (L − 2) predicts the
 * token d places after the root, i.e. draft depth d. Returns [depth][V] for d = 1..depth.
 */
export function headsDraftLogits(model: MtpModel, seq: readonly number[], W: number, depth: number): Float32Array[] {
  const L = seq.length;
  const V = model.config.vocabSize;
  const caches = model.newCaches();
  const data = tf.tidy(() => {
    const rows = model.decodeLogits(seq.slice(W, L - 1) as number[], caches); // [heads, T, V]
    const T = rows.shape[1];
    return tf.slice(rows, [1, T - 1, 0], [depth, 1, V]).dataSync() as Float32Array;
  });
  caches.dispose();
  return Array.from({ length: depth }, (_, d) => data.slice(d * V, (d + 1) * V));
}

/**
 * A sequential model's draft logits from scratch for the child of the node reached by `path` (its
 * tokens, depth = path.length): the trunk over the window seq[W .. L−2] (fresh caches), then module
 * m = 1 .. path.length + 1 over positions [W, L − 2], each reading the token m places ahead (the
 * committed text, then the path's drafts) and module m − 1's states; module path.length + 1's logits
 * at position L − 2 predict the token at depth path.length + 1.
 */
export function sequentialDraftLogits(model: SequentialModel, seq: readonly number[], W: number, path: readonly number[]): Float32Array {
  const L = seq.length;
  const ext = [...seq, ...path];
  const caches = model.newCaches();
  const data = tf.tidy(() => {
    let h = model.trunkStep(tf.tensor1d(seq.slice(W, L - 1) as number[], 'int32'), caches).hidden;
    let last: tf.Tensor1D | null = null;
    for (let m = 1; m <= path.length + 1; m++) {
      const step = model.moduleStep(m, h, tf.tensor1d(ext.slice(W + m, L - 1 + m), 'int32'), caches);
      h = step.hidden;
      last = step.last;
    }
    return last!.dataSync() as Float32Array;
  });
  caches.dispose();
  return data;
}

/** Vocabulary of the sampling-exactness tests: small enough to enumerate every sequence of a few tokens. */
export const TINY_V = 6;

/** A 6-token model with peaked distributions that differ between heads (large init), for the χ² tests. */
export function peakedConfig(mtp: MtpConfig): ModelConfig {
  return { ...MODEL_DEFAULTS, vocabSize: TINY_V, blockSize: 16, nLayer: 2, nHead: 2, nEmbd: 16, initStd: 0.6, seed: 77, mtp };
}

/**
 * Exact probability of every continuation x1…xn of `prompt` when sampling from `trunk` alone with `s`, by
 * enumeration: index Σ xᵢ·V^(n−i) (x1 most significant).
 */
export function exactJoint(trunk: Transformer, prompt: readonly number[], s: SamplingConfig, n: number): number[] {
  const V = trunk.config.vocabSize;
  const next = (ctx: number[]) => samplingProbs(tf.tidy(() => trunk.forward(tf.tensor2d([ctx], [1, ctx.length], 'int32')).slice([0, ctx.length - 1, 0], [1, 1, V]).dataSync()), s);
  const out: number[] = [];
  const walk = (ctx: number[], p: number, left: number) => {
    if (left === 0) return void out.push(p);
    const q = next(ctx);
    for (let x = 0; x < V; x++) walk([...ctx, x], p * q[x], left - 1);
  };
  walk([...prompt], 1, n);
  return out;
}

/** Marginal over the first (`keep` = 'first') or last two of three tokens of a joint from exactJoint(…, 3) or counts in its layout. */
export function twoOfThree(joint3: number[], V: number, keep: 'first' | 'last'): number[] {
  return Array.from({ length: V * V }, (_, i) =>
    keep === 'first' ? joint3.slice(i * V, (i + 1) * V).reduce((a, b) => a + b, 0) : Array.from({ length: V }, (_, a) => joint3[a * V * V + i]).reduce((a, b) => a + b, 0),
  );
}

/**
 * Starts the webgpu backend before a test file's tests (Dawn's software adapter where there is no GPU). Without an
 * adapter the file fails with the reason, unless MTP_SKIP_WEBGPU is set: then every test that calls the returned
 * guard with its context is skipped, saying why.
 */
export function webgpuBeforeAll(): (ctx: { skip: (note?: string) => void }) => void {
  let skipReason: string | null = null;
  beforeAll(async () => {
    const info = await initBackend('webgpu').catch((e: Error) => e);
    if (info instanceof Error) {
      if (!process.env.MTP_SKIP_WEBGPU) throw new Error(`${info.message} (MTP_SKIP_WEBGPU=1 skips these tests)`);
      skipReason = `MTP_SKIP_WEBGPU is set: ${info.message}`;
    }
  }, 60_000);
  return (ctx) => {
    if (skipReason !== null) ctx.skip(skipReason);
  };
}
