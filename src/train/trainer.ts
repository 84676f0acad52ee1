/**
 * The training step and evaluation, independent of files and printing (the CLI and experiment
 * scripts add checkpoints, logs and progress bars around it).
 *
 * One step: sample a batch with k-ahead targets, loss + gradients of the trainable variables,
 * global-norm clipping, AdamW with the scheduled learning rate. The loss, gradient norm and
 * per-head metrics come back in one device→host read; a non-finite loss or gradient stops the run
 * before the weights are touched.
 */
import * as tf from '@tensorflow/tfjs';
import type { TrainConfig } from '../config';
import { evalBatches, sampleBatch } from '../data/batch';
import type { Batch } from '../data/batch';
import type { MtpModel } from '../model/create';
import { Rng } from '../util/rng';
import { AdamW, AdamWState } from './adamw';
import { evaluate, EvalResult, HeadMetrics } from './evaluate';
import { lrAt } from './schedule';

export type { EvalResult, HeadMetrics };

export interface StepResult {
  /** 1-based index of the step just taken. */
  step: number;
  loss: number;
  lr: number;
  gradNorm: number;
  heads: HeadMetrics[];
  tokens: number;
  ms: number;
}

/**
 * Training data: token streams (random windows for training, fixed evenly spaced windows for
 * validation), or a batch sampler with fixed validation batches (e.g. a synthetic task).
 */
export type TrainData =
  | { train: ArrayLike<number>; val: ArrayLike<number> }
  | { sample: (rng: Rng, B: number, T: number, k: number) => Batch; val: Batch[] };

/** Everything needed to continue a run exactly where it stopped. */
export interface TrainerState {
  step: number;
  rngState: number;
  optimizer: AdamWState;
}

/** Thrown when the loss or the gradient norm is NaN or infinite; the weights are left as they were. */
export class NonFiniteLossError extends Error {
  constructor(readonly step: number, readonly loss: number, readonly gradNorm: number) {
    super(
      `non-finite training signal at step ${step} (loss ${loss}, gradient norm ${gradNorm}); ` +
        `the update was not applied. Lower train.lr or raise train.warmupSteps, then resume from the last checkpoint.`,
    );
    this.name = 'NonFiniteLossError';
  }
}

export class Trainer {
  /** Steps taken so far. */
  step = 0;
  readonly optimizer: AdamW;
  private rng: Rng;
  private readonly valBatches: Batch[];

  constructor(
    readonly model: MtpModel,
    readonly cfg: TrainConfig,
    readonly data: TrainData,
  ) {
    const trainable = new Set(model.trainableVariables());
    const named = new Map([...model.params].filter(([, v]) => trainable.has(v)));
    const lrScale = new Map([...named.keys()].map((name) => [name, model.lrMultiplier?.(name) ?? 1]));
    this.optimizer = new AdamW(named, cfg, lrScale);
    this.rng = new Rng(cfg.seed);
    const { batchSize: B } = cfg;
    const T = model.config.blockSize;
    this.valBatches = 'sample' in data ? data.val : evalBatches(data.val, B, T, model.k, cfg.evalBatches);
  }

  /** Tokens consumed per step (B · T). */
  get tokensPerStep(): number {
    return this.cfg.batchSize * this.model.config.blockSize;
  }

  /** One optimiser step on a freshly sampled batch. */
  async trainStep(): Promise<StepResult> {
    const t0 = performance.now();
    const { batchSize: B, gradClip } = this.cfg;
    const { k } = this.model;
    const T = this.model.config.blockSize;
    const data = this.data;
    const batch = 'sample' in data ? data.sample(this.rng, B, T, k) : sampleBatch(data.train, B, T, k, this.rng);
    const lr = lrAt(this.step, this.cfg);
    const inputs = tf.tensor2d(batch.inputs, [B, T], 'int32');
    const targets = tf.tensor3d(batch.targets, [k, B, T], 'int32');
    const { loss: value, heads: headT, grads } = this.model.lossAndGrads(inputs, targets, this.cfg.backward, this.step / Math.max(1, this.cfg.steps));
    // Σ of squares added pairwise: one addN over every gradient exceeds WebGPU's binding limit in compatibility mode.
    const gradNorm = tf.tidy(() => tf.sqrt(Object.values(grads).map((g) => tf.sum(tf.square(g))).reduce((a, b) => tf.add(a, b))) as tf.Scalar);
    const packed = tf.tidy(() => tf.stack([value, gradNorm, ...headT.flatMap((h) => [h.loss, h.acc])]));
    const read = await packed.data(); // the step's only device → host sync
    const loss = read[0];
    const norm = read[1];
    try {
      if (!Number.isFinite(loss) || !Number.isFinite(norm)) throw new NonFiniteLossError(this.step + 1, loss, norm);
      const scale = tf.scalar(gradClip > 0 ? Math.min(1, gradClip / (norm + 1e-6)) : 1);
      this.optimizer.apply(grads, lr, scale);
      scale.dispose();
    } finally {
      tf.dispose([inputs, targets, value, gradNorm, packed, ...headT.flatMap((h) => [h.loss, h.acc]), ...Object.values(grads)]);
    }
    this.step += 1;
    const heads: HeadMetrics[] = [];
    for (let i = 0; i < k; i++) heads.push({ loss: read[2 + 2 * i], acc: read[3 + 2 * i] });
    return { step: this.step, loss, lr, gradNorm: norm, heads, tokens: B * T, ms: performance.now() - t0 };
  }

  /** Mean loss and per-head metrics over the fixed validation batches. */
  evaluate(): Promise<EvalResult> {
    return evaluate(this.model, this.valBatches);
  }

  async state(): Promise<TrainerState> {
    return { step: this.step, rngState: this.rng.state, optimizer: await this.optimizer.state() };
  }

  /** Continues from a saved state (weights are restored separately, by the checkpoint loader). */
  restore(state: TrainerState): void {
    this.optimizer.load(state.optimizer);
    this.step = state.step;
    this.rng = new Rng(state.rngState);
  }

  dispose(): void {
    this.optimizer.dispose();
  }
}
