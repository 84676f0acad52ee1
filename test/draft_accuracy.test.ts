/**
 * Rank accuracies of a drafter on the model's own greedy text (src/eval/draft_accuracy.ts), the input of
 * the optimised trees: the comb shape; exact values with an oracle drafter whose true token sits at a known
 * rank; bounds and a lossless decode with the optimised tree for a real drafter.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/backend/index';
import { resolveConfig } from '../src/config';
import { generate } from '../src/decode/ar';
import { decode } from '../src/decode/engine';
import { optimizeTree } from '../src/decode/tree';
import { combTree, draftRankAccuracies } from '../src/eval/draft_accuracy';
import { createModel } from '../src/model/create';
import type { MtpModel } from '../src/model/mtp_model';
import { greedyTruth, OracleDrafter } from './helpers';

const nano = resolveConfig('nano').model;
const parallel3 = () => createModel({ ...nano, nLayer: 3, seed: 5, mtp: { kind: 'parallel', k: 3, headLayers: 1, matchParams: false, headWeights: [] } });

describe('draft rank accuracies', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  it('the comb is the rank-0 chain with every rank beside it at each depth', () => {
    expect(combTree(2, 3)).toEqual([[0], [1], [2], [0, 0], [0, 1], [0, 2]]);
    expect(combTree(1, 1)).toEqual([[0]]);
  });

  it('an oracle with the truth at rank 0 at depth 1 and rank 2 at depth 2 gives one-hot rows there', async () => {
    const model = parallel3();
    const prompt = [3, 1, 4, 1, 5];
    const truth = await greedyTruth(model, prompt, 40);
    const wrapped: MtpModel = Object.create(model);
    wrapped.drafter = () => new OracleDrafter(truth, model.config.vocabSize, { depth: 2, width: 4, rankOf: (_i, d) => (d === 1 ? 0 : 2) });
    const acc = await draftRankAccuracies(wrapped, [prompt], { tokens: 30, ranks: 4 });
    expect(acc).toEqual([
      [1, 0, 0, 0],
      [0, 0, 1, 0],
    ]);
    // a wrong first depth stops the chain: depth 2 is never attempted
    wrapped.drafter = () => new OracleDrafter(truth, model.config.vocabSize, { depth: 2, width: 4, rankOf: (_i, d) => (d === 1 ? 1 : 0) });
    expect(await draftRankAccuracies(wrapped, [prompt], { tokens: 30, ranks: 4 })).toEqual([
      [0, 1, 0, 0],
      [0, 0, 0, 0],
    ]);
    model.dispose();
  });

  it('a real drafter gives probabilities, and its optimised tree decodes losslessly', async () => {
    const model = parallel3();
    const prompts = [[1, 2, 3, 4], [9, 8, 7, 6, 5]];
    const acc = await draftRankAccuracies(model, prompts, { tokens: 24, ranks: 3 });
    expect(acc.length).toBe(2);
    for (const row of acc) {
      expect(row.length).toBe(3);
      for (const a of row) expect(a >= 0 && a <= 1).toBe(true);
      expect(row.reduce((x, y) => x + y, 0)).toBeLessThanOrEqual(1 + 1e-12);
    }
    const tree = optimizeTree(acc, 5);
    for (const p of prompts) {
      const ref = await generate(model, p, { maxNewTokens: 40 });
      const out = await decode(model, model.drafter({ tree }), p, { maxNewTokens: 40 });
      expect(out.tokens).toEqual(ref.tokens);
    }
    await expect(draftRankAccuracies(model, prompts, { tokens: 8, depth: 3 })).rejects.toThrow(/depth must be an integer in \[1, 2\]/);
    model.dispose();
  });
});
