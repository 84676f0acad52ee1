/**
 * Medusa tree decoding (Cai et al. 2024, §2.1.2 tree attention; §2.3.1 typical acceptance). Each
 * step, in the reference code's stages:
 *
 * 1. candidates: the root is the base model's next token (greedy, or drawn from the typical set at
 *    temperature > 0); head d's top-k give the tokens at depth d (`treeCandidates`);
 * 2. tree forward: one forward over the N tree tokens on top of the KV cache, with the tree mask and
 *    position ids (committed length + depth);
 * 3. posterior: the longest retrieve row whose tokens are accepted — greedy: each equals the argmax
 *    of its parent's base logits (`greedyPosterior`); typical: p(token) > min(ε, δ·exp(−H(p)))
 *    (`typicalPosterior`);
 * 4. update: the accepted path's K,V move into the slots after the prefix (gather, or a truncate when
 *    the path is already contiguous); the last accepted node's base logits give the next root, and
 *    the heads, run on its hidden state only, the next top-k. A step commits accepted + 1 tokens.
 *
 * Two small device → host reads per step: the base model's choices at every node (argmax; the logits
 * for typical acceptance), then the heads' top-k at the accepted node. Running the heads at one node
 * instead of all N saves K·N·(C² + C·V) multiply-adds and a top-k over [K, N, V] per step.
 *
 * Greedy acceptance is lossless: the output equals plain greedy decoding of the base model. Past
 * blockSize the window slides exactly as in plain decoding (decode/context.ts): a step predicts
 * tokens n+1 … n+D+1 from one window, so nodes deeper than the room left are pruned from that step.
 */
import * as tf from '@tensorflow/tfjs';
import type { ModelConfig } from '../config';
import type { CacheSet } from '../model/cache_set';
import type { DecodeOptions, MtpModel } from '../model/create';
import { MASKED } from '../model/transformer';
import { Rng } from '../util/rng';
import { planFeed, roomInWindow } from './context';
import { sampleIndex } from './sampling';
import { finishStats, SpeculativeStats, speculativeStats } from './stats';
import { TreeBuffers, TreeChoices, treeBuffers } from './tree';

export type Acceptance = 'greedy' | 'typical';

/** Medusa's typical-acceptance settings (§2.3.1; posterior_threshold and posterior_alpha in the reference code). */
export const TYPICAL_DEFAULTS = { epsilon: 0.09, delta: 0.3 } as const;

export interface MedusaOptions {
  /** Tokens to generate. */
  maxNewTokens: number;
  /** Tree topology as paths of top-k ranks (decode/tree.ts); its depth is at most the model's heads. */
  tree: TreeChoices;
  /** greedy (lossless) or typical (§2.3.1); default greedy. */
  acceptance?: Acceptance;
  /** Typical only: softmax temperature; 0 (default) makes typical acceptance greedy. */
  temperature?: number;
  /** Typical only: hard probability threshold ε (default 0.09). */
  epsilon?: number;
  /** Typical only: entropy-scaled threshold δ (default 0.3). */
  delta?: number;
  /** Seed of the sampling stream (typical at temperature > 0). */
  seed?: number;
}

export interface MedusaResult {
  tokens: number[];
  /** τ, αₐ per depth d (attempts: steps whose tree reached depth d with depth d − 1 accepted), forwards, tokens/s. */
  stats: SpeculativeStats;
  /** Tokens committed by each tree forward (the last token may come without a forward). */
  steps: number[];
}

/** Accepted retrieve row and the number of drafts accepted on it (0..D). */
export interface Posterior {
  row: number;
  accept: number;
}

/** Node tokens [N]: candidates = [root, top-topk of head 1, …] taken at the tree indices. headTopk: [D][≥ topk]. */
export function treeCandidates(buf: TreeBuffers, root: number, headTopk: ArrayLike<number>[]): number[] {
  const candidates = [root];
  for (let d = 0; d < buf.depth; d++) for (let i = 0; i < buf.topk; i++) candidates.push(headTopk[d][i]);
  return buf.treeIndices.map((i) => candidates[i]);
}

