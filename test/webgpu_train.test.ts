/**
 * The fused webgpu training programs (src/backend/webgpu_train_*.ts) against the plain tfjs ops on the same backend,
 * on whatever adapter Dawn gives here (Mesa's software renderer through OpenGL ES on a CPU-only machine). Without an
 * adapter the tests fail with what to install; MTP_SKIP_WEBGPU=1 skips them instead.
 *
 * Tolerances, relative to the largest magnitude of the reference: 1e-5 for forward values, 1e-4 for gradients and for
 * weights after training steps (float32 sums in another order).
 */
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { trainDispatches, WEBGPU_TRAIN_FLAG } from '../src/backend/webgpu_train_dispatch';
import { resolveConfig } from '../src/config';
import { createModel } from '../src/model/create';
import { attendQKV, layerNorm, mlpRows } from '../src/model/layers';
import { causalMask, crossEntropy, MASKED } from '../src/model/transformer';
import type { ParamMap } from '../src/model/params';
import { AdamW } from '../src/train/adamw';
import { Trainer } from '../src/train/trainer';
import { Rng } from '../src/util/rng';
import { webgpuBeforeAll } from './helpers';

const needAdapter = webgpuBeforeAll();

/** max |a − b| / max |b| (0 when both are zero). */
function rel(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return scale === 0 ? diff : diff / scale;
}

async function withFlag<T>(on: boolean, f: () => Promise<T> | T): Promise<T> {
  tf.env().set(WEBGPU_TRAIN_FLAG, on);
  try {
    return await f();
  } finally {
    tf.env().set(WEBGPU_TRAIN_FLAG, true);
  }
}

const read = async (t: tf.Tensor) => Float32Array.from((await t.data()) as Float32Array);

