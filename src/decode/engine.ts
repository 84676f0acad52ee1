/**
 * The decoding engine: one loop for every decoder. Plain autoregressive decoding, blockwise parallel
 * decoding (Stern et al. 2018), self-speculative decoding with MTP heads or modules, Medusa tree
 * decoding (Cai et al. 2024), prompt lookup (Saxena 2023), speculative sampling (Leviathan et al.
 * 2023; Chen et al. 2023) and unverified emission are all (drafter × acceptance rule) run here.
 *
 * A session owns the committed sequence, the target's KV cache, the context window and the
 * statistics. Each step:
 * 1. propose: the drafter returns a draft tree whose root is the last committed token
 *    (decode/draft_tree.ts; a root alone is a plain AR step);
 * 2. verify: one forward of the target over the committed tokens the cache lacks (the root last) and
 *    the tree's nodes, with the tree mask and position ids (root position + depth);
 * 3. accept: the acceptance rule (decode/acceptance.ts) turns the target's rows at the nodes into the
 *    accepted path and the bonus token;
 * 4. commit: the path's tokens and the bonus join the sequence; the cache keeps the accepted nodes'
 *    K/V in place (a truncate when they are the first nodes, a gather otherwise); the drafter hears
 *    the path with the target's features at the committed rows.
 * So a step commits 1 + accepted tokens for one forward, and the prefill is the first step.
 *
 * The context window: the position table has blockSize rows; the window that predicts token n is a
 * pure function of n (decode/context.ts), so a tree never spans two windows, and when the window
 * slides the cache restarts and the window's tokens are fed again. Every decoder therefore sees
 * exactly the context plain decoding sees, which is what makes greedy verification token-identical.
 */
import * as tf from '@tensorflow/tfjs';
import { MASKED } from '../model/transformer';
import type { KVCache } from '../model/kv_cache';
import { Rng } from '../util/rng';
import type { AcceptanceRule, TargetRows, Verdict } from './acceptance';
import { greedyAcceptance } from './acceptance';
import { planFeed, roomInWindow } from './context';
import type { Drafter, VerifyTarget } from './drafter';
import { checkTree, DraftTree, isChain, pruneTree, rootOnly, treeDepths, treeMask } from './draft_tree';
import { argmax } from './sampling';
import { finishStats, SpeculativeStats, speculativeStats } from './stats';

export interface EngineOptions {
  /** Tokens to generate. */
  maxNewTokens: number;
  /** How drafts are judged (default: greedy, lossless). */
  acceptance?: AcceptanceRule;
  /** Seed of the run's random stream (sampled drafts, speculative sampling, typical roots). */
  seed?: number;
  /** Time each phase of a step (see StepProfile); adds a device sync per phase on asynchronous backends. */
  profile?: boolean;
  /** Name in the statistics (default: drafter and rule). */
  method?: string;
  /** Called after every step with the tokens generated so far (e.g. a progress bar). */
  onProgress?: (generated: number) => void;
}

/** Wall-clock milliseconds spent in each phase, summed over the steps (profile: true). */
export interface StepProfile {
  /** The drafter's propose and commit (its own networks and bookkeeping). */
  draft: number;
  /** Building the verification inputs (mask, positions) and running the target's forward. */
  verify: number;
  /** The one device → host read of the target's rows. */
  read: number;
  /** The acceptance rule. */
  accept: number;
  /** KV-cache truncate / gather. */
  cache: number;
  /** Whole steps; minus the phases above = the loop's own overhead. */
  total: number;
}

export interface EngineStats extends SpeculativeStats {
  /** Forwards of the drafter's own networks (not counted in τ). */
  draftForwards: number;
}

export interface EngineResult {
  /** The generated tokens (without the prompt). */
  tokens: number[];
  stats: EngineStats;
  /** Tokens committed by each verification forward (the prefill's first). */
  steps: number[];
  profile?: StepProfile;
}

/** What one step did, for lessons that draw it. */
export interface StepRecord {
  tree: DraftTree;
  verdict: Verdict;
  /** Tokens committed: the path's drafts, then the bonus. */
  committed: number[];
}

const now = () => performance.now();

export class DecodeSession {
  /** Prompt + committed tokens. */
  readonly seq: number[];
  readonly promptLength: number;
  readonly rule: AcceptanceRule;
  readonly rng: Rng;
  /** Verification forwards so far (the prefill included). */
  forwards = 0;
  readonly steps: number[] = [];
  /** Per draft depth d = 1.. : steps whose accepted node at depth d − 1 had children, and steps that accepted one. */
  readonly attempts: number[] = [];
  readonly accepts: number[] = [];
  readonly profile: StepProfile = { draft: 0, verify: 0, read: 0, accept: 0, cache: 0, total: 0 };
  private readonly cache: KVCache;
  /** Time each phase (EngineOptions.profile). */
  private readonly timed: boolean;
  /** First sequence position the cache holds (−1 before the prefill). */
  private windowStart = -1;

