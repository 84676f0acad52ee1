/**
 * Speculative sampling is exact: on a 6-symbol vocabulary with peaked, mutually different head
 * distributions, the joint distribution of the first two sampled tokens — the first from the prefill,
 * the second head 2's sampled draft judged against the target (or the residual draw) — matches the
 * model's own next-token distribution (computed exactly by enumeration) under a chi-square test at
 * significance 0.001, while the same test rejects a deliberately wrong (always-accept) rule.
 * Temperature 0 reduces to greedy decoding; unverified emission with k = 1 is greedy and with k = 3
 * emits three tokens per forward after the prefill; runs repeat with the same seed.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import type { ModelConfig } from '../src/config';
import { initBackend } from '../src/backend/index';
import { createModel, MtpModel } from '../src/model/create';
import { generate } from '../src/decode/ar';
import { AcceptProbability, naiveAcceptance } from '../src/decode/acceptance';
import { blockwiseGenerate, speculativeSample, unverifiedGenerate } from '../src/decode/decoders';
import type { SamplingConfig } from '../src/decode/sampling';
import { chiSquare, exactJoint, peakedConfig, TINY_V } from './helpers';

const V = TINY_V;
const cfg: ModelConfig = peakedConfig({ kind: 'parallel', k: 3, headLayers: 1, matchParams: false, headWeights: [] });
const prompt = [1, 4, 2];
const SAMPLES = 3000;

const exactPair = (model: MtpModel, s: SamplingConfig) => exactJoint(model.trunk, prompt, s, 2);


async function sampleJoint(model: MtpModel, s: SamplingConfig, acceptance?: AcceptProbability): Promise<number[]> {
  const counts = new Array(V * V).fill(0);
  for (let i = 0; i < SAMPLES; i++) {
    // 3 tokens: the prefill samples x1 (no head rows yet), the next step drafts x2 with head 2 and judges it
    const out = await speculativeSample(model, prompt, { ...s, maxNewTokens: 3, k: 2, seed: 1000 + i, acceptance });
    counts[out.tokens[0] * V + out.tokens[1]] += 1;
  }
  return counts;
}

describe('speculative sampling', () => {
  let model: MtpModel;
  beforeAll(async () => {
    await initBackend('wasm'); // thousands of tiny decodes: wasm is ~5× faster than cpu here
    model = createModel(cfg);
  });

  for (const s of [
    { temperature: 1, topK: 0, topP: 1 },
    { temperature: 0.7, topK: 4, topP: 0.95 },
  ]) {
    it(`first two tokens follow the next-token head's distribution (T = ${s.temperature}, top-k ${s.topK}, top-p ${s.topP}); an always-accept rule is caught`, async () => {
      const exact = exactPair(model, s);
      // the test is meaningful only if head 2's proposal differs from the target
      const right = chiSquare(await sampleJoint(model, s), exact, SAMPLES);
      expect(right.stat).toBeLessThan(right.critical);
      const wrong = chiSquare(await sampleJoint(model, s, naiveAcceptance), exact, SAMPLES);
      expect(wrong.stat).toBeGreaterThan(wrong.critical);
    }, 120_000);
  }

  it('temperature 0 gives the greedy output, with the same acceptance as blockwise decoding', async () => {
    const ar = await generate(model.trunk, prompt, { maxNewTokens: 40 });
    const bw = await blockwiseGenerate(model, prompt, { maxNewTokens: 40 });
    const sp = await speculativeSample(model, prompt, { maxNewTokens: 40, temperature: 0 });
    expect(sp.tokens).toEqual(ar.tokens);
    expect(sp.steps).toEqual(bw.steps);
  });

  it('the same seed repeats a run exactly; another seed differs', async () => {
    const a = await speculativeSample(model, prompt, { maxNewTokens: 30, seed: 3 });
    const b = await speculativeSample(model, prompt, { maxNewTokens: 30, seed: 3 });
    const c = await speculativeSample(model, prompt, { maxNewTokens: 30, seed: 4 });
    expect(a.tokens).toEqual(b.tokens);
    expect(a.tokens).not.toEqual(c.tokens);
  });

  it('leaks no tensors', async () => {
    await speculativeSample(model, prompt, { maxNewTokens: 5 });
    const before = tf.memory().numTensors;
    await speculativeSample(model, prompt, { maxNewTokens: 40 });
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('unverified parallel emission (lossy)', () => {
  let model: MtpModel;
  beforeAll(async () => {
    await initBackend('wasm');
    model = createModel(cfg);
  });

  it('with k = 1 equals greedy decoding', async () => {
    const ar = await generate(model.trunk, prompt, { maxNewTokens: 40 });
    const un = await unverifiedGenerate(model, prompt, { maxNewTokens: 40, k: 1 });
    expect(un.tokens).toEqual(ar.tokens);
    expect(un.stats.tau).toBe(1);
  });

  it('with k = 3 emits three tokens per forward after the prefill and departs from greedy', async () => {
    const ar = await generate(model.trunk, prompt, { maxNewTokens: 13 }); // 3 + 13 tokens fill the 16-token window exactly
    const un = await unverifiedGenerate(model, prompt, { maxNewTokens: 13, k: 3 });
    expect(un.steps).toEqual([1, 3, 3, 3, 3]);
    expect(un.stats.forwards).toBe(5);
    expect(un.stats.alpha).toEqual([1, 1]);
    expect(un.tokens).not.toEqual(ar.tokens);
  });
});
