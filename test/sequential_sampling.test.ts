/**
 * Speculative sampling and unverified emission with sequential MTP modules (DeepSeek-V3 §2.2 drafting,
 * Leviathan et al. 2023 acceptance), reached through the shared entry points. Sampling is exact: on a
 * 6-symbol vocabulary with peaked random weights and D = 2, the joint distribution of the first two
 * sampled tokens — and of the first three, where module 2's draft (made from module 1's sampled draft)
 * is judged — matches exact enumeration from the main model under a chi-square test at significance
 * 0.001, while an always-accept rule is caught. Temperature 0 is greedy with greedy's acceptances;
 * seeds repeat. Unverified emission equals a full-forward reference (past the context window), is greedy
 * with k = 1 and emits 3 tokens per forward with D = 2. No tensor leaks.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { MODEL_DEFAULTS, ModelConfig } from '../src/config';
import { initBackend } from '../src/backend/index';
import { createModel } from '../src/model/create';
import { SequentialModel } from '../src/model/sequential';
import { generate } from '../src/decode/ar';
import { roomInWindow, windowStart } from '../src/decode/context';
import { SamplingConfig, samplingProbs } from '../src/decode/sampling';
import { sequentialGenerate } from '../src/decode/sequential';
import { AcceptanceRule, naiveAcceptance, speculativeSample } from '../src/decode/spec_sampling';
import { unverifiedGenerate } from '../src/decode/unverified';
import { chiSquare } from './helpers';

const V = 6;
const cfg: ModelConfig = {
  ...MODEL_DEFAULTS,
  vocabSize: V,
  blockSize: 16,
  nLayer: 2,
  nHead: 2,
  nEmbd: 16,
  initStd: 0.6, // peaked distributions that differ between the trunk and the modules
  seed: 77,
  mtp: { kind: 'sequential', depth: 2, lambda: 0.3, lambdaLate: 0.1, lambdaSwitch: 0.7 },
};
const prompt = [1, 4, 2];
const SAMPLES = 3000;
const NAIVE_SAMPLES = 500;

/** Exact P(x1, x2, x3) of sampling from the trunk alone, by enumeration (1 + V + V² forwards); index (x1·V + x2)·V + x3. */
function exactJoint3(model: SequentialModel, s: SamplingConfig): number[] {
  const next = (ctx: number[]) =>
    samplingProbs(tf.tidy(() => model.trunk.forward(tf.tensor2d([ctx], [1, ctx.length], 'int32')).slice([0, ctx.length - 1, 0], [1, 1, V]).dataSync()), s);
  const p1 = next(prompt);
  const joint: number[] = [];
  for (let a = 0; a < V; a++) {
    const p2 = next([...prompt, a]);
    for (let b = 0; b < V; b++) {
      const p3 = next([...prompt, a, b]);
      for (let c = 0; c < V; c++) joint.push(p1[a] * p2[b] * p3[c]);
    }
  }
  return joint;
}

/** Sums out the third token: P(x1, x2), index x1·V + x2. */
function firstTwo(joint3: number[]): number[] {
  return Array.from({ length: V * V }, (_, i) => joint3.slice(i * V, (i + 1) * V).reduce((a, b) => a + b, 0));
}


/** Counts of the first three tokens over `runs` seeded runs with both modules drafting. */
async function sampleJoint3(model: SequentialModel, s: SamplingConfig, runs: number, acceptance?: AcceptanceRule): Promise<number[]> {
  const counts = new Array(V * V * V).fill(0);
  for (let i = 0; i < runs; i++) {
    const out = await speculativeSample(model, prompt, { ...s, maxNewTokens: 3, k: 3, seed: 1000 + i, acceptance });
    counts[(out.tokens[0] * V + out.tokens[1]) * V + out.tokens[2]] += 1;
  }
  return counts;
}

/**
 * Unverified emission at temperature 0 from full forwards without caches: each block of kk ≤ k tokens
 * (inside the window of its first token n, its forward inside one window) is the trunk's argmax after
 * the window [windowStart(n), n), then module m's argmax over that window fed the tokens at i+m (the
 * text, then the block so far).
 */
function unverifiedReference(model: SequentialModel, k: number, start: number[], newTokens: number): number[] {
  const seq = [...start];
  const { blockSize } = model.config;
  const end = start.length + newTokens;
  while (seq.length < end) {
    const n = seq.length;
    const kk = Math.min(k, end - n, roomInWindow(n, blockSize), roomInWindow(n + 1, blockSize));
    const w = windowStart(n, blockSize);
    const caches = model.newCaches();
    const block = tf.tidy(() => {
      const trunk = model.trunkStep(tf.tensor1d(seq.slice(w, n), 'int32'), caches);
      const out = [tf.argMax(trunk.logits.reshape([n - w, V]), 1).dataSync()[n - w - 1]];
      let h = trunk.hidden;
      for (let m = 1; m < kk; m++) {
        const ext = [...seq, ...out];
        const step = model.moduleStep(m, h, tf.tensor1d(ext.slice(w + m, n + m), 'int32'), caches);
        h = step.hidden;
        out.push(tf.argMax(step.last).dataSync()[0]);
      }
      return out;
    });
    caches.dispose();
    seq.push(...block);
  }
  return seq.slice(start.length);
}

describe('speculative sampling with sequential modules', () => {
  let model: SequentialModel;
  beforeAll(async () => {
    await initBackend('cpu');
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
    expect(a.stats.method).toBe('speculative sampling k=3');
    expect(a.steps.reduce((x, y) => x + y, 0)).toBe(30);
    expect(a.stats.attempts).toHaveLength(2);
    expect(a.stats.accepts[0]).toBeGreaterThan(0);
    expect(a.stats.accepts[0]).toBeLessThan(a.stats.attempts[0]);
    expect(a.stats.attempts[1]).toBe(a.stats.accepts[0]);
  });

  it('refuses k outside [1, 1 + D]', async () => {
    await expect(speculativeSample(model, prompt, { maxNewTokens: 3, k: 4 })).rejects.toThrow(/k must be an integer in \[1, 3\]/);
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
    await initBackend('cpu');
    model = createModel(cfg) as SequentialModel;
  });

  it('with k = 1 equals greedy decoding (the modules unused)', async () => {
    const ar = await generate(model.trunk, prompt, { maxNewTokens: 40 });
    const un = await unverifiedGenerate(model, prompt, { maxNewTokens: 40, k: 1 });
    expect(un.tokens).toEqual(ar.tokens);
    expect(un.stats.tau).toBe(1);
  });

  it('with D = 2 emits three tokens per forward and departs from greedy', async () => {
    const ar = await generate(model.trunk, prompt, { maxNewTokens: 12 }); // 3 + 12 tokens stay inside the 16-token window
    const un = await unverifiedGenerate(model, prompt, { maxNewTokens: 12 });
    expect(un.stats.forwards).toBe(4);
    expect(un.stats.tau).toBe(3);
    expect(un.stats.method).toBe('unverified k=3 (lossy)');
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
