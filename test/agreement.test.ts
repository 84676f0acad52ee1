/**
 * Backends agree: the same weights and batch give the same logits, loss and gradients on the pure-JS
 * `cpu` reference and on `wasm` (with its gather-gradient and transposed-matMul fixes).
 * Tolerance: 1e-4 absolute on logits and gradients (float32 summation order differs between backends).
 */
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { resolveConfig } from '../src/config';
import { initBackend } from '../src/backend/index';
import { createModel } from '../src/model/create';
import { sampleBatch } from '../src/data/batch';
import { Rng } from '../src/util/rng';
import { maxAbsDiff, randomTokens } from './helpers';

const TOL = 1e-4;

async function run(backend: 'cpu' | 'wasm') {
  await initBackend(backend);
  const cfg = resolveConfig('nano').model;
  const model = createModel(cfg); // weights come from the seeded host stream: identical on both backends
  const tokens = randomTokens(500, cfg.vocabSize, 9);
  const b = sampleBatch(tokens, 3, cfg.blockSize, 1, new Rng(4));
  const inputs = tf.tensor2d(b.inputs, [b.B, b.T], 'int32');
  const targets = tf.tensor3d(b.targets, [1, b.B, b.T], 'int32');
  const logits = await model.trunk.forward(inputs).data();
  const { value, grads } = tf.variableGrads(() => model.loss(inputs, targets).loss, model.trainableVariables());
  const loss = (await value.data())[0];
  const g = new Map<string, Float32Array>();
  for (const [name, v] of model.params) g.set(name, (await grads[v.name].data()) as Float32Array);
  tf.dispose([inputs, targets, value, ...Object.values(grads)]);
  model.dispose();
  return { logits, loss, g };
}

describe('cpu and wasm agree', () => {
  it(`on logits, loss and every gradient within ${TOL}`, async () => {
    const cpu = await run('cpu');
    const wasm = await run('wasm');
    expect(maxAbsDiff(cpu.logits, wasm.logits)).toBeLessThan(TOL);
    expect(Math.abs(cpu.loss - wasm.loss)).toBeLessThan(TOL);
    for (const [name, gc] of cpu.g) {
      const d = maxAbsDiff(gc, wasm.g.get(name)!);
      expect(d, `gradient of ${name}`).toBeLessThan(TOL);
    }
    // the embedding gradient (tf.gather → UnsortedSegmentSum on wasm) is non-trivial
    expect(Math.max(...cpu.g.get('tokEmb')!.map(Math.abs))).toBeGreaterThan(1e-4);
  }, 60_000);
});
