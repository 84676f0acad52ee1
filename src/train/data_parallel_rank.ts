/**
 * A data-parallel rank ≥ 1, whatever thread it runs on (a Node worker thread, data_parallel_worker.ts; a Web Worker,
 * data_parallel_web.ts): builds the model from the run's config on its own engine, takes rank 0's weights (the
 * optimiser state is shared), and trains its shard of every batch in lockstep until rank 0 sends STOP; then posts a
 * digest of its weights, which rank 0 checks against its own (data_parallel_group.ts).
 */
import * as tf from '@tensorflow/tfjs';
import { BackendName, initBackend, InitBackendOptions } from '../backend/index';
import { splitTrainVal } from '../data/batch';
import { createModel } from '../model/create';
import type { WorkerInit, WorkerMessage } from './data_parallel_group';
import { SharedStep, StepAborted } from './shared_step';
import { StopRequested, Trainer } from './trainer';
import { hostParams, weightsDigest } from './weights_digest';

export interface RankOptions {
  /** initBackend's options at this rank (a browser passes wasmPath). Default: none. */
  backend?: InitBackendOptions;
  /** Fault injection for tests: throw before this step (1-based). Default: never. */
  faultStep?: number;
}

/** Trains as rank `init.rank` until rank 0 stops the run; returns the digest of the weights it ended with. */
export async function trainRank(init: WorkerInit, shared: SharedStep, opts: RankOptions = {}): Promise<string> {
  await initBackend(init.backend as BackendName, opts.backend);
  const tokens = init.tokenKind === 'uint8' ? new Uint8Array(init.tokens) : new Int32Array(init.tokens);
  const { train, val } = splitTrainVal(tokens);
  const model = createModel(init.config.model);
  tf.tidy(() => {
    for (const [name, data] of init.params) {
      const v = model.params.get(name);
      if (!v) throw new Error(`rank 0 sent unknown parameter '${name}'`);
      v.assign(tf.tensor(data, v.shape, 'float32'));
    }
  });
  const trainer = new Trainer(model, init.config.train, { train, val });
  await trainer.joinGroup({ rank: init.rank, ranks: init.shared.ranks, shared }, false, init.counters);
  try {
    for (;;) {
      if (trainer.step + 1 === opts.faultStep) throw new Error(`injected fault before step ${opts.faultStep}`);
      await trainer.trainStep();
    }
  } catch (e) {
    if (!(e instanceof StopRequested)) throw e;
  }
  const digest = await weightsDigest(hostParams(model));
  trainer.dispose();
  model.dispose();
  return digest;
}

/**
 * Runs rank `init.rank` and posts its one message: its digest, its error (after aborting the exchange, which wakes
 * every rank so that rank 0 reports this message), or that it stopped because another rank failed. Never rejects.
 */
export async function runRank(init: WorkerInit, post: (m: WorkerMessage) => void, opts: RankOptions = {}): Promise<void> {
  const shared = new SharedStep(init.shared, init.rank, false); // blocking waits: a rank's thread has nothing else to do
  try {
    post({ type: 'done', rank: init.rank, weights: await trainRank(init, shared, opts) });
  } catch (e) {
    if (e instanceof StepAborted) return post({ type: 'aborted', rank: init.rank }); // the failed rank says why
    post({ type: 'error', rank: init.rank, message: (e as Error)?.message ?? String(e) });
    shared.abort();
  }
}
