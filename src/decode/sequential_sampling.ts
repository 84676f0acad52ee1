/**
 * Speculative sampling (Leviathan et al. 2023; Chen et al. 2023) and unverified emission with
 * DeepSeek-V3's sequential MTP modules as the drafter (DeepSeek-V3 Technical Report §2.2). Both run on
 * SequentialSession (decode/sequential.ts), which drafts, verifies and keeps the caches, the modules'
 * lag and the context window exactly as greedy decoding does; only the StepRule differs.
 *
 * Speculative sampling, lossless at temperature > 0. With p the trunk's next-token distribution and
 * q_m module m's, both after the same temperature / top-k / top-p (samplingProbs):
 * - a step's first token x₁ was drawn from p: it is the previous step's bonus or correction;
 * - module m = 1..D drafts x_{m+1} ~ q_m, where q_m is module m's distribution at the last committed
 *   position given x₁..x_m: module m takes the draft of depth m−1 as its input, so each draft is
 *   sampled on the host before the next module runs (one host read per module);
 * - one trunk forward over x₁..x_kk gives p after every prefix; x_{j+1} is accepted with probability
 *   min(1, p(x_{j+1}) / q_j(x_{j+1})); on a rejection a token is drawn from norm(max(0, p − q_j)) and
 *   the step ends;
 * - with every draft accepted, the next step's first token is drawn from p after the last one (the bonus).
 * The output then has exactly the distribution of sampling from the trunk alone, whatever the modules
 * propose. At temperature 0 p and q are one-hot: a draft stands exactly when greedy verification keeps
 * it, and the output is the greedy output.
 *
 * Unverified emission — LOSSY. Each trunk forward yields x₁ (argmax, or a sample at temperature > 0),
 * the modules draft x₂..x_k the same way, and all k are emitted without verification; the next forward
 * runs over them. τ = k by construction, but the modules' guesses go into the text unchecked. A block
 * stays inside the window of its first token and its forward inside one window. With k = 1 the
 * modules are unused and it is plain greedy (or sampled) decoding.
 */
import * as tf from '@tensorflow/tfjs';
import type { SequentialModel } from '../model/sequential';
import { Rng } from '../util/rng';
import { roomInWindow } from './context';
import { SamplingConfig, sampleIndex, tokenDistribution, validateSampling } from './sampling';
import { greedyRule, SequentialSession, SequentialStats, StepRule } from './sequential';
import { AcceptanceRule, leviathanAcceptance, residual } from './acceptance';
import type { SpecSamplingOptions, SpecSamplingResult } from './spec_sampling';
import type { UnverifiedOptions } from './unverified';
import { DecodeResult, finishStats } from './stats';

export interface SequentialSamplingResult extends SpecSamplingResult {
  stats: SequentialStats;
}

/** Draws from a module's logits [V] on the host; returns the draw [1] int32 and its distribution. */
async function drawFrom(logits: tf.Tensor1D, s: SamplingConfig, rng: Rng): Promise<{ token: tf.Tensor1D; q: Float64Array }> {
  const q = tokenDistribution((await logits.data()) as Float32Array, s);
  return { token: tf.tensor1d([sampleIndex(q, rng)], 'int32'), q };
}

/**
 * Leviathan et al.'s rule with sequential module drafts: q_m of the current step is kept from the
 * draft until verification judges x_{m+1}; `acceptance` gives the probability of keeping a draft.
 */
export function speculativeRule(s: SamplingConfig, rng: Rng, acceptance: AcceptanceRule = leviathanAcceptance): StepRule {
  const q: Float64Array[] = []; // q[m − 1] = q_m [V] of the current step
  return {
    async draft(m, logits) {
      const drawn = await drawFrom(logits, s, rng);
      q[m - 1] = drawn.q;
      return drawn.token;
    },
    rows: (logits) => logits, // [kk, V]
    judge(j, x, row) {
      const p = tokenDistribution(row, s);
      if (rng.next() < acceptance(p, q[j - 1], x)) return null;
      return sampleIndex(residual(p, q[j - 1]), rng);
    },
    next: (row) => sampleIndex(tokenDistribution(row, s), rng),
  };
}

