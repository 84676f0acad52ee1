/**
 * Speculative sampling and unverified emission with sequential MTP modules (DeepSeek-V3 §2.2 drafting,
 * Leviathan et al. 2023 acceptance), reached through the shared entry points. Sampling is exact: on a
 * 6-symbol vocabulary with peaked random weights and D = 2, the joint distribution of the first two
 * sampled tokens — the prefill's, then module 1's sampled draft judged — and of the first three, where
 * module 2's draft (made from module 1's sampled draft) is judged too, matches exact enumeration from
 * the main model under a chi-square test at significance 0.001, while an always-accept rule is caught.
 * Temperature 0 is greedy with greedy's acceptances; seeds repeat. Unverified emission equals a
 * full-forward reference (past the context window), is greedy with k = 1 and emits 3 tokens per forward
 * after the prefill with D = 2. No tensor leaks.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import type { ModelConfig } from '../src/config';
import { initBackend } from '../src/backend/index';
import { createModel } from '../src/model/create';
import { SequentialModel } from '../src/model/sequential';
import { generate } from '../src/decode/ar';
import { roomInWindow, windowStart } from '../src/decode/context';
import type { SamplingConfig } from '../src/decode/sampling';
import { AcceptProbability, naiveAcceptance } from '../src/decode/acceptance';
import { sequentialGenerate, speculativeSample, unverifiedGenerate } from '../src/decode/decoders';
import { chiSquare, exactJoint, peakedConfig, sequentialDraftLogits, TINY_V, twoOfThree } from './helpers';

const V = TINY_V;
const cfg: ModelConfig = peakedConfig({ kind: 'sequential', depth: 2, lambda: 0.3, lambdaLate: 0.1, lambdaSwitch: 0.7 });
const prompt = [1, 4, 2];
const SAMPLES = 3000;
const NAIVE_SAMPLES = 500;

const exactJoint3 = (model: SequentialModel, s: SamplingConfig) => exactJoint(model.trunk, prompt, s, 3);
const firstTwo = (joint3: number[]) => twoOfThree(joint3, V, 'first');


/** Counts of the first three tokens over `runs` seeded runs with both modules drafting. */
async function sampleJoint3(model: SequentialModel, s: SamplingConfig, runs: number, acceptance?: AcceptProbability): Promise<number[]> {
  const counts = new Array(V * V * V).fill(0);
  for (let i = 0; i < runs; i++) {
    // 4 tokens: the prefill samples x1 (no module features yet); the next step drafts x2, x3 with modules 1, 2 and judges them
    const out = await speculativeSample(model, prompt, { ...s, maxNewTokens: 4, k: 3, seed: 1000 + i, acceptance });
    counts[(out.tokens[0] * V + out.tokens[1]) * V + out.tokens[2]] += 1;
  }
  return counts;
}

/**
 * Unverified emission at temperature 0 from full forwards without caches. The prefill commits the
 * trunk's argmax. Every later step at L committed tokens drafts d = min(k − 1, tokens left − 1, room in
 * the window − 1) tokens, each the argmax of module m's logits recomputed from scratch
 * (sequentialDraftLogits) over the window of the previous step's forward — the features the drafter
 * holds — along the drafts so far; it commits them unchecked, then the trunk's argmax after them over
 * the window [windowStart(L), L + d).
 */
function unverifiedReference(model: SequentialModel, k: number, start: number[], newTokens: number): number[] {
  const seq = [...start];
  const { blockSize } = model.config;
  const end = start.length + newTokens;
  const trunkArgmax = (tokens: number[]) =>
    tf.tidy(() => tf.argMax(tf.slice(model.trunk.forward(tf.tensor2d([tokens], [1, tokens.length], 'int32')), [0, tokens.length - 1, 0], [1, 1, V]).reshape([V])).dataSync()[0]);
  let W = -1; // window of the last forward
  while (seq.length < end) {
    const L = seq.length;
    const d = W < 0 || L - 2 < W ? 0 : Math.max(0, Math.min(k - 1, end - L - 1, roomInWindow(L, blockSize) - 1));
    const drafts: number[] = [];
    for (let m = 0; m < d; m++) drafts.push(tf.tidy(() => tf.argMax(tf.tensor1d(sequentialDraftLogits(model, seq, W, drafts))).dataSync()[0]));
    const ext = [...seq, ...drafts];
    W = windowStart(L, blockSize);
    seq.push(...drafts, trunkArgmax(ext.slice(W, L + d)));
  }
  return seq.slice(start.length);
}

