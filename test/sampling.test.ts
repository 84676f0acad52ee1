/**
 * The sampling normaliser, on hand-worked cases: Hugging Face's order (temperature → softmax → top-k
 * → renormalise → top-p of the renormalised distribution → renormalise), deterministic ties (higher
 * probability first, then the lower index), and resolveSampling's defaults and errors.
 */
import { describe, expect, it } from 'vitest';
import { argmax, chooseToken, GREEDY, resolveSampling, SamplingConfig, samplingProbs, tokenDistribution } from '../src/decode/sampling';
import { Rng } from '../src/util/rng';

const logOf = (p: number[]) => p.map(Math.log);
const cfg = (s: Partial<SamplingConfig>): SamplingConfig => ({ temperature: 1, topK: 0, topP: 1, ...s });
const expectProbs = (got: Float64Array, want: number[]) => {
  expect(got.length).toBe(want.length);
  want.forEach((w, i) => expect(got[i]).toBeCloseTo(w, 12));
};

describe('samplingProbs', () => {
  const p4 = [0.5, 0.3, 0.1, 0.1];

  it('top-p applies to the renormalised top-k distribution (Hugging Face order)', () => {
    // top-3 renormalised: [.5, .3, .1] / .9 = [.556, .333, .111]; .556 + .333 = .889 ≥ .85 → 2 tokens
    // (top-p on the original p would need .5 + .3 + .1 = .9 ≥ .85 → 3 tokens)
    expectProbs(samplingProbs(logOf(p4), cfg({ topK: 3, topP: 0.85 })), [0.625, 0.375, 0, 0]);
    // a top-p that the first two do not reach in the renormalised distribution keeps the third
    expectProbs(samplingProbs(logOf(p4), cfg({ topK: 3, topP: 0.9 })), [5 / 9, 3 / 9, 1 / 9, 0]);
  });

  it('top-k alone keeps the k most likely, renormalised; k ≥ V or 0 is off', () => {
    expectProbs(samplingProbs(logOf(p4), cfg({ topK: 2 })), [0.625, 0.375, 0, 0]);
    expectProbs(samplingProbs(logOf(p4), cfg({ topK: 1 })), [1, 0, 0, 0]);
    expectProbs(samplingProbs(logOf(p4), cfg({ topK: 4 })), p4);
    expectProbs(samplingProbs(logOf(p4), cfg({ topK: 9 })), p4);
    expectProbs(samplingProbs(logOf(p4), cfg({ topK: 0 })), p4);
  });

  it('top-p alone keeps the smallest set whose mass reaches p (a mass equal to p reaches it)', () => {
    expectProbs(samplingProbs(logOf(p4), cfg({ topP: 0.5 })), [1, 0, 0, 0]);
    expectProbs(samplingProbs(logOf(p4), cfg({ topP: 0.51 })), [0.625, 0.375, 0, 0]);
    expectProbs(samplingProbs(logOf(p4), cfg({ topP: 0.8 })), [0.625, 0.375, 0, 0]);
    expectProbs(samplingProbs(logOf(p4), cfg({ topP: 0.81 })), [5 / 9, 3 / 9, 1 / 9, 0]);
    expectProbs(samplingProbs(logOf(p4), cfg({ topP: 1e-9 })), [1, 0, 0, 0]); // the most likely token always stays
    expectProbs(samplingProbs(logOf(p4), cfg({ topP: 1 })), p4);
  });

  it('temperature divides the logits before the softmax', () => {
    const logits = [0, Math.log(2)];
    expectProbs(samplingProbs(logits, cfg({ temperature: 1 })), [1 / 3, 2 / 3]);
    expectProbs(samplingProbs(logits, cfg({ temperature: 0.5 })), [1 / 5, 4 / 5]);
    expectProbs(samplingProbs(logits, cfg({ temperature: 2 })), [1 / (1 + Math.SQRT2), Math.SQRT2 / (1 + Math.SQRT2)]);
    // temperature comes first: at T = 2, [.5, .3, .1, .1] flattens and top-p .7 needs 3 tokens
    const hot = samplingProbs(logOf(p4), cfg({ temperature: 2, topP: 0.7 }));
    expect([...hot].map((x) => x > 0)).toEqual([true, true, true, false]);
  });

  it('ties: the higher probability first, then the lower index', () => {
    const flat = [0.25, 0.25, 0.25, 0.25];
    expectProbs(samplingProbs(logOf(flat), cfg({ topK: 2 })), [0.5, 0.5, 0, 0]);
    expectProbs(samplingProbs(logOf(flat), cfg({ topP: 0.5 })), [0.5, 0.5, 0, 0]);
    expectProbs(samplingProbs(logOf(flat), cfg({ topP: 0.3 })), [0.5, 0.5, 0, 0]);
    expectProbs(samplingProbs(logOf(flat), cfg({ topP: 0.2 })), [1, 0, 0, 0]);
    // [.1, .4, .1, .4]: ranks 1, 3, 0, 2
    const p = [0.1, 0.4, 0.1, 0.4];
    expectProbs(samplingProbs(logOf(p), cfg({ topK: 1 })), [0, 1, 0, 0]);
    expectProbs(samplingProbs(logOf(p), cfg({ topK: 3 })), [1 / 9, 4 / 9, 0, 4 / 9]);
    expectProbs(samplingProbs(logOf(p), cfg({ topK: 3, topP: 0.9 })), [1 / 9, 4 / 9, 0, 4 / 9]);
    expectProbs(samplingProbs(logOf(p), cfg({ topK: 3, topP: 0.85 })), [0, 0.5, 0, 0.5]);
  });

  it('masked (−∞) logits get probability 0; the result sums to 1', () => {
    const p = samplingProbs([0, -Infinity, 0, Math.log(2)], cfg({ topP: 0.99 }));
    expectProbs(p, [0.25, 0, 0.25, 0.5]);
    const q = samplingProbs([3, -1, 0.5, 2, 2, -7], cfg({ temperature: 0.7, topK: 4, topP: 0.9 }));
    expect(q.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 12);
  });

  it('temperature 0: argmax (first index on ties) in chooseToken and tokenDistribution', () => {
    expect(argmax([1, 3, 3, 0])).toBe(1);
    expect(chooseToken([1, 3, 3, 0], GREEDY, new Rng(1))).toBe(1);
    expectProbs(tokenDistribution([1, 3, 3, 0], GREEDY), [0, 1, 0, 0]);
    expectProbs(tokenDistribution(logOf(p4), cfg({ topK: 3, topP: 0.85 })), [0.625, 0.375, 0, 0]);
  });
});

