/**
 * The cross-backend check: a nano model (seeded weights) on one fixed batch gives its decoding forward's logits and
 * the gradient of every parameter. Run on `cpu` in Node and on `webgl` / `webgpu` in the page, the results must
 * agree (test/browser_lab.test.ts states the tolerances).
 */
import * as tf from '@tensorflow/tfjs';
import { MtpKind, resolveConfig } from '../../../src/config';
import { createModel } from '../../../src/model/create';
import { Rng } from '../../../src/util/rng';
import type { CheckResult } from '../protocol';
import { nanoMtp } from './choices';

/** Batch shape of the check: B sequences of T tokens (T ≤ the nano block size, 32). */
export const CHECK_B = 2;
export const CHECK_T = 16;

/** Runs the check on the active backend (call initBackend first); `kind` picks the variant, `seed` the weights and batch. */
export async function nanoCheck(kind: MtpKind, seed: number): Promise<Omit<CheckResult, 'backend' | 'detail'>> {
  const config = resolveConfig('nano', { model: { mtp: nanoMtp(kind, 3), seed } }).model;
  const model = createModel(config);
  try {
    const rng = new Rng(seed);
    const V = config.vocabSize;
    const { k } = model;
    const tokens = Array.from({ length: CHECK_B * (CHECK_T + k) }, () => rng.int(V));
    const inputs = new Int32Array(CHECK_B * CHECK_T);
    const targets = new Int32Array(k * CHECK_B * CHECK_T); // [k, B, T]: head i predicts x[t + i + 1]
    for (let b = 0; b < CHECK_B; b++) {
      for (let t = 0; t < CHECK_T; t++) {
        inputs[b * CHECK_T + t] = tokens[b * (CHECK_T + k) + t];
        for (let i = 0; i < k; i++) targets[(i * CHECK_B + b) * CHECK_T + t] = tokens[b * (CHECK_T + k) + t + i + 1];
      }
    }
    const cache = model.newCache();
    const logitsT = tf.tidy(() => model.verifyForward(Array.from(inputs.subarray(0, CHECK_T)), cache).logits); // [T, V]
    const logits = Array.from(await logitsT.data());
    logitsT.dispose();
    cache.dispose();
    const x = tf.tensor2d(inputs, [CHECK_B, CHECK_T], 'int32');
    const y = tf.tensor3d(targets, [k, CHECK_B, CHECK_T], 'int32');
    const out = model.lossAndGrads(x, y, 'joint');
    const nameOf = new Map([...model.params].map(([name, v]) => [v.name, name]));
    const grads: Record<string, number[]> = {};
    for (const [varName, g] of Object.entries(out.grads)) grads[nameOf.get(varName) ?? varName] = Array.from(await g.data());
    const loss = (await out.loss.data())[0];
    tf.dispose([x, y, out.loss, ...out.heads.flatMap((h) => [h.loss, h.acc]), ...Object.values(out.grads)]);
    return { logits, loss, grads };
  } finally {
    model.dispose();
  }
}
