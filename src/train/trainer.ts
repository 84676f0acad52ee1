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
 * the loss and gradients of its share of the rows, weighted by its share, and the ranks sum them over
 * shared memory (all_reduce.ts); every rank then clips and applies the same AdamW update to identical
 * weights. The result equals single-rank training on the global batch up to float summation order.
 */
import * as tf from '@tensorflow/tfjs';
import type { TrainConfig } from '../config';
import { evalBatches, sampleBatch } from '../data/batch';
import type { Batch } from '../data/batch';
import type { MtpModel } from '../model/create';
import { Rng } from '../util/rng';
import { AdamW, AdamWState } from './adamw';
import { Command, CommandValue } from './all_reduce';
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

/** One rank of data-parallel training (see the file comment). */
export interface DataParallel {
  rank: number;
  ranks: number;
  /** Sums every rank's contribution (same order on every rank) and returns every rank's command. */
  exchange(contribution: Float32Array, command?: CommandValue): Promise<{ sum: Float32Array; commands: CommandValue[] }>;
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
  readonly optimizer: AdamW;
  private rng: Rng;
  private readonly valBatches: Batch[];

  constructor(
    readonly model: MtpModel,
    readonly cfg: TrainConfig,
    readonly data: TrainData,
    /** Set to train as one rank of a data-parallel group (see the file comment). */
    public parallel?: DataParallel,
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

  /** Floats each rank contributes per step: every trainable parameter's gradient, then the loss and (loss, acc) per head. */
  get exchangeLength(): number {
    let n = 0;
    for (const p of this.optimizer.params.values()) n += p.size;
    return n + 1 + 2 * this.model.k;
  }

  /** Tells the other ranks to stop (rank 0, instead of a step); they end with StopRequested. */
  async stopPeers(): Promise<void> {
    if (this.parallel && this.parallel.ranks > 1) await this.parallel.exchange(new Float32Array(this.exchangeLength), Command.STOP);
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
    const contribution = new Float32Array(this.exchangeLength);
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
      for (let i = 0; i < metrics.length; i++) contribution[off + i] = metrics[i] * share;
    } finally {
      tf.dispose([inputs, targets, value, ...headT.flatMap((h) => [h.loss, h.acc]), ...Object.values(grads)]);
    }
    const { sum, commands } = await dp.exchange(contribution);
    if (commands[0] === Command.STOP) throw new StopRequested();
    const P = sum.length - 1 - 2 * k;
    let squares = 0;
    for (let i = 0; i < P; i++) squares += sum[i] * sum[i];
    const norm = Math.sqrt(squares);
    const loss = sum[P];
    if (!Number.isFinite(loss) || !Number.isFinite(norm)) throw new NonFiniteLossError(this.step + 1, loss, norm);
    const { gradClip } = this.cfg;
    const averaged: tf.NamedTensorMap = {};
    let off = 0;
    for (const p of this.optimizer.params.values()) {
      averaged[p.name] = tf.tensor(sum.subarray(off, off + p.size), p.shape, 'float32');
      off += p.size;
    }
    const scale = tf.scalar(gradClip > 0 ? Math.min(1, gradClip / (norm + 1e-6)) : 1);
    try {
      this.optimizer.apply(averaged, lr, scale);
    } finally {
      tf.dispose([scale, ...Object.values(averaged)]);
    }
    this.step += 1;
    const heads: HeadMetrics[] = [];
    for (let i = 0; i < k; i++) heads.push({ loss: sum[P + 1 + 2 * i], acc: sum[P + 2 + 2 * i] });
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