describe('resolveSampling', () => {
  it('fills unset options from the defaults (greedy unless told), returning a fresh object', () => {
    expect(resolveSampling()).toEqual(GREEDY);
    expect(resolveSampling()).not.toBe(GREEDY);
    expect(resolveSampling({})).toEqual({ temperature: 0, topK: 0, topP: 1 });
    expect(resolveSampling({ temperature: 0.8 })).toEqual({ temperature: 0.8, topK: 0, topP: 1 });
    expect(resolveSampling({ topK: 40, topP: 0.95, temperature: undefined })).toEqual({ temperature: 0, topK: 40, topP: 0.95 });
    const warm = { temperature: 1, topK: 5, topP: 0.9 };
    expect(resolveSampling({}, warm)).toEqual(warm);
    expect(resolveSampling({ topK: 0 }, warm)).toEqual({ temperature: 1, topK: 0, topP: 0.9 });
  });

  it('rejects out-of-range settings with the allowed range', () => {
    expect(() => resolveSampling({ temperature: -1 })).toThrow(/temperature must be ≥ 0, got -1/);
    expect(() => resolveSampling({ temperature: NaN })).toThrow(/temperature must be ≥ 0/);
    expect(() => resolveSampling({ temperature: Infinity })).toThrow(/temperature must be ≥ 0/);
    expect(() => resolveSampling({ topK: 1.5 })).toThrow(/topK must be an integer ≥ 0 \(0 = off\), got 1.5/);
    expect(() => resolveSampling({ topK: -2 })).toThrow(/topK must be an integer ≥ 0/);
    expect(() => resolveSampling({ topP: 0 })).toThrow(/topP must be in \(0, 1\], got 0/);
    expect(() => resolveSampling({ topP: 1.5 })).toThrow(/topP must be in \(0, 1\]/);
    expect(() => resolveSampling({}, { temperature: 1, topK: 0, topP: 2 })).toThrow(/topP must be in \(0, 1\]/);
  });
});
