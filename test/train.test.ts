/**
 * Training: the loss falls when overfitting one batch; no tensor leaks across steps; a non-finite
 * loss stops without touching the weights; checkpoints round-trip, refuse a mismatched model and
 * never leave a half-written file; resuming gives exactly the uninterrupted run.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { resolveConfig, TrainConfig } from '../src/config';
import { initBackend } from '../src/backend/index';
import { createModel, MtpModel } from '../src/model/create';
import { NonFiniteLossError, Trainer } from '../src/train/trainer';
import { lrAt } from '../src/train/schedule';
import { loadParams, readCheckpoint, saveCheckpoint } from '../src/train/checkpoint';
import { loadModel, trainRun } from '../src/train/run';
import { maxAbsDiff } from './helpers';

const base = resolveConfig('nano');
const corpus = new TextEncoder().encode('the quick brown fox jumps over the lazy dog; '.repeat(40));
const data = { train: corpus, val: corpus };

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'mtp-lab-'));
}

function weights(model: MtpModel): Float32Array[] {
  return model.trainableVariables().map((v) => v.dataSync() as Float32Array);
}

describe('training', () => {
  beforeAll(async () => {
    await initBackend('cpu');
  });

  it('learning rate warms up linearly, peaks, then decays by cosine to the floor', () => {
    const s = { lr: 1, warmupSteps: 10, steps: 110, minLrRatio: 0.1 };
    expect(lrAt(0, s)).toBeCloseTo(0.1);
    expect(lrAt(9, s)).toBeCloseTo(1);
    expect(lrAt(60, s)).toBeCloseTo(0.55);
    expect(lrAt(110, s)).toBeCloseTo(0.1);
  });

  it('overfits one batch: the loss falls far below its start', async () => {
    const model = createModel(base.model);
    const one = corpus.subarray(0, base.model.blockSize + 1);
    const cfg: TrainConfig = { ...base.train, batchSize: 2, steps: 60, warmupSteps: 5, lr: 1e-2, weightDecay: 0 };
    const trainer = new Trainer(model, cfg, { train: one, val: one });
    const first = (await trainer.trainStep()).loss;
    let last = first;
    for (let i = 1; i < 60; i++) last = (await trainer.trainStep()).loss;
    expect(first).toBeGreaterThan(4.5); // ≈ ln 256 at init
    expect(last).toBeLessThan(0.5);
    trainer.dispose();
    model.dispose();
  }, 60_000);

  it('leaks no tensors across training steps and evaluation', async () => {
    const model = createModel(base.model);
    const trainer = new Trainer(model, base.train, data);
    await trainer.trainStep();
    await trainer.evaluate();
    const before = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) await trainer.trainStep();
    await trainer.evaluate();
    expect(tf.memory().numTensors).toBe(before);
    trainer.dispose();
    model.dispose();
  });

  it('a non-finite loss throws a clear error and leaves the weights untouched', async () => {
    const model = createModel(base.model);
    const poisoned: MtpModel = Object.create(model);
    poisoned.loss = (inputs, targets) => {
      const out = model.loss(inputs, targets);
      return { ...out, loss: tf.mul(out.loss, NaN) as tf.Scalar };
    };
    const trainer = new Trainer(poisoned, base.train, data);
    const before = weights(model);
    const err = await trainer.trainStep().catch((e) => e);
    expect(err).toBeInstanceOf(NonFiniteLossError);
    expect(err.message).toMatch(/non-finite training signal at step 1 \(loss NaN.*the update was not applied/);
    weights(model).forEach((w, i) => expect(maxAbsDiff(w, before[i])).toBe(0));
    expect(trainer.step).toBe(0);
    trainer.dispose();
    model.dispose();
  });
});

describe('checkpoints', () => {
  beforeAll(async () => {
    await initBackend('cpu');
  });

  it('round-trip: a loaded model has identical weights and logits', async () => {
    const dir = tmpDir();
    const file = path.join(dir, 'model.ckpt');
    const model = createModel(base.model);
    await saveCheckpoint(file, { config: base, tokenizer: { kind: 'byte' }, step: 7 }, model.params);
    const loaded = loadModel(file);
    expect(loaded.step).toBe(7);
    weights(loaded.model).forEach((w, i) => expect(maxAbsDiff(w, weights(model)[i])).toBe(0));
    expect(fs.readdirSync(dir)).toEqual(['model.ckpt']); // no temp file left behind
    loaded.model.dispose();
    model.dispose();
  });

  it('refuses a checkpoint of another shape, naming the differences, without touching the weights', async () => {
    const dir = tmpDir();
    const file = path.join(dir, 'model.ckpt');
    const small = createModel(base.model);
    await saveCheckpoint(file, { config: base, tokenizer: { kind: 'byte' }, step: 1 }, small.params);
    const wider = createModel({ ...base.model, nEmbd: 48, nHead: 4 });
    const before = weights(wider);
    expect(() => loadParams(readCheckpoint(file), wider.config, wider.params, file)).toThrow(
      /does not match the requested model:\n {2}- model.nHead: checkpoint has 2, requested 4\n {2}- model.nEmbd: checkpoint has 32, requested 48/,
    );
    // same config but shapes that differ (a tampered header) are refused too
    const lying = createModel({ ...base.model, nEmbd: 48, nHead: 4 });
    expect(() => loadParams(readCheckpoint(file), base.model, lying.params, file)).toThrow(/parameter 'tokEmb' has shape \[256,32\] in the checkpoint, the model needs \[256,48\]/);
    weights(wider).forEach((w, i) => expect(maxAbsDiff(w, before[i])).toBe(0));
    for (const m of [small, wider, lying]) m.dispose();
  });

  it('a failed save leaves the previous checkpoint intact and no temp file', async () => {
    const dir = tmpDir();
    const file = path.join(dir, 'model.ckpt');
    const model = createModel(base.model);
    await saveCheckpoint(file, { config: base, tokenizer: { kind: 'byte' }, step: 1 }, model.params);
    const good = fs.readFileSync(file);
    const broken = new Map(model.params);
    const ghost = tf.variable(tf.zeros([2]));
    ghost.dispose(); // reading it fails half-way through the save
    broken.set('ghost', ghost);
    await expect(saveCheckpoint(file, { config: base, tokenizer: { kind: 'byte' }, step: 2 }, broken)).rejects.toThrow();
    expect(fs.readFileSync(file).equals(good)).toBe(true);
    expect(fs.readdirSync(dir)).toEqual(['model.ckpt']);
    model.dispose();
  });

  it('rejects a file that is not a checkpoint, and a truncated one', async () => {
    const dir = tmpDir();
    fs.writeFileSync(path.join(dir, 'x.ckpt'), 'hello');
    expect(() => readCheckpoint(path.join(dir, 'x.ckpt'))).toThrow(/is not an mtp-lab checkpoint/);
    const model = createModel(base.model);
    const file = path.join(dir, 'model.ckpt');
    await saveCheckpoint(file, { config: base, tokenizer: { kind: 'byte' }, step: 1 }, model.params);
    fs.truncateSync(file, fs.statSync(file).size - 8);
    expect(() => readCheckpoint(file)).toThrow(/is corrupt: it is truncated or padded/);
    model.dispose();
  });

  it('resume continues exactly: a run stopped after step 5 and resumed equals the uninterrupted run', async () => {
    const cfg = resolveConfig('nano', { train: { corpus: 'prose', maxCorpusBytes: 20_000, steps: 8, evalEvery: 4 } });
    const straightDir = tmpDir();
    const straight = await trainRun({ config: cfg, outDir: straightDir });
    const splitDir = tmpDir();
    const crash = (r: { step: number }) => {
      if (r.step === 5) throw new Error('simulated crash');
    };
    await expect(trainRun({ config: cfg, outDir: splitDir, onStep: crash })).rejects.toThrow('simulated crash');
    expect(readCheckpoint(path.join(splitDir, 'model.ckpt')).header.step).toBe(4);
    await expect(trainRun({ config: cfg, outDir: splitDir })).rejects.toThrow(/already holds a checkpoint; pass --resume/);
    const resumed = await trainRun({ config: cfg, outDir: splitDir, resume: true });
    expect(resumed.steps).toBe(8);
    weights(resumed.model).forEach((w, i) => expect(maxAbsDiff(w, weights(straight.model)[i])).toBe(0));
    expect(resumed.val!.loss).toBe(straight.val!.loss);
    const log = fs.readFileSync(path.join(splitDir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(log.filter((l) => l.type === 'train').map((l) => l.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    // a resume with another model shape is refused with the differences named
    const other = resolveConfig('nano', { model: { nLayer: 3 }, train: cfg.train });
    await expect(trainRun({ config: other, outDir: splitDir, resume: true })).rejects.toThrow(/model.nLayer: checkpoint has 2, requested 3/);
    straight.model.dispose();
    resumed.model.dispose();
  }, 60_000);
});