  constructor(
    readonly target: VerifyTarget,
    readonly drafter: Drafter | null,
    prompt: readonly number[],
    opts: { acceptance?: AcceptanceRule; seed?: number; profile?: boolean } = {},
  ) {
    const V = target.config.vocabSize;
    if (prompt.length === 0) throw new Error('decode: the prompt must hold at least one token');
    for (const t of prompt) if (!Number.isInteger(t) || t < 0 || t >= V) throw new Error(`decode: prompt token ${t} is outside the vocabulary [0, ${V})`);
    this.seq = [...prompt];
    this.promptLength = prompt.length;
    this.rule = opts.acceptance ?? greedyAcceptance();
    this.rng = new Rng(opts.seed ?? 0);
    this.timed = opts.profile ?? false;
    this.cache = target.newCache();
  }

  /** Tokens generated so far. */
  get generated(): number {
    return this.seq.length - this.promptLength;
  }

  /** One propose → verify → accept → commit step generating at most `budget` tokens (≥ 1). */
  async step(budget = Infinity): Promise<StepRecord> {
    if (!(budget >= 1)) throw new Error(`decode: a step generates at least one token, budget ${budget}`);
    const { blockSize, vocabSize: V } = this.target.config;
    const L = this.seq.length;
    const t0 = now();
    // 1. propose: the tree may be as deep as the drafter, the tokens left and the window allow
    const maxDepth = Math.max(0, Math.min(this.drafter?.maxDepth ?? 0, budget - 1, roomInWindow(L, blockSize) - 1));
    let tree = rootOnly(this.seq[L - 1]);
    if (this.drafter && maxDepth > 0) {
      const proposed = await this.drafter.propose({ seq: this.seq, maxDepth, sampling: this.rule.sampling, sample: this.rule.sampleDrafts, rng: this.rng });
      checkTree(proposed, V);
      tree = pruneTree(proposed, maxDepth);
      if (tree.tokens[0] !== this.seq[L - 1]) throw new Error(`decode: drafter '${this.drafter.name}' proposed root ${tree.tokens[0]}, but the last committed token is ${this.seq[L - 1]}`);
    }
    const t1 = now();
    // 2. verify: committed tokens the cache lacks (root last), then the tree's nodes
    const N = tree.tokens.length;
    const depths = treeDepths(tree);
    const plan = planFeed(this.windowStart, this.cache.length, L, Math.max(...depths), blockSize);
    if (plan.reset) {
      this.cache.dispose();
      this.windowStart = plan.start;
    }
    const committed = this.seq.slice(plan.from);
    const c = committed.length; // the root is committed[c − 1]
    const L0 = this.cache.length;
    const T = c + N - 1;
    const chain = isChain(tree);
    const rootPos = L - 1 - this.windowStart;
    const positions = chain ? undefined : [...committed.map((_, i) => plan.from - this.windowStart + i), ...depths.slice(1).map((d) => rootPos + d)];
    const out = tf.tidy(() => {
      const mask = chain ? undefined : tf.tensor2d(stepMask(tree, L0, c), [T, L0 + T]);
      const { logits, features } = this.target.verifyForward([...committed, ...tree.tokens.slice(1)], this.cache, { positions, mask });
      const rows = tf.slice(logits, [c - 1, 0], [N, V]); // [N, V]: the target after each node
      return { features: features as tf.Tensor2D, read: this.rule.reads === 'argmax' ? tf.argMax(rows, 1) : rows };
    });
    this.forwards += 1;
    const t2 = now();
    const data = await out.read.data(); // the step's one device → host read
    out.read.dispose();
    const t3 = now();
    // 3. accept
    const target: TargetRows = this.rule.reads === 'argmax' ? { vocabSize: V, argmax: data as Int32Array } : { vocabSize: V, argmax: Int32Array.from({ length: N }, (_, n) => argmax((data as Float32Array).subarray(n * V, (n + 1) * V))), logits: data as Float32Array };
    const verdict = this.rule.accept(tree, target, this.rng);
    checkVerdict(verdict, tree, V);
    const t4 = now();
    // 4. commit: the cache keeps the root and the accepted nodes
    const { path } = verdict;
    const drafts = path.slice(1).map((j) => tree.tokens[j]);
    const contiguous = path.every((j, i) => j === i);
    if (contiguous) this.cache.truncate(L0 + c + drafts.length);
    else this.cache.gather([...Array.from({ length: L0 + c }, (_, i) => i), ...path.slice(1).map((j) => L0 + c - 1 + j)]);
    const t5 = now();
    this.seq.push(...drafts, verdict.bonus);
    this.steps.push(drafts.length + 1);
    this.count(tree, path);
    try {
      await this.drafter?.commit({
        tree,
        path,
        bonus: verdict.bonus,
        seq: this.seq,
        rows: [...Array.from({ length: c }, (_, i) => i), ...path.slice(1).map((j) => c - 1 + j)],
        firstPosition: plan.from,
        features: out.features,
        reset: plan.reset,
        windowStart: this.windowStart,
      });
    } finally {
      out.features.dispose();
    }
    const t6 = now();
    if (this.timed) {
      const p = this.profile;
      p.draft += t1 - t0 + (t6 - t5);
      p.verify += t2 - t1;
      p.read += t3 - t2;
      p.accept += t4 - t3;
      p.cache += t5 - t4;
      p.total += t6 - t0;
    }
    return { tree, verdict, committed: [...drafts, verdict.bonus] };
  }

