/**
 * Training a model in the page: the library's Trainer on the corpus text the page fetched (byte tokens, the last 10 %
 * held out), on whatever backend is active, by one rank or by several (data-parallel: this worker is rank 0, the
 * others are Web Workers started through `spawn`, src/train/data_parallel_web.ts). Each step reports its loss, time
 * and tokens; `stop()` ends the run after the step in flight, and the model trained so far is kept.
 */
import { Config, resolveConfig } from '../../../src/config';
import { splitTrainVal } from '../../../src/data/batch';
import { ByteTokenizer } from '../../../src/data/tokenizer';
import { createModel } from '../../../src/model/create';
import type { MtpModel } from '../../../src/model/mtp_model';
import { RankGroup, SpawnRank } from '../../../src/train/data_parallel_group';
import { Trainer } from '../../../src/train/trainer';
import { weightsDigest } from '../../../src/train/weights_digest';
import type { TrainEvent, TrainRequest } from '../protocol';
import { nanoMtp } from './choices';

/** The config of the model the request describes (its preset's shape, nano by default). */
export function nanoConfig(req: TrainRequest): Config {
  return resolveConfig(req.preset ?? 'nano', {
    model: { mtp: nanoMtp(req.kind, req.k), seed: req.seed },
    train: { steps: req.steps, lr: req.lr, batchSize: req.batchSize, seed: req.seed, warmupSteps: Math.min(20, Math.floor(req.steps / 10)), evalBatches: 1, workers: req.workers ?? 1 },
  });
}

export interface TrainRanks {
  /** The backend every rank runs (the active one). */
  backend: string;
  /** Starts ranks 1 … workers − 1; needed when the request asks for more than one worker. */
  spawn?: SpawnRank;
}

export interface Trained {
  model: MtpModel;
  config: Config;
  /** Each rank's weights digest at the end, rank 0's first. */
  weights: string[];
}

/** Trains a fresh model; `emit` hears every step, `stopped` is asked between steps. */
export async function trainNano(req: TrainRequest, emit: (e: TrainEvent) => void, stopped: () => boolean, ranks: TrainRanks): Promise<Trained> {
  const config = nanoConfig(req);
  const workers = config.train.workers;
  const tokens = new ByteTokenizer().encode(req.text);
  if (tokens.length < 4 * (config.model.blockSize + 8)) throw new Error(`the training text is too short: ${tokens.length} bytes`);
  const model = createModel(config.model);
  let group: RankGroup | undefined;
  let trainer: Trainer | undefined;
  try {
    trainer = new Trainer(model, config.train, splitTrainVal(tokens, 0.1));
    if (workers > 1) {
      if (!ranks.spawn) throw new Error(`${workers} workers: no way to start data-parallel ranks here`);
      group = new RankGroup(ranks.spawn);
      await group.open(workers, config, ranks.backend, trainer, tokens);
    }
    for (let s = 0; s < req.steps && !stopped(); s++) {
      const r = await trainer.trainStep().catch(async (e: unknown) => {
        throw group ? await group.explain(e) : e;
      });
      emit({ kind: 'train', step: r.step, steps: req.steps, loss: r.loss, ms: r.ms, tokens: r.tokens, workers });
      await new Promise((resolve) => setTimeout(resolve, 0)); // let a stop request in
    }
    const weights = group ? await group.finish(trainer) : [await weightsDigest(await readParams(model))];
    group = undefined;
    trainer.dispose();
    return { model, config, weights };
  } catch (e) {
    await group?.terminate();
    trainer?.dispose(); // the Adam moments; the model goes too
    model.dispose();
    throw e;
  }
}

/** The weights as host arrays, read asynchronously (a synchronous read is slow, and warned about, on WebGPU). */
async function readParams(model: MtpModel): Promise<[string, Float32Array][]> {
  return Promise.all([...model.params].map(async ([name, v]) => [name, (await v.data()) as Float32Array] as [string, Float32Array]));
}
