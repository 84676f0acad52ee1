/**
 * The training step and evaluation, independent of files and printing (the CLI and experiment
 * scripts add checkpoints, logs and progress bars around it).
 *
 * One step: sample a batch with k-ahead targets, loss + gradients of the trainable variables,
 * global-norm clipping, AdamW with the scheduled learning rate. The loss, gradient norm and
 * per-head metrics come back in one device→host read; a non-finite loss or gradient stops the run
 * before the weights are touched.
 *
 * Data-parallel (`parallel`): every rank samples the same global batch (same random stream), computes
 * the loss and gradients of its share of the rows, weighted by its share, and the ranks sum them and
 * apply AdamW over shared memory, each rank its own slice (shared_step.ts); every rank then copies the
 * shared weights into its engine. The result equals single-rank training on the global batch up to
 * float summation order.
 */
import * as tf from '@tensorflow/tfjs';
import type { TrainConfig } from '../config';
import { evalBatches, sampleBatch } from '../data/batch';
import type { Batch } from '../data/batch';
import type { MtpModel } from '../model/create';
import { lossHeadCount } from '../model/mtp_model';
import { Rng } from '../util/rng';
import { AdamW, AdamWState } from './adamw';
import { Command, ParamLayout, SharedStep } from './shared_step';
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

/** Step, batch-sampler state and Adam step count: a trainer's position apart from its tensors. */
export interface TrainerCounters {
  step: number;
  rngState: number;
  t: number;
}

/** One rank of data-parallel training (see the file comment). */
export interface DataParallel {
  rank: number;
  ranks: number;
  shared: SharedStep;
}

/** Thrown at a data-parallel worker when rank 0 ends the run (not an error). */
export class StopRequested extends Error {
  constructor() {
    super('rank 0 stopped the run');
    this.name = 'StopRequested';
  }
}

/** Rows [lo, hi) of a batch of B rows that rank `rank` of `ranks` trains on. */
export function shardRows(B: number, rank: number, ranks: number): [number, number] {
  return [Math.floor((B * rank) / ranks), Math.floor((B * (rank + 1)) / ranks)];
}

