/**
 * Baseline decoding: sampling filters, the context window rule, greedy generation equal to a
 * reference that recomputes every step from scratch (also across the context limit), seeded
 * sampling that repeats, and no tensor leaks across generations.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { resolveConfig } from '../src/config';
import { initBackend } from '../src/backend/index';
import { createModel, MtpModel } from '../src/model/create';
import { generate } from '../src/decode/ar';
import { keepOnSlide, roomInWindow, windowStart } from '../src/decode/context';
import { argmax, chooseToken, samplingProbs, validateSampling } from '../src/decode/sampling';
import { Rng } from '../src/util/rng';
import { randomTokens } from './helpers';

describe('sampling', () => {
  const logits = [2, 1, 0, -1, 3];

  it('temperature 0 is argmax (first index on ties)', () => {
    expect(argmax([1, 3, 3, 0])).toBe(1);
    expect(chooseToken(logits, { temperature: 0, topK: 0, topP: 1 }, new Rng(1))).toBe(4);
  });

  it('softmax with temperature; top-k and top-p keep the most likely tokens and renormalise', () => {
    const p = samplingProbs(logits, { temperature: 1, topK: 0, topP: 1 });
    const z = logits.reduce((a, l) => a + Math.exp(l), 0);
    p.forEach((x, i) => expect(x).toBeCloseTo(Math.exp(logits[i]) / z, 12));
    const k2 = samplingProbs(logits, { temperature: 1, topK: 2, topP: 1 });
    expect([...k2].map((x) => x > 0)).toEqual([true, false, false, false, true]);
    expect(k2[4] / k2[0]).toBeCloseTo(Math.E, 10);
    // p(4) ≈ 0.64 < 0.7, so top-p 0.7 keeps tokens 4 and 0
    const nucleus = samplingProbs(logits, { temperature: 1, topK: 0, topP: 0.7 });
    expect([...nucleus].map((x) => x > 0)).toEqual([true, false, false, false, true]);
    expect(nucleus.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
    const hot = samplingProbs(logits, { temperature: 2, topK: 0, topP: 1 });
    expect(hot[4] / hot[0]).toBeCloseTo(Math.exp(0.5), 10);
  });

  it('sampling frequencies follow the distribution', () => {
    const rng = new Rng(7);
    const s = { temperature: 1, topK: 0, topP: 1 };
    const p = samplingProbs(logits, s);
    const counts = new Array(5).fill(0);
    const n = 20_000;
    for (let i = 0; i < n; i++) counts[chooseToken(logits, s, rng)] += 1;
    counts.forEach((c, i) => expect(Math.abs(c / n - p[i])).toBeLessThan(0.015));
  });

  it('rejects bad settings with the allowed range', () => {
    expect(() => validateSampling({ temperature: -1, topK: 0, topP: 1 })).toThrow(/temperature must be ≥ 0/);
    expect(() => validateSampling({ temperature: 1, topK: 1.5, topP: 1 })).toThrow(/topK must be an integer ≥ 0/);
    expect(() => validateSampling({ temperature: 1, topK: 0, topP: 0 })).toThrow(/topP must be in \(0, 1\]/);
  });
});

describe('context window', () => {
  it('starts at 0 until the table is full, then slides keeping half, as a pure function of n', () => {
    const bs = 8;
    expect(keepOnSlide(bs)).toBe(4);
    // simulate the rule step by step and compare with the closed form
    let start = 0;
    for (let n = 1; n < 60; n++) {
      if (n - start > bs) start = n - keepOnSlide(bs);
      expect(windowStart(n, bs)).toBe(start);
      expect(n - windowStart(n, bs)).toBeLessThanOrEqual(bs);
      expect(roomInWindow(n, bs)).toBeGreaterThanOrEqual(1);
      // every position in the room shares the window
      for (let j = 0; j < roomInWindow(n, bs); j++) expect(windowStart(n + j, bs)).toBe(windowStart(n, bs));
      expect(windowStart(n + roomInWindow(n, bs), bs)).not.toBe(windowStart(n, bs));
    }
  });
});

describe('autoregressive generation', () => {
  let model: MtpModel;
  beforeAll(async () => {
    await initBackend('cpu');
    model = createModel(resolveConfig('nano').model);
  });

  /** Greedy reference without a cache: a full forward over the window for every new token. */
  function referenceGreedy(prompt: number[], n: number): number[] {
    const seq = [...prompt];
    const bs = model.config.blockSize;
    while (seq.length < prompt.length + n) {
      const win = seq.slice(windowStart(seq.length, bs));
      const logits = tf.tidy(() => model.trunk.forward(tf.tensor2d([win], [1, win.length], 'int32')).dataSync());
      seq.push(argmax(logits.subarray((win.length - 1) * model.config.vocabSize)));
    }
    return seq.slice(prompt.length);
  }

  for (const [promptLen, n] of [[1, 10], [5, 40], [30, 50]] as const) {
    it(`greedy with the KV cache equals recomputation (prompt ${promptLen}, ${n} tokens${promptLen + n > 32 ? ', crossing the 32-token window' : ''})`, async () => {
      const prompt = randomTokens(promptLen, 256, promptLen);
      const out = await generate(model.trunk, prompt, { maxNewTokens: n });
      expect(out.tokens).toEqual(referenceGreedy(prompt, n));
      expect(out.stats.tau).toBe(1);
      expect(out.stats.newTokens).toBe(n);
    });
  }

  it('sampling repeats exactly with the same seed and differs with another', async () => {
    const opts = { maxNewTokens: 30, temperature: 1.5, topK: 50, topP: 0.95 };
    const a = await generate(model.trunk, [1, 2, 3], { ...opts, seed: 5 });
    const b = await generate(model.trunk, [1, 2, 3], { ...opts, seed: 5 });
    const c = await generate(model.trunk, [1, 2, 3], { ...opts, seed: 6 });
    expect(a.tokens).toEqual(b.tokens);
    expect(a.tokens).not.toEqual(c.tokens);
    expect(a.stats.method).toBe('sample');
  });

  it('leaks no tensors across generations', async () => {
    await generate(model.trunk, [1], { maxNewTokens: 5 });
    const before = tf.memory().numTensors;
    await generate(model.trunk, [1, 2], { maxNewTokens: 40 });
    await generate(model.trunk, [3], { maxNewTokens: 10, temperature: 1 });
    expect(tf.memory().numTensors).toBe(before);
  });

  it('rejects an empty prompt and a bad length', async () => {
    await expect(generate(model.trunk, [], { maxNewTokens: 3 })).rejects.toThrow(/prompt must hold at least one token/);
    await expect(generate(model.trunk, [1], { maxNewTokens: -1 })).rejects.toThrow(/maxNewTokens must be an integer ≥ 0/);
  });
});