/** Unverified emission: every draft stands; tokens are argmaxes at temperature 0, else samples. */
export function emissionRule(s: SamplingConfig, rng: Rng): StepRule {
  if (s.temperature === 0) return { ...greedyRule, judge: () => null };
  return {
    draft: async (_m, logits) => (await drawFrom(logits, s, rng)).token,
    rows: (logits) => logits, // [kk, V]
    judge: () => null,
    next: (row) => sampleIndex(tokenDistribution(row, s), rng),
  };
}

/** Throws for a k outside [1, 1 + D], an empty prompt or a bad token count. */
function validate(what: string, model: SequentialModel, k: number, prompt: number[], maxNewTokens: number): void {
  if (!Number.isInteger(k) || k < 1 || k > model.k) throw new Error(`${what}: k must be an integer in [1, ${model.k}], got ${k}`);
  if (prompt.length === 0) throw new Error(`${what}: the prompt must hold at least one token`);
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 0) throw new Error(`maxNewTokens must be an integer ≥ 0, got ${maxNewTokens}`);
}

/**
 * Speculative sampling of `maxNewTokens` tokens after `prompt` with the first k − 1 modules drafting
 * (k default 1 + D; temperature default 1). Seeded: the same seed repeats a run exactly.
 */
export async function sequentialSpeculativeSample(model: SequentialModel, prompt: number[], opts: SpecSamplingOptions): Promise<SequentialSamplingResult> {
  const s: SamplingConfig = { temperature: opts.temperature ?? 1, topK: opts.topK ?? 0, topP: opts.topP ?? 1 };
  validateSampling(s);
  const k = opts.k ?? model.k;
  validate('speculative sampling', model, k, prompt, opts.maxNewTokens);
  const session = new SequentialSession(model, prompt, k - 1, speculativeRule(s, new Rng(opts.seed ?? 0), opts.acceptance));
  const t0 = performance.now();
  let steps: number[];
  try {
    steps = await session.run(opts.maxNewTokens);
  } finally {
    session.dispose();
  }
  return { tokens: session.seq.slice(prompt.length), stats: session.stats(`speculative sampling k=${k}`, performance.now() - t0), steps };
}

/**
 * Unverified emission (lossy) of `maxNewTokens` tokens after `prompt`: k tokens per trunk forward, the
 * trunk's next token and k − 1 module drafts (k default 1 + D; temperature default 0).
 */
export async function sequentialUnverified(model: SequentialModel, prompt: number[], opts: UnverifiedOptions): Promise<DecodeResult> {
  const s: SamplingConfig = { temperature: opts.temperature ?? 0, topK: opts.topK ?? 0, topP: opts.topP ?? 1 };
  validateSampling(s);
  const k = opts.k ?? model.k;
  validate('unverified emission', model, k, prompt, opts.maxNewTokens);
  const { blockSize } = model.config;
  const session = new SequentialSession(model, prompt, k - 1, emissionRule(s, new Rng(opts.seed ?? 0)));
  const end = prompt.length + opts.maxNewTokens;
  const t0 = performance.now();
  try {
    if (opts.maxNewTokens > 0) {
      await session.prefill();
      for (;;) {
        const n = session.seq.length;
        const kk = Math.min(k, end - n, roomInWindow(n, blockSize), roomInWindow(n + 1, blockSize));
        if (n + kk === end) {
          await session.emitLast(kk); // the last block needs no forward after it
          break;
        }
        await session.advance(kk);
      }
    }
  } finally {
    session.dispose();
  }
  const method = `unverified k=${k} (lossy)`;
  return { tokens: session.seq.slice(prompt.length), stats: finishStats(method, session.seq.length - prompt.length, session.forwards, performance.now() - t0) };
}