export class Trainer {
  /** Steps taken so far. */
  step = 0;
  /** Set by joinGroup to train as one rank of a data-parallel group (see the file comment). */
  parallel?: DataParallel;
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
    if (this.parallel && this.parallel.ranks > 1) return this.parallelStep(batch, lr, t0);
    const inputs = tf.tensor2d(batch.inputs, [B, T], 'int32');
    const targets = tf.tensor3d(batch.targets, [k, B, T], 'int32');
    const { loss: value, heads: headT, grads } = this.model.lossAndGrads(inputs, targets, this.cfg.backward, this.step / Math.max(1, this.cfg.steps));
    const gradNorm = this.optimizer.globalNorm(grads);
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
    for (let i = 0; i < lossHeadCount(this.model); i++) heads.push({ loss: read[2 + 2 * i], acc: read[3 + 2 * i] });
    return { step: this.step, loss, lr, gradNorm: norm, heads, tokens: B * T, ms: performance.now() - t0 };
  }

  /** The trainable parameters in the optimiser's order, as the data-parallel step lays them out. */
  paramLayout(): ParamLayout {
    const vars = [...this.optimizer.params];
    return {
      sizes: vars.map(([, v]) => v.size),
      decay: vars.map(([, v]) => v.rank >= 2),
      lrScale: vars.map(([name]) => this.optimizer.lrScale.get(name) ?? 1),
    };
  }

  /** Metric floats per step: the loss, then (loss, acc) per head. */
  get metricCount(): number {
    return 1 + 2 * lossHeadCount(this.model);
  }

  /** Tells the other ranks to stop (rank 0, instead of a step); they end with StopRequested. */
  async stopPeers(): Promise<void> {
    const dp = this.parallel;
    if (!dp || dp.ranks <= 1) return;
    await dp.shared.step(new Float32Array(dp.shared.P + this.metricCount), Command.STOP, this.hyper(0));
  }

  private hyper(lr: number): Parameters<SharedStep['step']>[2] {
    const { beta1, beta2, eps, weightDecay, gradClip } = this.cfg;
    return { lr, t: this.optimizer.t + 1, beta1, beta2, eps, weightDecay, gradClip };
  }

  /** Copies the shared weights into this rank's variables. */
  private loadSharedWeights(shared: SharedStep): void {
    tf.tidy(() => {
      let off = 0;
      for (const v of this.optimizer.params.values()) {
        v.assign(tf.tensor(shared.params.subarray(off, off + v.size), v.shape, 'float32'));
        off += v.size;
      }
    });
  }

  /** A data-parallel step on this rank's rows of the global batch (see the file comment). */
  private async parallelStep(batch: Batch, lr: number, t0: number): Promise<StepResult> {
    const dp = this.parallel!;
    const { B, T, k } = batch;
    const [lo, hi] = shardRows(B, dp.rank, dp.ranks);
    const rows = hi - lo;
    const share = rows / B;
    const targetRows = new Int32Array(k * rows * T); // [k, rows, T]
    for (let i = 0; i < k; i++) targetRows.set(batch.targets.subarray(i * B * T + lo * T, i * B * T + hi * T), i * rows * T);
    const inputs = tf.tensor2d(batch.inputs.subarray(lo * T, hi * T), [rows, T], 'int32');
    const targets = tf.tensor3d(targetRows, [k, rows, T], 'int32');
    const P = dp.shared.P;
    const contribution = new Float32Array(P + this.metricCount);
    const { loss: value, heads: headT, grads } = this.model.lossAndGrads(inputs, targets, this.cfg.backward, this.step / Math.max(1, this.cfg.steps));
    try {
      let off = 0;
      for (const p of this.optimizer.params.values()) {
        const g = grads[p.name];
        if (g) {
          const d = g.dataSync();
          for (let i = 0; i < d.length; i++) contribution[off + i] = d[i] * share;
        }
        off += p.size;
      }
      const packed = tf.tidy(() => tf.stack([value, ...headT.flatMap((h) => [h.loss, h.acc])]));
      const metrics = packed.dataSync();
      packed.dispose();
      for (let i = 0; i < metrics.length; i++) contribution[P + i] = metrics[i] * share;
    } finally {
      tf.dispose([inputs, targets, value, ...headT.flatMap((h) => [h.loss, h.acc]), ...Object.values(grads)]);
    }
    const { commands, metrics, norm } = await dp.shared.step(contribution, Command.CONTINUE, this.hyper(lr));
    if (commands[0] === Command.STOP) throw new StopRequested();
    const loss = metrics[0];
    if (!Number.isFinite(loss) || !Number.isFinite(norm)) throw new NonFiniteLossError(this.step + 1, loss, norm);
    this.optimizer.t += 1;
    this.loadSharedWeights(dp.shared);
    this.step += 1;
    const heads: HeadMetrics[] = [];
    for (let i = 0; i < lossHeadCount(this.model); i++) heads.push({ loss: metrics[1 + 2 * i], acc: metrics[2 + 2 * i] });
    return { step: this.step, loss, lr, gradNorm: norm, heads, tokens: B * T, ms: performance.now() - t0 };
  }

  /** Mean loss and per-head metrics over the fixed validation batches. */
  evaluate(): Promise<EvalResult> {
    return evaluate(this.model, this.valBatches);
  }

  async state(): Promise<TrainerState> {
    const dp = this.parallel;
    if (!dp || dp.ranks <= 1) return { step: this.step, rngState: this.rng.state, optimizer: await this.optimizer.state() };
    // data-parallel: the moments live in shared memory (every rank's slice, complete between steps)
    const m = new Map<string, Float32Array>();
    const v = new Map<string, Float32Array>();
    let off = 0;
    for (const [name, p] of this.optimizer.params) {
      m.set(name, dp.shared.m.slice(off, off + p.size));
      v.set(name, dp.shared.v.slice(off, off + p.size));
      off += p.size;
    }
    return { step: this.step, rngState: this.rng.state, optimizer: { t: this.optimizer.t, m, v } };
  }

  /** What a data-parallel worker needs besides the weights and moments to continue exactly where this trainer is. */
  counters(): TrainerCounters {
    return { step: this.step, rngState: this.rng.state, t: this.optimizer.t };
  }

  /**
   * Joins a data-parallel group: the shared weights and moments are filled from this trainer (rank 0, `publish`), or
   * this trainer takes them (a worker), with the step, sampler state and Adam step count of rank 0.
   */
  async joinGroup(dp: DataParallel, publish: boolean, counters?: TrainerCounters): Promise<void> {
    if (publish) {
      const state = await this.optimizer.state();
      let off = 0;
      for (const [name, p] of this.optimizer.params) {
        dp.shared.params.set((await p.data()) as Float32Array, off);
        dp.shared.m.set(state.m.get(name)!, off);
        dp.shared.v.set(state.v.get(name)!, off);
        off += p.size;
      }
    } else {
      this.loadSharedWeights(dp.shared);
      this.step = counters!.step;
      this.rng = new Rng(counters!.rngState);
      this.optimizer.t = counters!.t;
    }
    this.parallel = dp;
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