  /** Steps until `maxNewTokens` more tokens are committed; returns them. */
  async run(maxNewTokens: number, onProgress?: (generated: number) => void): Promise<number[]> {
    if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) throw new Error(`decode: maxNewTokens must be an integer ≥ 0, got ${maxNewTokens}`);
    const end = this.seq.length + maxNewTokens;
    while (this.seq.length < end) {
      await this.step(end - this.seq.length);
      onProgress?.(this.generated);
    }
    return this.seq.slice(end - maxNewTokens);
  }

  /** Statistics so far (Spec-Bench conventions: τ counts the bonus token), for `ms` of wall time. */
  stats(method: string, ms: number): EngineStats {
    const base = finishStats(method, this.generated, this.forwards, ms);
    return { ...speculativeStats(base, [...this.attempts], [...this.accepts]), draftForwards: this.drafter?.draftForwards ?? 0 };
  }

  /** Releases the cache and the drafter. */
  dispose(): void {
    this.cache.dispose();
    this.drafter?.dispose();
  }

  /** αᵢ bookkeeping: depth d was attempted when the accepted node at depth d − 1 had children. */
  private count(tree: DraftTree, path: readonly number[]): void {
    const hasChildren = new Set(tree.parents.slice(1));
    for (let j = 0; j < path.length; j++) {
      if (!hasChildren.has(path[j])) break;
      this.attempts[j] = (this.attempts[j] ?? 0) + 1;
      this.accepts[j] = this.accepts[j] ?? 0;
      if (j + 1 < path.length) this.accepts[j] += 1;
    }
  }
}

/**
 * Generates `maxNewTokens` tokens after `prompt`: the target verifies what the drafter proposes (no
 * drafter = plain autoregressive decoding), judged by the acceptance rule (default greedy).
 */
export async function decode(target: VerifyTarget, drafter: Drafter | null, prompt: readonly number[], opts: EngineOptions): Promise<EngineResult> {
  const session = new DecodeSession(target, drafter, prompt, opts);
  const t0 = now();
  try {
    await session.run(opts.maxNewTokens, opts.onProgress);
  } finally {
    session.dispose();
  }
  const ms = now() - t0;
  const method = opts.method ?? `${drafter?.name ?? 'autoregressive'} · ${session.rule.name}`;
  return { tokens: session.seq.slice(prompt.length), stats: session.stats(method, ms), steps: session.steps, profile: opts.profile ? session.profile : undefined };
}

/** Additive mask [T, L0 + T] for c committed tokens (the root last) then the tree's other nodes, after L0 cached positions. */
export function stepMask(tree: DraftTree, L0: number, c: number): Float32Array {
  const N = tree.tokens.length;
  const T = c + N - 1;
  const S = L0 + T;
  const allowed = treeMask(tree); // [N][N], node 0 = the root = committed row c − 1
  const mask = new Float32Array(T * S).fill(MASKED);
  for (let i = 0; i < c; i++) mask.fill(0, i * S, i * S + L0 + i + 1);
  for (let i = 1; i < N; i++) {
    const r = (c - 1 + i) * S;
    mask.fill(0, r, r + L0 + c); // the cache and every committed token, the root included
    for (let j = 1; j < N; j++) if (allowed[i][j]) mask[r + L0 + c - 1 + j] = 0;
  }
  return mask;
}

/** Throws unless a rule's verdict is a root-first path down the tree and a token. */
function checkVerdict(v: Verdict, tree: DraftTree, V: number): void {
  const ok = v.path.length >= 1 && v.path[0] === 0 && v.path.every((j, i) => i === 0 || tree.parents[j] === v.path[i - 1]);
  if (!ok) throw new Error(`acceptance: the path [${v.path.join(', ')}] is not a root-first path down the draft tree`);
  if (!Number.isInteger(v.bonus) || v.bonus < 0 || v.bonus >= V) throw new Error(`acceptance: bonus token ${v.bonus} is outside the vocabulary [0, ${V})`);
}
