/**
 * Speculative sampling is exact: on a 6-symbol vocabulary with peaked, mutually different head
 * distributions, the joint distribution of the first two sampled tokens matches the model's own
 * next-token distribution (computed exactly by enumeration) under a chi-square test at significance
 * 0.001 — while the same test rejects a deliberately wrong (always-accept) rule. Temperature 0 reduces
 * to greedy decoding; unverified emission with k = 1 is greedy; runs repeat with the same seed.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { MODEL_DEFAULTS, ModelConfig } from '../src/config';
import { initBackend } from '../src/backend/index';
import { createModel, MtpModel } from '../src/model/create';
import { generate } from '../src/decode/ar';
import { blockwiseGenerate } from '../src/decode/blockwise';
import { SamplingConfig, samplingProbs } from '../src/decode/sampling';
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
  initStd: 0.6, // peaked distributions that differ between heads
  seed: 77,
  mtp: { kind: 'parallel', k: 3, headLayers: 1, matchParams: false, headWeights: [] },
};
const prompt = [1, 4, 2];
const SAMPLES = 3000;

/** Exact P(x1, x2) of sampling from the next-token head alone, by enumeration (V + 1 forwards). */
function exactJoint(model: MtpModel, s: SamplingConfig): number[] {
  const next = (ctx: number[]) =>
    samplingProbs(tf.tidy(() => model.trunk.forward(tf.tensor2d([ctx], [1, ctx.length], 'int32')).slice([0, ctx.length - 1, 0], [1, 1, V]).dataSync()), s);
  const p1 = next(prompt);
  const joint: number[] = [];
  for (let a = 0; a < V; a++) {
    const p2 = next([...prompt, a]);
    for (let b = 0; b < V; b++) joint.push(p1[a] * p2[b]);
  }
  return joint;
}


async function sampleJoint(model: MtpModel, s: SamplingConfig, acceptance?: AcceptanceRule): Promise<number[]> {
  const counts = new Array(V * V).fill(0);
  for (let i = 0; i < SAMPLES; i++) {
    const out = await speculativeSample(model, prompt, { ...s, maxNewTokens: 2, k: 2, seed: 1000 + i, acceptance });
    counts[out.tokens[0] * V + out.tokens[1]] += 1;
  }
  return counts;
}

describe('speculative sampling', () => {
  let model: MtpModel;
  beforeAll(async () => {
    await initBackend('cpu');
    model = createModel(cfg);
  });

  for (const s of [
    { temperature: 1, topK: 0, topP: 1 },
    { temperature: 0.7, topK: 4, topP: 0.95 },
  ]) {
    it(`first two tokens follow the next-token head's distribution (T = ${s.temperature}, top-k ${s.topK}, top-p ${s.topP}); an always-accept rule is caught`, async () => {
      const exact = exactJoint(model, s);
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
    await initBackend('cpu');
    model = createModel(cfg);
  });

  it('with k = 1 equals greedy decoding', async () => {
    const ar = await generate(model.trunk, prompt, { maxNewTokens: 40 });
    const un = await unverifiedGenerate(model, prompt, { maxNewTokens: 40, k: 1 });
    expect(un.tokens).toEqual(ar.tokens);
    expect(un.stats.tau).toBe(1);
  });

  it('with k = 3 emits three tokens per forward and departs from greedy', async () => {
    const ar = await generate(model.trunk, prompt, { maxNewTokens: 12 }); // 3 + 12 tokens stay inside the 16-token window
    const un = await unverifiedGenerate(model, prompt, { maxNewTokens: 12, k: 3 });
    expect(un.stats.forwards).toBe(4);
    expect(un.stats.tau).toBe(3);
    expect(un.tokens).not.toEqual(ar.tokens);
  });
});
