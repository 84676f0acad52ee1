/**
 * Training a nano model in the page: the library's Trainer on the corpus text the page fetched (byte tokens, the last
 * 10 % held out), on whatever backend is active. Each step reports its loss; `stop()` ends the run after the step in
 * flight, and the model trained so far is kept.
 */
import { Config, resolveConfig } from '../../../src/config';
import { splitTrainVal } from '../../../src/data/batch';
import { ByteTokenizer } from '../../../src/data/tokenizer';
import { createModel } from '../../../src/model/create';
import type { MtpModel } from '../../../src/model/mtp_model';
import { Trainer } from '../../../src/train/trainer';
import type { TrainEvent, TrainRequest } from '../protocol';
import { nanoMtp } from './choices';

/** The config of a nano model the request describes (the `nano` preset's shape). */
export function nanoConfig(req: TrainRequest): Config {
  return resolveConfig('nano', {
    model: { mtp: nanoMtp(req.kind, req.k), seed: req.seed },
    train: { steps: req.steps, lr: req.lr, batchSize: req.batchSize, seed: req.seed, warmupSteps: Math.min(20, Math.floor(req.steps / 10)), evalBatches: 1 },
  });
}

/** Trains a fresh nano model; `emit` hears every step, `stopped` is asked between steps. */
export async function trainNano(req: TrainRequest, emit: (e: TrainEvent) => void, stopped: () => boolean): Promise<{ model: MtpModel; config: Config }> {
  const config = nanoConfig(req);
  const tokens = new ByteTokenizer().encode(req.text);
  if (tokens.length < 4 * (config.model.blockSize + 8)) throw new Error(`the training text is too short: ${tokens.length} bytes`);
  const model = createModel(config.model);
  try {
    const trainer = new Trainer(model, config.train, splitTrainVal(tokens, 0.1));
    for (let s = 0; s < req.steps && !stopped(); s++) {
      const r = await trainer.trainStep();
      emit({ kind: 'train', step: r.step, steps: req.steps, loss: r.loss, ms: r.ms });
      await new Promise((resolve) => setTimeout(resolve, 0)); // let a stop request in
    }
    return { model, config };
  } catch (e) {
    model.dispose();
    throw e;
  }
}