describe('speculative sampling with sequential modules', () => {
  let model: SequentialModel;
  beforeAll(async () => {
    await initBackend('wasm'); // thousands of tiny decodes: wasm is ~5× faster than cpu here
    model = createModel(cfg) as SequentialModel;
  });

  for (const s of [
    { temperature: 1, topK: 0, topP: 1 },
    { temperature: 0.7, topK: 4, topP: 0.95 },
  ]) {
    it(`the first two and three tokens follow the trunk's distribution (T = ${s.temperature}, top-k ${s.topK}, top-p ${s.topP}); an always-accept rule is caught`, async () => {
      const exact3 = exactJoint3(model, s);
      const counts3 = await sampleJoint3(model, s, SAMPLES);
      const two = chiSquare(firstTwo(counts3), firstTwo(exact3), SAMPLES);
      expect(two.stat).toBeLessThan(two.critical);
      const three = chiSquare(counts3, exact3, SAMPLES);
      expect(three.stat).toBeLessThan(three.critical);
      // always accepting is off by orders of magnitude (χ² in the thousands at 3000 runs): fewer runs show it
      const naive = await sampleJoint3(model, s, NAIVE_SAMPLES, naiveAcceptance);
      const wrong = chiSquare(firstTwo(naive), firstTwo(exact3), NAIVE_SAMPLES);
      expect(wrong.stat).toBeGreaterThan(wrong.critical);
    }, 120_000);
  }

  it('temperature 0 gives the greedy output with greedy verification’s acceptances, past the context window', async () => {
    const ar = await generate(model.trunk, prompt, { maxNewTokens: 40 });
    for (const k of [1, 2, 3]) {
      const greedy = await sequentialGenerate(model, prompt, { maxNewTokens: 40, k });
      const sp = await speculativeSample(model, prompt, { maxNewTokens: 40, temperature: 0, k });
      expect(sp.tokens).toEqual(ar.tokens);
      expect(sp.steps).toEqual(greedy.steps);
      expect(sp.stats.accepts).toEqual(greedy.stats.accepts);
    }
  });

  it('the same seed repeats a run exactly; another seed differs; the statistics add up', async () => {
    const a = await speculativeSample(model, prompt, { maxNewTokens: 30, seed: 3 });
    const b = await speculativeSample(model, prompt, { maxNewTokens: 30, seed: 3 });
    const c = await speculativeSample(model, prompt, { maxNewTokens: 30, seed: 4 });
    expect(a.tokens).toEqual(b.tokens);
    expect(a.steps).toEqual(b.steps);
    expect(a.tokens).not.toEqual(c.tokens);
    expect(a.stats.method).toBe('sequential modules chain k=3 · sampling');
    expect(a.steps.reduce((x, y) => x + y, 0)).toBe(30);
    expect(a.stats.attempts).toHaveLength(2);
    expect(a.stats.accepts[0]).toBeGreaterThan(0);
    expect(a.stats.accepts[0]).toBeLessThan(a.stats.attempts[0]);
    // depth 2 is attempted after an accepted depth 1 unless the step had room for depth 1 only
    expect(a.stats.attempts[1]).toBeGreaterThan(0);
    expect(a.stats.attempts[1]).toBeLessThanOrEqual(a.stats.accepts[0]);
    // every committed token but each step's last is an accepted draft
    expect(a.stats.accepts[0] + a.stats.accepts[1]).toBe(30 - a.steps.length);
    expect(a.stats.forwards).toBe(a.steps.length);
  });

  it('refuses k outside [1, 1 + D]', async () => {
    // (wrapped: speculativeSample throws synchronously for bad options instead of rejecting)
    await expect((async () => speculativeSample(model, prompt, { maxNewTokens: 3, k: 4 }))()).rejects.toThrow(/k \(tokens per step\) must be an integer in \[1, 3\], got 4/);
    await expect((async () => speculativeSample(model, prompt, { maxNewTokens: 3, k: 0 }))()).rejects.toThrow(/must be an integer in \[1, 3\], got 0/);
  });

  it('leaks no tensors', async () => {
    await speculativeSample(model, prompt, { maxNewTokens: 5 });
    const before = tf.memory().numTensors;
    await speculativeSample(model, prompt, { maxNewTokens: 40, seed: 9 });
    await speculativeSample(model, prompt, { maxNewTokens: 40, temperature: 0 });
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('unverified emission with sequential modules (lossy)', () => {
  let model: SequentialModel;
  beforeAll(async () => {
    await initBackend('wasm');
    model = createModel(cfg) as SequentialModel;
  });

  it('with k = 1 equals greedy decoding (the modules unused)', async () => {
    const ar = await generate(model.trunk, prompt, { maxNewTokens: 40 });
    const un = await unverifiedGenerate(model, prompt, { maxNewTokens: 40, k: 1 });
    expect(un.tokens).toEqual(ar.tokens);
    expect(un.stats.tau).toBe(1);
  });

  it('with D = 2 emits three tokens per forward after the prefill and departs from greedy', async () => {
    const ar = await generate(model.trunk, prompt, { maxNewTokens: 13 }); // 3 + 13 tokens fill the 16-token window exactly
    const un = await unverifiedGenerate(model, prompt, { maxNewTokens: 13 });
    expect(un.steps).toEqual([1, 3, 3, 3, 3]);
    expect(un.stats.forwards).toBe(5);
    expect(un.stats.method).toBe('sequential modules chain k=3 · unverified');
    expect(un.tokens).not.toEqual(ar.tokens);
  });

  it('equals a reference from full forwards, k = 2 and 3, past the context window', async () => {
    for (const k of [2, 3]) {
      const un = await unverifiedGenerate(model, prompt, { maxNewTokens: 40, k });
      expect(un.tokens, `k = ${k}`).toEqual(unverifiedReference(model, k, prompt, 40));
    }
  });

  it('sampled emission repeats with the same seed; no tensor leaks', async () => {
    const a = await unverifiedGenerate(model, prompt, { maxNewTokens: 30, temperature: 1, seed: 5 });
    const b = await unverifiedGenerate(model, prompt, { maxNewTokens: 30, temperature: 1, seed: 5 });
    expect(a.tokens).toEqual(b.tokens);
    const before = tf.memory().numTensors;
    await unverifiedGenerate(model, prompt, { maxNewTokens: 40, temperature: 1, seed: 6 });
    await unverifiedGenerate(model, prompt, { maxNewTokens: 40 });
    expect(tf.memory().numTensors).toBe(before);
  });
});
