/**
 * Golden values from an independent implementation (llm.c style): the PyTorch twin
 * (bench/torch_twin.py) builds the same model from the same seeded stream; test/golden/make_golden.py
 * wrote its logits, loss, every parameter's gradient and 10 Adam-step losses to test/golden/nano.json.
 * Tolerances: logits and loss 1e-5, gradients 1e-5 relative to their size, Adam losses 1e-4.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { MODEL_DEFAULTS, ModelConfig } from '../src/config';
import { initBackend } from '../src/backend/index';
import { createModel } from '../src/model/create';
import { AdamW } from '../src/train/adamw';
import { Rng } from '../src/util/rng';

const golden = JSON.parse(fs.readFileSync(path.join(__dirname, 'golden', 'nano.json'), 'utf8'));
const g = golden.config;
const cfg: ModelConfig = { ...MODEL_DEFAULTS, vocabSize: g.vocab, nEmbd: g.dModel, nHead: g.nHeads, nLayer: g.nLayers, blockSize: g.maxSeq, seed: golden.seed };

/** The twin's batch: uniform tokens from mulberry32(seed), rows of T+1, inputs/targets shifted by one. */
function twinBatch(): { inputs: tf.Tensor2D; targets: tf.Tensor3D } {
  const rng = new Rng(golden.batchSeed);
  const B = g.batch;
  const T = g.maxSeq;
  const a = Array.from({ length: B * (T + 1) }, () => Math.floor(rng.next() * g.vocab));
  const rows = Array.from({ length: B }, (_, b) => a.slice(b * (T + 1), (b + 1) * (T + 1)));
  return {
    inputs: tf.tensor2d(rows.map((r) => r.slice(0, T)), [B, T], 'int32'),
    targets: tf.tensor3d([rows.map((r) => r.slice(1))], [1, B, T], 'int32'),
  };
}

describe('golden values from the PyTorch twin', () => {
  beforeAll(async () => {
    await initBackend('cpu');
  });

  it('logits, loss and every gradient match', async () => {
    const model = createModel(cfg);
    const { inputs, targets } = twinBatch();
    const logits = tf.tidy(() => model.trunk.forward(inputs).slice([0, 0, 0], [1, 3, 8]).dataSync());
    logits.forEach((x, i) => expect(Math.abs(x - golden.logitsHead[i])).toBeLessThan(1e-5));
    const { value, grads } = tf.variableGrads(() => model.loss(inputs, targets).loss, model.trainableVariables());
    expect(Math.abs(value.dataSync()[0] - golden.loss)).toBeLessThan(1e-5);
    expect(Object.keys(golden.grads).sort()).toEqual([...model.params.keys()].sort());
    for (const [name, v] of model.params) {
      const gr = Array.from(grads[v.name].dataSync());
      const ref = golden.grads[name];
      const scale = Math.max(1e-3, ref.absSum);
      const sum = gr.reduce((a, b) => a + b, 0);
      const absSum = gr.reduce((a, b) => a + Math.abs(b), 0);
      expect(Math.abs(sum - ref.sum) / scale, `sum of grad ${name}`).toBeLessThan(1e-5);
      expect(Math.abs(absSum - ref.absSum) / scale, `abs-sum of grad ${name}`).toBeLessThan(1e-5);
      ref.head.forEach((x: number, i: number) => expect(Math.abs(gr[i] - x), `grad ${name}[${i}]`).toBeLessThan(1e-6 + 1e-4 * Math.abs(x)));
    }
    tf.dispose([inputs, targets, value, ...Object.values(grads)]);
    model.dispose();
  });

  it('10 Adam steps give the same losses (AdamW without decay = Adam)', async () => {
    const model = createModel(cfg);
    const { inputs, targets } = twinBatch();
    const opt = new AdamW(model.params, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 });
    const one = tf.scalar(1);
    const losses: number[] = [];
    for (let i = 0; i < golden.adamLosses.length; i++) {
      const { value, grads } = tf.variableGrads(() => model.loss(inputs, targets).loss, model.trainableVariables());
      losses.push((await value.data())[0]);
      opt.apply(grads, golden.lr, one);
      tf.dispose([value, ...Object.values(grads)]);
    }
    losses.forEach((l, i) => expect(Math.abs(l - golden.adamLosses[i]), `step ${i}`).toBeLessThan(1e-4));
    tf.dispose([inputs, targets, one]);
    opt.dispose();
    model.dispose();
  });
});