/** Greedy posterior: accept along each row while a node's token is its parent's argmax; longest row wins, the first on ties. */
export function greedyPosterior(buf: TreeBuffers, tokens: ArrayLike<number>, argmaxOf: ArrayLike<number>): Posterior {
  let best: Posterior = { row: 0, accept: 0 };
  buf.retrieve.forEach((path, row) => {
    let a = 0;
    while (a + 1 < path.length && path[a + 1] >= 0 && tokens[path[a + 1]] === argmaxOf[path[a]]) a++;
    if (a > best.accept) best = { row, accept: a };
  });
  return best;
}

/** softmax(logits / temperature) in double precision; temperature > 0. */
export function softmaxAt(logits: ArrayLike<number>, temperature: number): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
  const p = new Float64Array(logits.length);
  let sum = 0;
  for (let i = 0; i < p.length; i++) sum += p[i] = Math.exp((logits[i] - max) / temperature);
  for (let i = 0; i < p.length; i++) p[i] /= sum;
  return p;
}

/** The typical-acceptance threshold of a distribution: min(ε, δ·exp(−H(p))), H in nats. */
export function typicalThreshold(p: ArrayLike<number>, epsilon: number, delta: number): number {
  let H = 0;
  for (let i = 0; i < p.length; i++) if (p[i] > 0) H -= p[i] * Math.log(p[i]);
  return Math.min(epsilon, delta * Math.exp(-H));
}

/**
 * Typical posterior: a node is accepted when its parent's probability of its token exceeds the
 * parent's threshold; each row accepts its longest accepted prefix; the longest wins, ties broken by
 * the larger Σ log p of the accepted tokens (then the first row). probsOf(node): the base
 * distribution [V] at that node, temperature applied.
 */
export function typicalPosterior(
  buf: TreeBuffers,
  tokens: ArrayLike<number>,
  probsOf: (node: number) => ArrayLike<number>,
  epsilon: number,
  delta: number,
): Posterior {
  const thresholds = new Map<number, number>();
  const threshold = (node: number) => {
    if (!thresholds.has(node)) thresholds.set(node, typicalThreshold(probsOf(node), epsilon, delta));
    return thresholds.get(node)!;
  };
  let best = { row: 0, accept: 0, logp: 0 };
  buf.retrieve.forEach((path, row) => {
    let a = 0;
    let logp = 0;
    while (a + 1 < path.length && path[a + 1] >= 0) {
      const p = probsOf(path[a])[tokens[path[a + 1]]];
      if (!(p > threshold(path[a]))) break;
      logp += Math.log(p);
      a++;
    }
    if (a > best.accept || (a === best.accept && a > 0 && logp > best.logp)) best = { row, accept: a, logp };
  });
  return { row: best.row, accept: best.accept };
}

/**
 * The distribution a root is drawn from at temperature > 0: p without the tokens below the typical
 * threshold, renormalised (the reference code's get_typical_one_token); the most likely token always stays.
 */
export function typicalFilter(p: ArrayLike<number>, epsilon: number, delta: number): Float64Array {
  const t = typicalThreshold(p, epsilon, delta);
  let top = 0;
  for (let i = 1; i < p.length; i++) if (p[i] > p[top]) top = i;
  const q = Float64Array.from(p, (x, i) => (x >= t || i === top ? x : 0));
  const sum = q.reduce((a, b) => a + b, 0);
  return q.map((x) => x / sum);
}

/** The additive mask [T, S] of c committed tokens then the tree, after L0 cached positions (S = L0 + c + N). */
function stepMask(buf: TreeBuffers, L0: number, c: number): Float32Array {
  const N = buf.size;
  const T = c + N;
  const S = L0 + T;
  const mask = new Float32Array(T * S).fill(MASKED);
  for (let i = 0; i < c; i++) mask.fill(0, i * S, i * S + L0 + i + 1);
  for (let i = 0; i < N; i++) {
    const r = (c + i) * S;
    mask.fill(0, r, r + L0 + c);
    for (let j = 0; j < N; j++) if (buf.mask[i][j]) mask[r + L0 + c + j] = 0;
  }
  return mask;
}

