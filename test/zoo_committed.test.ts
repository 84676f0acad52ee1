/**
 * The models committed under models/: each loads with its sha256 verified, and its validation loss measured now on the
 * corpus it was trained on (float16 weights, float32 compute, a subset of the validation windows) is close to the loss
 * its training run recorded (float32 weights, all windows): a wrong tensor order, a bad conversion or weights that
 * belong to another model would move it far.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/backend/index';
import { loadCorpus, splitTrainVal } from '../src/data/corpus';
import { evalBatches } from '../src/data/batch';
import { evaluate } from '../src/train/evaluate';
import { listZooModels, loadZooModel } from '../src/zoo/load';

describe('committed zoo models', () => {
  beforeAll(async () => {
    await initBackend('wasm');
  });

  const models = listZooModels();

  it('the zoo is not empty', () => {
    expect(models.length).toBeGreaterThan(0);
  });

  for (const listed of models) {
    it(`${listed.name} loads hash-checked and reproduces its recorded validation loss, every head`, async () => {
      const z = loadZooModel(listed.name);
      const { config, tokenizer } = z;
      const corpus = loadCorpus(config.train.corpus, { maxBytes: config.train.maxCorpusBytes || undefined });
      const { val } = splitTrainVal(config.train.tokenizer === 'byte' ? corpus.bytes : tokenizer.encode(corpus.text));
      const batches = evalBatches(val, config.train.batchSize, config.model.blockSize, z.model.k, config.train.evalBatches).slice(0, 2);
      const r = await evaluate(z.model, batches);
      z.entry.valLoss.heads.forEach((recorded, i) => {
        expect(Math.abs(r.heads[i].loss - recorded.loss), `head ${i + 1}: measured ${r.heads[i].loss}, recorded ${recorded.loss}`).toBeLessThan(0.1);
      });
      z.model.dispose();
    }, 60_000);
  }
});