function randomTensor(shape: number[], seed: number, scale = 1): tf.Tensor {
  const rng = new Rng(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  return tf.tensor(Float32Array.from({ length: n }, () => scale * (2 * rng.next() - 1)), shape);
}

/** f's value and its gradients with respect to every input, under a random upstream gradient, fused or plain. */
async function valueAndGrads(fused: boolean, f: (...xs: tf.Tensor[]) => tf.Tensor, inputs: tf.Tensor[]) {
  return withFlag(fused, async () => {
    const y = tf.tidy(() => f(...inputs));
    const dy = randomTensor(y.shape, 99);
    const grads = tf.grads((...xs: tf.Tensor[]) => tf.mul(f(...xs), dy).sum())(inputs);
    const out = { y: await read(y), grads: await Promise.all(grads.map(read)) };
    tf.dispose([y, dy, ...grads]);
    return out;
  });
}

/** Checks a fused op against the plain composition: value 1e-5, every gradient 1e-4, and that it ran `programs` programs. */
async function expectSame(f: (...xs: tf.Tensor[]) => tf.Tensor, inputs: tf.Tensor[], programs: number) {
  const d0 = trainDispatches.count;
  const fused = await valueAndGrads(true, f, inputs);
  expect(trainDispatches.count - d0).toBe(programs);
  const plain = await valueAndGrads(false, f, inputs);
  expect(rel(fused.y, plain.y)).toBeLessThan(1e-5);
  fused.grads.forEach((g, i) => expect(rel(g, plain.grads[i]), `gradient ${i}`).toBeLessThan(1e-4));
  tf.dispose(inputs);
}

describe('fused kernels against the plain composition', () => {
  it('LayerNorm: values and the gradients of x, γ, β (one program forward, two backward: twice forward in tf.grads)', async (ctx) => {
    needAdapter(ctx);
    for (const [shape, seed] of [[[3, 5, 40], 1], [[21, 160], 2]] as const) {
      const C = shape[shape.length - 1];
      const inputs = [randomTensor([...shape], seed, 2), randomTensor([C], seed + 1), randomTensor([C], seed + 2)];
      await expectSame((x, g, b) => layerNorm(x, g, b, 1e-5), inputs, 1 + 1 + 2);
    }
  });

  it('bias + GELU: values and the gradients of h and the bias', async (ctx) => {
    needAdapter(ctx);
    for (const [N, F] of [[37, 72], [5, 300]]) {
      const params: ParamMap = new Map();
      const inputs = [randomTensor([N, F], N, 3), randomTensor([F], F)];
      // through the MLP (w1 = identity, w2 = identity when F = C): h · I + b1 → GELU → · I + b2
      const eye = tf.variable(tf.eye(F), false, `eye_${N}_${F}`);
      const zeros = tf.variable(tf.zeros([F]), false, `zeros_${N}_${F}`);
      params.set('m.w1', eye).set('m.w2', eye).set('m.b2', zeros);
      await expectSame((h, b) => {
        params.set('m.b1', b as tf.Variable);
        return mlpRows(h as tf.Tensor2D, params, 'm.');
      }, inputs, 1 + 1 + 2);
      tf.dispose([eye, zeros]);
    }
  });

  it('attention: values and the gradient of the QKV projection, causal and with another additive mask', async (ctx) => {
    needAdapter(ctx);
    for (const [B, T, C, H] of [[2, 9, 12, 3], [1, 130, 8, 1]]) {
      const causal = causalMask(T);
      // the future and every even key but the first hidden (another additive mask; each row still sees key 0)
      const holes = tf.tensor2d(Float32Array.from({ length: T * T }, (_, k) => (k % T > Math.floor(k / T) || (k % T > 0 && k % 2 === 0) ? MASKED : 0)), [T, T]);
      for (const mask of [causal, holes]) {
        await expectSame((qkv) => attendQKV(qkv as tf.Tensor2D, B, T, C, H, { mask: mask as tf.Tensor2D, layer: 0 }), [randomTensor([B * T, 3 * C], B + T, 2)], 1 + 1 + 2);
      }
      tf.dispose([causal, holes]);
    }
  });

  it('cross-entropy over the vocabulary: the mean loss and the gradient of the logits (two programs forward, one backward), no leaks, plain ops with the flag off', async (ctx) => {
    needAdapter(ctx);
    for (const [B, T, V] of [[3, 7, 257], [1, 13, 101], [5, 3, 3]]) {
      const rng = new Rng(B * T + V);
      const targets = tf.tensor2d(Int32Array.from({ length: B * T }, () => rng.int(V)), [B, T], 'int32');
      const loss = (logits: tf.Tensor) => crossEntropy(logits as tf.Tensor3D, targets as tf.Tensor2D).loss;
      const logits = randomTensor([B, T, V], V, 4);
      await expectSame(loss, [logits.clone()], 2 + 2 + 1);
      const live = tf.memory().numTensors;
      await valueAndGrads(true, loss, [logits]);
      expect(tf.memory().numTensors).toBe(live);
      const d0 = trainDispatches.count;
      await valueAndGrads(false, loss, [logits]);
      expect(trainDispatches.count - d0).toBe(0);
      tf.dispose([logits, targets]);
    }
  });
});

describe('fused AdamW and global norm', () => {
  /** Two steps of AdamW over a matrix, a vector and a parameter without a gradient: norms, weights and moments. */
  async function adamRun(fused: boolean) {
    return withFlag(fused, async () => {
      const params = new Map<string, tf.Variable>([
        ['w', tf.variable(randomTensor([6, 5], 1), true, `adam_w_${fused}`)],
        ['b', tf.variable(randomTensor([5], 2), true, `adam_b_${fused}`)],
        ['frozen', tf.variable(randomTensor([3, 2], 3), true, `adam_f_${fused}`)],
      ]);
      const opt = new AdamW(params, { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 }, new Map([['b', 2]]));
      const norms: number[] = [];
      for (let step = 0; step < 2; step++) {
        const grads = { [`adam_w_${fused}`]: randomTensor([6, 5], 10 + step, 3), [`adam_b_${fused}`]: randomTensor([5], 20 + step, 0.5) };
        const norm = opt.globalNorm(grads);
        norms.push((await norm.data())[0]);
        const scale = tf.scalar(Math.min(1, 1 / norms[step]));
        opt.apply(grads, 0.01, scale);
        tf.dispose([norm, scale, ...Object.values(grads)]);
      }
      const state = await opt.state();
      const out = { norms, w: await read(params.get('w')!), b: await read(params.get('b')!), frozen: await read(params.get('frozen')!), m: state.m.get('w')!, v: state.v.get('b')! };
      opt.dispose();
      for (const p of params.values()) p.dispose();
      return out;
    });
  }

  it('gives the plain optimiser’s norms, weights and moments (1e-5), and leaves a parameter without a gradient alone', async (ctx) => {
    needAdapter(ctx);
    const d0 = trainDispatches.count;
    const fused = await adamRun(true);
    expect(trainDispatches.count - d0).toBe(2 * 3); // per step: two norm programs and one update
    const plain = await adamRun(false);
    expect(rel(fused.norms, plain.norms)).toBeLessThan(1e-5);
    for (const k of ['w', 'b', 'm', 'v'] as const) expect(rel(fused[k], plain[k]), k).toBeLessThan(1e-5);
    expect(rel(fused.frozen, plain.frozen)).toBe(0);
    expect(rel(fused.w, (await adamRun(false)).w)).toBeLessThan(1e-5);
  });
});

describe('training on webgpu with the fused programs', () => {
  /** `steps` training steps of nano: losses, gradient norms, every weight, tensors alive after each step, programs. */
  async function trainNano(fused: boolean, steps: number) {
    return withFlag(fused, async () => {
      const cfg = resolveConfig('nano');
      const rng = new Rng(7);
      const tokens = Int32Array.from({ length: 4_000 }, () => rng.int(cfg.model.vocabSize));
      const model = createModel(cfg.model);
      const trainer = new Trainer(model, { ...cfg.train, evalBatches: 1 }, { train: tokens, val: tokens.subarray(0, 1_000) });
      const losses: number[] = [];
      const norms: number[] = [];
      const live: number[] = [];
      const d0 = trainDispatches.count;
      for (let s = 0; s < steps; s++) {
        const r = await trainer.trainStep();
        losses.push(r.loss, ...r.heads.map((h) => h.loss));
        norms.push(r.gradNorm);
        live.push(tf.memory().numTensors);
      }
      const fusedPrograms = trainDispatches.count - d0;
      trainer.dispose(); // before the last update is submitted: its commands must still run
      const weights = new Map<string, Float32Array>();
      for (const [name, v] of model.params) weights.set(name, await read(v));
      model.dispose();
      return { losses, norms, weights, live, fusedPrograms };
    });
  }

  it('gives the plain ops’ losses, gradient norms and weights over 3 steps of nano, leaks no tensors, and the flag turns it off', async (ctx) => {
    needAdapter(ctx);
    const fused = await trainNano(true, 3);
    const plain = await trainNano(false, 3);
    expect(fused.fusedPrograms).toBeGreaterThan(0);
    expect(plain.fusedPrograms).toBe(0);
    expect(rel(fused.losses, plain.losses)).toBeLessThan(1e-5);
    expect(rel(fused.norms, plain.norms)).toBeLessThan(1e-4);
    for (const [name, w] of plain.weights) expect(rel(fused.weights.get(name)!, w), name).toBeLessThan(1e-4);
    expect(new Set(fused.live.slice(1)).size, `tensors alive after each step: ${fused.live}`).toBe(1);
  });
});