function checkOptions(opts: MedusaOptions, prompt: number[]): void {
  if (prompt.length === 0) throw new Error('medusa: the prompt must hold at least one token');
  if (!Number.isInteger(opts.maxNewTokens) || opts.maxNewTokens < 0) throw new Error(`medusa: maxNewTokens must be an integer ≥ 0, got ${opts.maxNewTokens}`);
  const acceptance = opts.acceptance ?? 'greedy';
  if (acceptance !== 'greedy' && acceptance !== 'typical') throw new Error(`medusa: acceptance must be 'greedy' or 'typical', got ${JSON.stringify(acceptance)}`);
  const T = opts.temperature ?? 0;
  if (!(T >= 0) || !Number.isFinite(T)) throw new Error(`medusa: temperature must be a finite number ≥ 0, got ${T}`);
  if (acceptance === 'greedy' && T > 0) throw new Error("medusa: temperature applies to acceptance 'typical' only; greedy acceptance is deterministic");
  for (const [name, v] of [['epsilon', opts.epsilon], ['delta', opts.delta]] as const) {
    if (v !== undefined && !(v >= 0 && Number.isFinite(v))) throw new Error(`medusa: ${name} must be a finite number ≥ 0, got ${v}`);
  }
}

/**
 * What tree decoding needs from a model (MedusaModel provides it): a forward returning the base
 * logits and the last hidden state, and the heads' logits at chosen hidden rows.
 */
export interface TreeDraftModel {
  readonly config: ModelConfig;
  /** 1 + K output rows: the LM head and K Medusa heads. */
  readonly k: number;
  newCaches(): CacheSet;
  /** Forward over new tokens, appending to the caches: base logits [T, V], hidden state [T, C] (caller disposes). */
  decodeHidden(tokens: number[], caches: CacheSet, opts?: DecodeOptions): { logits: tf.Tensor2D; hidden: tf.Tensor2D };
  /** Heads' logits [K, R, V] at hidden rows [R, C]. */
  headsLogits(hidden: tf.Tensor2D): tf.Tensor3D;
}

/** True for models that can draft a tree (mtp.kind 'medusa'). */
export function isTreeDraftModel(model: MtpModel): model is MtpModel & TreeDraftModel {
  const m = model as Partial<TreeDraftModel>;
  return typeof m.decodeHidden === 'function' && typeof m.headsLogits === 'function';
}

