/**
 * A data-parallel worker thread (rank ≥ 1, see data_parallel.ts): builds the model from the run's config on its own
 * engine, takes rank 0's weights (the optimiser state is shared), and trains its shard of every batch in lockstep until rank 0
 * sends STOP; then reports a digest of its weights, which rank 0 checks against its own.
 *
 * Fault injection for tests: MTP_DP_FAULT_STEP=n makes every worker throw before its step n.
 */
import { parentPort, workerData } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs';
import { initBackend, BackendName } from '../backend/index';
import { splitTrainVal } from '../data/corpus';
import { createModel } from '../model/create';
import { SharedStep, StepAborted } from './shared_step';
import { hostParams, weightsDigest, WorkerInit, WorkerMessage } from './data_parallel';
import { StopRequested, Trainer } from './trainer';

async function work(init: WorkerInit, shared: SharedStep): Promise<string> {
  await initBackend(init.backend as BackendName);
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
  const faultStep = Number(process.env.MTP_DP_FAULT_STEP ?? NaN);
  try {
    for (;;) {
      if (trainer.step + 1 === faultStep) throw new Error(`injected fault before step ${faultStep}`);
      await trainer.trainStep();
    }
  } catch (e) {
    if (!(e instanceof StopRequested)) throw e;
  }
  const digest = weightsDigest(hostParams(model));
  trainer.dispose();
  model.dispose();
  return digest;
}

const init = workerData as WorkerInit;
const shared = new SharedStep(init.shared, init.rank, false);
const post = (m: WorkerMessage) => parentPort!.postMessage(m);
work(init, shared).then(
  (weights) => post({ type: 'done', rank: init.rank, weights }),
  (e: Error) => {
    if (e instanceof StepAborted) return post({ type: 'aborted', rank: init.rank }); // another rank failed and says why
    post({ type: 'error', rank: init.rank, message: e.message });
    shared.abort(); // wakes every rank: rank 0 reports this message
  },
);
