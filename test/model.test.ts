/**
 * Invariants of the reference transformer (nano preset, random weights, cpu backend):
 * causality, KV-cache decoding equal to a full forward (also after truncate and gather), explicit
 * positions and masks, and the parameter count.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { countParams, resolveConfig } from '../src/config';
import { createModel, MtpModel } from '../src/model/create';
import { MASKED } from '../src/model/transformer';
import { initBackend } from '../src/backend/index';
import { maxAbsDiff, randomTokens } from './helpers';

const cfg = resolveConfig('nano').model;

function logitsOf(model: MtpModel, tokens: number[]): Float32Array {
  return tf.tidy(() => model.trunk.forward(tf.tensor2d([tokens], [1, tokens.length], 'int32')).dataSync() as Float32Array);
}

describe('reference transformer', () => {
  let model: MtpModel;
  beforeAll(async () => {
    await initBackend('cpu');
    model = createModel(cfg);
  });

  it('nano preset has at most 50k parameters, and the count matches the variables', () => {
    const n = model.trainableVariables().reduce((a, v) => a + v.size, 0);
    expect(n).toBe(countParams(cfg));
    expect(n).toBeLessThanOrEqual(50_000);
  });

  it('is causal: changing future tokens leaves earlier logits unchanged', () => {
    const V = cfg.vocabSize;
    const a = randomTokens(20, V, 1);
    const b = [...a.slice(0, 12), ...randomTokens(8, V, 2)];
    const la = logitsOf(model, a);
    const lb = logitsOf(model, b);
    expect(maxAbsDiff(la.subarray(0, 12 * V), lb.subarray(0, 12 * V))).toBeLessThan(1e-6);
    // and the model does look at the past: a later position changes
    expect(maxAbsDiff(la.subarray(12 * V), lb.subarray(12 * V))).toBeGreaterThan(1e-4);
  });

  it('incremental KV-cache decoding equals a full forward', () => {
    const V = cfg.vocabSize;
    const toks = randomTokens(cfg.blockSize, V, 3);
    const full = logitsOf(model, toks);
    const cache = model.trunk.newCache();
    // prefill 5 tokens, then chunks of 1, 3 and 1 …
    const chunks = [5, 1, 3, 1, 7, 15];
    let pos = 0;
    for (const n of chunks) {
      const step = tf.tidy(() => model.trunk.forward(tf.tensor2d([toks.slice(pos, pos + n)], [1, n], 'int32'), { cache }).dataSync());
      expect(maxAbsDiff(step, full.subarray(pos * V, (pos + n) * V))).toBeLessThan(1e-5);
      pos += n;
    }
    expect(cache.length).toBe(pos);
    cache.dispose();
  });

  it('truncate drops rejected tokens: decoding continues as if they were never fed', () => {
    const V = cfg.vocabSize;
    const toks = randomTokens(16, V, 4);
    const cache = model.trunk.newCache();
    tf.tidy(() => {
      model.trunk.forward(tf.tensor2d([toks.slice(0, 10)], [1, 10], 'int32'), { cache });
      model.trunk.forward(tf.tensor2d([[7, 8, 9, 10]], [1, 4], 'int32'), { cache }); // a rejected draft
    });
    cache.truncate(10);
    const cont = tf.tidy(() => model.trunk.forward(tf.tensor2d([toks.slice(10)], [1, 6], 'int32'), { cache }).dataSync());
    const full = logitsOf(model, toks);
    expect(maxAbsDiff(cont, full.subarray(10 * V))).toBeLessThan(1e-5);
    expect(() => cache.truncate(99)).toThrow(/truncate: length must be an integer in \[0, 16\]/);
    cache.dispose();
  });

  it('gather keeps an accepted path: tree-shaped forward + gather equals a plain forward of that path', () => {
    const V = cfg.vocabSize;
    const prefix = randomTokens(8, V, 5);
    // a tiny tree after the prefix: node0 = root r, nodes 1,2 = two children of r, node 3 = child of node 2
    const tree = [11, 12, 13, 14];
    const parent = [-1, 0, 0, 2];
    const depth = [0, 1, 1, 2];
    const N = tree.length;
    const S = prefix.length + N;
    const mask = new Float32Array(N * S).fill(MASKED);
    for (let i = 0; i < N; i++) {
      for (let j = 0; j < prefix.length; j++) mask[i * S + j] = 0;
      for (let a = i; a >= 0; a = parent[a]) mask[i * S + prefix.length + a] = 0;
    }
    const cache = model.trunk.newCache();
    tf.tidy(() => model.trunk.forward(tf.tensor2d([prefix], [1, prefix.length], 'int32'), { cache }));
    const treeLogits = tf.tidy(() =>
      model.trunk
        .forward(tf.tensor2d([tree], [1, N], 'int32'), {
          cache,
          positions: depth.map((d) => prefix.length + d),
          mask: tf.tensor2d(mask, [N, S]),
        })
        .dataSync(),
    );
    // the path root → node 2 → node 3 must give the logits of the plain sequence prefix + [11, 13, 14]
    const path = [0, 2, 3];
    const plain = logitsOf(model, [...prefix, ...path.map((i) => tree[i])]);
    path.forEach((node, d) => {
      const a = treeLogits.subarray(node * V, (node + 1) * V);
      const b = plain.subarray((prefix.length + d) * V, (prefix.length + d + 1) * V);
      expect(maxAbsDiff(a, b)).toBeLessThan(1e-5);
    });
    // keep prefix + path in the cache, then continue: equal to the plain sequence continued
    cache.gather([...prefix.map((_, i) => i), ...path.map((i) => prefix.length + i)]);
    expect(cache.length).toBe(prefix.length + path.length);
    const next = tf.tidy(() => model.trunk.forward(tf.tensor2d([[42]], [1, 1], 'int32'), { cache }).dataSync());
    const ref = logitsOf(model, [...prefix, 11, 13, 14, 42]);
    expect(maxAbsDiff(next, ref.subarray((prefix.length + 3) * V))).toBeLessThan(1e-5);
    cache.dispose();
  });

  it('rejects positions outside the position table and masks of the wrong shape', () => {
    expect(() => tf.tidy(() => model.trunk.forward(tf.tensor2d([[1, 2]], [1, 2], 'int32'), { positions: [0, cfg.blockSize] }))).toThrow(
      /position 32 outside the position table \[0, 32\)/,
    );
    expect(() => tf.tidy(() => model.trunk.forward(tf.tensor2d([[1, 2]], [1, 2], 'int32'), { mask: tf.zeros([2, 3]) as tf.Tensor2D }))).toThrow(
      /mask must be \[2, 2\]/,
    );
  });

  it('tied embeddings: the unembedding is the token embedding (no head parameter)', () => {
    const tied = createModel({ ...cfg, tieEmbeddings: true });
    expect(tied.params.has('head')).toBe(false);
    expect(tied.trainableVariables().reduce((a, v) => a + v.size, 0)).toBe(countParams({ ...cfg, tieEmbeddings: true }));
    tied.dispose();
  });

  it('same seed gives the same weights; another seed gives other weights', () => {
    const a = createModel(cfg);
    const b = createModel({ ...cfg, seed: cfg.seed + 1 });
    const w = (m: MtpModel) => m.params.get('l0.wqkv')!.dataSync();
    expect(maxAbsDiff(w(a), w(model))).toBe(0);
    expect(maxAbsDiff(w(a), w(b))).toBeGreaterThan(0.01);
    a.dispose();
    b.dispose();
  });
});