/** Generates `maxNewTokens` tokens after `prompt` with Medusa tree decoding (the model must have Medusa heads). */
export async function medusaGenerate(model: MtpModel, prompt: number[], opts: MedusaOptions): Promise<MedusaResult> {
  if (!isTreeDraftModel(model)) throw new Error(`medusa: tree decoding needs Medusa heads (mtp.kind 'medusa'), got mtp.kind '${model.config.mtp.kind}'`);
  checkOptions(opts, prompt);
  const acceptance = opts.acceptance ?? 'greedy';
  const temperature = opts.temperature ?? 0;
  const epsilon = opts.epsilon ?? TYPICAL_DEFAULTS.epsilon;
  const delta = opts.delta ?? TYPICAL_DEFAULTS.delta;
  const typical = acceptance === 'typical' && temperature > 0;
  const { blockSize, vocabSize: V } = model.config;
  const full = treeBuffers(opts.tree);
  const heads = full.depth;
  if (heads > model.k - 1) throw new Error(`medusa: the tree is ${heads} deep but the model has ${model.k - 1} Medusa heads`);
  if (full.topk > V) throw new Error(`medusa: the tree uses top-${full.topk} candidates, more than the vocabulary (${V})`);
  const pruned = new Map<number, TreeBuffers>([[heads, full]]);
  const treeOfDepth = (D: number): TreeBuffers => {
    if (!pruned.has(D)) pruned.set(D, treeBuffers(full.paths.filter((p) => p.length <= D), full.topk));
    return pruned.get(D)!;
  };
  const rng = new Rng(opts.seed ?? 0);
  const seq = [...prompt];
  const end = prompt.length + opts.maxNewTokens;
  const caches = model.newCaches();
  let cacheStart = -1;
  let hidden: tf.Tensor2D | undefined; // [n, C]: the last forward's hidden rows, for the next drafts
  let forwards = 0;
  const attempts = new Array<number>(heads).fill(0);
  const accepts = new Array<number>(heads).fill(0);
  const steps: number[] = [];
  const t0 = performance.now();

  /** One forward; keeps the last n hidden rows and reads the base model's choice there (argmax, or the distribution when typical). */
  const forward = async (feed: number[], n: number, positions?: number[], mask?: Float32Array) => {
    const T = feed.length;
    const S = caches.length + T;
    const out = tf.tidy(() => {
      const m = mask ? tf.tensor2d(mask, [T, S]) : undefined;
      const { logits, hidden: h } = model.decodeHidden(feed, caches, { positions, mask: m });
      const base = tf.slice(logits, [T - n, 0], [n, V]); // [n, V]
      return { rows: tf.slice(h, [T - n, 0], [n, -1]) as tf.Tensor2D, read: typical ? base : tf.argMax(base, 1) };
    });
    hidden?.dispose();
    hidden = out.rows;
    const data = await out.read.data(); // the step's verification read
    out.read.dispose();
    forwards += 1;
    const probs = new Map<number, Float64Array>();
    return {
      argmax: data as Int32Array,
      probsOf: (node: number): Float64Array => {
        if (!probs.has(node)) probs.set(node, softmaxAt((data as Float32Array).subarray(node * V, (node + 1) * V), temperature));
        return probs.get(node)!;
      },
    };
  };

  /** The heads' top-k at hidden row `node` of the last forward: [D][topk]. */
  const drafts = async (node: number): Promise<Int32Array[]> => {
    if (heads === 0) return [];
    const top = tf.tidy(() => tf.topk(model.headsLogits(tf.slice(hidden!, [node, 0], [1, -1])), full.topk).indices); // [K, 1, topk]
    const data = (await top.data()) as Int32Array;
    top.dispose();
    return Array.from({ length: heads }, (_, d) => data.subarray(d * full.topk, (d + 1) * full.topk));
  };

  try {
    if (opts.maxNewTokens > 0) {
      const plan = planFeed(cacheStart, caches.length, seq.length, 0, blockSize);
      if (plan.reset) {
        caches.reset();
        cacheStart = plan.start;
      }
      let out = await forward(seq.slice(plan.from), 1); // prefill
      let last = 0; // row of the last accepted node
      while (seq.length < end) {
        const root = typical ? sampleIndex(typicalFilter(out.probsOf(last), epsilon, delta), rng) : out.argmax[last];
        const n = seq.length;
        if (end - n === 1) {
          seq.push(root); // certain: no forward needed for the last token
          steps.push(1);
          break;
        }
        const D = Math.min(heads, roomInWindow(n + 1, blockSize) - 1, end - n - 1);
        const buf = treeOfDepth(D);
        const tokens = treeCandidates(buf, root, await drafts(last));
        const p = planFeed(cacheStart, caches.length, n, D + 1, blockSize);
        if (p.reset) {
          caches.reset();
          cacheStart = p.start;
        }
        const committed = seq.slice(p.from);
        const L0 = caches.length;
        const positions = [...committed.map((_, i) => p.from - cacheStart + i), ...buf.positions.map((d) => n - cacheStart + d)];
        out = await forward([...committed, ...tokens], buf.size, positions, stepMask(buf, L0, committed.length));
        const post = typical ? typicalPosterior(buf, tokens, out.probsOf, epsilon, delta) : greedyPosterior(buf, tokens, out.argmax);
        const path = buf.retrieve[post.row].slice(0, post.accept + 1);
        seq.push(...path.map((j) => tokens[j]));
        steps.push(path.length);
        for (let d = 1; d <= D; d++) {
          if (post.accept >= d - 1) attempts[d - 1] += 1;
          if (post.accept >= d) accepts[d - 1] += 1;
        }
        const prefix = L0 + committed.length;
        if (path.every((j, i) => j === i)) caches.truncate(prefix + path.length);
        else caches.gather([...Array.from({ length: prefix }, (_, i) => i), ...path.map((j) => prefix + j)]);
        last = path[path.length - 1];
      }
    }
  } finally {
    hidden?.dispose();
    caches.dispose();
  }
  const method = `medusa ${acceptance} (${full.size}-node tree)`;
  const base = finishStats(method, seq.length - prompt.length, forwards, performance.now() - t0);
  return { tokens: seq.slice(prompt.length), stats: speculativeStats(base, attempts, accepts), steps };
}
