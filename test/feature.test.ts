/**
 * The feature-level drafter (EAGLE; model/feature.ts, model/feature_drafter.ts): the trunk is the plain model of the
 * same seed and does not train; the training-time-test loss and its gradients equal a per-draft reference that runs
 * the drafter the way decoding does (true rows up to the last committed position, then its own predictions);
 * greedy decoding with its chains and trees equals plain greedy (random weights, seeds, both feature sources, prompts
 * past the window, cpu and wasm); every proposal equals a from-scratch recomputation through partial acceptances,
 * rejections and window slides, for greedy and sampled drafts; no tensor leaks; a trained drafter on a trained trunk
 * drafts most tokens right.
 */
import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { FeatureMtp, MTP_DEFAULTS, ModelConfig, resolveConfig } from '../src/config';
import { initBackend } from '../src/backend/index';
import { createModel } from '../src/model/create';
import { FeatureModel, fusedLayers, ttTestMask } from '../src/model/feature';
import { MASKED } from '../src/model/transformer';
import { KVCache } from '../src/model/kv_cache';
import { DECODE_BLOCK_FLAG } from '../src/backend/wasm_decode_block';
import { generate } from '../src/decode/ar';
import { AcceptanceRule, greedyAcceptance, speculativeAcceptance } from '../src/decode/acceptance';
import { decode, EngineResult } from '../src/decode/engine';
import type { DynamicTreeOptions } from '../src/decode/drafter';
import { GREEDY, SamplingConfig } from '../src/decode/sampling';
import { denseTree, TreeChoices } from '../src/decode/tree';
import { Trainer } from '../src/train/trainer';
import { drafterFor } from '../src/cli/generate';
import { checkTreeAgainst, maxAbsDiff, pathTokens, randomTokens, RecordingDrafter } from './helpers';

const nano = resolveConfig('nano').model;
const featureMtp = (extra: Partial<FeatureMtp> = {}): FeatureMtp => ({ ...MTP_DEFAULTS.feature, ...extra });
const make = (extra: Partial<FeatureMtp> = {}, model: Partial<ModelConfig> = {}) => createModel({ ...nano, ...model, mtp: featureMtp(extra) }) as FeatureModel;

/** Causal additive mask [n, n]. */
function causal(n: number): tf.Tensor2D {
  const m = new Float32Array(n * n).fill(MASKED);
  for (let i = 0; i < n; i++) m.fill(0, i * n, i * n + i + 1);
  return tf.tensor2d(m, [n, n]);
}

/**
 * The drafter's output rows from scratch, batch 1, no cache: `g` [n, C] true input states at the committed positions
 * (tokens[j] = the token after each), then one row per drafted token in `ahead`, each reading the previous row's
 * output. Returns the last row's output [1, C]. Inside tf.tidy.
 */
function draftFromScratch(model: FeatureModel, g: tf.Tensor2D, tokens: number[], ahead: number[]): tf.Tensor2D {
  const C = model.config.nEmbd;
  let states = g;
  let toks = tokens;
  let last = tf.zeros([1, C]) as tf.Tensor2D;
  for (let i = 0; i <= ahead.length; i++) {
    const n = states.shape[0];
    const out = model.draftRows(tf.reshape(states, [1, n, C]) as tf.Tensor3D, tf.tensor2d([toks], [1, n], 'int32'), causal(n)); // [1, n, C]
    last = tf.reshape(tf.slice(out, [0, n - 1, 0], [1, 1, C]), [1, C]) as tf.Tensor2D;
    if (i < ahead.length) {
      states = tf.concat([states, last], 0) as tf.Tensor2D;
      toks = [...toks, ahead[i]];
    }
  }
  return last;
}

/**
 * The drafter's logits for the child of the node reached by `path` (its tokens), from scratch: the trunk over the
 * window seq[W .. L−2] (fresh cache), the drafter over those positions reading the next token (the root last), then
 * over the path's drafts reading its own predictions.
 */
function featureDraftLogits(model: FeatureModel, seq: readonly number[], W: number, path: readonly number[]): Float32Array {
  const L = seq.length;
  const cache = model.newCache();
  const data = tf.tidy(() => {
    const { features } = model.verifyForward(seq.slice(W, L - 1) as number[], cache); // [n, F]
    const last = draftFromScratch(model, model.inputStates(features), seq.slice(W + 1, L) as number[], path.slice(0, -1) as number[]);
    return model.trunk.unembed(tf.expandDims(last, 0) as tf.Tensor3D).dataSync() as Float32Array;
  });
  cache.dispose();
  return data;
}

async function decodeRecorded(
  m: FeatureModel, prompt: number[], n: number, opts: { tree?: TreeChoices; dynamic?: DynamicTreeOptions; acceptance?: AcceptanceRule; sampling?: SamplingConfig; k?: number } = {},
) {
  const rec = new RecordingDrafter(m.drafter({ tree: opts.tree, dynamic: opts.dynamic, k: opts.k }));
  const out = await decode(m, rec, prompt, { maxNewTokens: n, acceptance: opts.acceptance, seed: 5 });
  let checked = 0;
  for (const r of rec.records) {
    if (r.windowStart < 0) continue;
    const res = checkTreeAgainst(r.tree, (u) => featureDraftLogits(m, r.seq, r.windowStart, [...pathTokens(r.tree, u), -1]), opts.sampling ?? GREEDY);
    expect(res.error, `proposal at length ${r.seq.length}`).toBeNull();
    checked += res.checked;
  }
  return { out, rec, checked };
}

/** A lossy test rule accepting exactly `plan[i % plan.length]` drafts along the first path at step i (fewer if shorter). */
function forcedAcceptance(plan: number[]): AcceptanceRule {
  let i = 0;
  const base = greedyAcceptance();
  return {
    ...base,
    name: 'forced',
    lossless: false,
    accept(tree, target, rng) {
      const want = plan[i++ % plan.length];
      const path = [0];
      while (path.length <= want) {
        const child = tree.parents.indexOf(path[path.length - 1]);
        if (child < 0) break;
        path.push(child);
      }
      const g = base.accept(tree, target, rng);
      return { ...g, path };
    },
  };
}

describe('feature drafter: model and training', () => {
  beforeAll(async () => {
    await initBackend('cpu');
  });

  it('the trunk is the plain model of the same seed and stays frozen; the drafter adds its own parameters; fused layers', () => {
    const plain = createModel({ ...nano, mtp: { kind: 'none' } });
    for (const features of ['last', 'fused'] as const) {
      const m = make({ features });
      for (const [name, v] of plain.params) expect(maxAbsDiff(v.dataSync(), m.params.get(name)!.dataSync()), name).toBe(0);
      const trainable = new Set(m.trainableVariables());
      for (const name of plain.params.keys()) expect(trainable.has(m.params.get(name)!), name).toBe(false);
      expect(m.trainableVariables().length).toBe(m.params.size - plain.params.size);
      expect([...m.params.keys()].some((n) => n === 'draft.fuse')).toBe(features === 'fused');
      expect(m.k).toBe(2);
      expect(m.draftK).toBe(6);
      expect(m.lossHeads).toBe(4);
      m.dispose();
    }
    plain.dispose();
    expect(fusedLayers(8)).toEqual([1, 3, 7]);
    expect(fusedLayers(2)).toEqual([0, 0, 1]);
  });

  it('the training-time-test mask: step r at position t sees the committed positions ≤ t − r and its own drafted rows', () => {
    const T = 4;
    const m = ttTestMask(2, T);
    const n = 3 * T;
    const allowed = (r: number, t: number) => Array.from({ length: n }, (_, c) => c).filter((c) => m[(r * T + t) * n + c] === 0).map((c) => [Math.floor(c / T), c % T].join(':'));
    expect(allowed(0, 2)).toEqual(['0:0', '0:1', '0:2']);
    expect(allowed(1, 2)).toEqual(['0:0', '0:1', '1:2']);
    expect(allowed(2, 3)).toEqual(['0:0', '0:1', '1:2', '2:3']);
    expect(allowed(2, 1)).toEqual(['1:0', '2:1']); // no committed position before it: itself and its ancestor
  });

  for (const features of ['last', 'fused'] as const) {
    it(`${features} features, unroll 3: loss per step and gradients equal a per-draft reference that drafts as decoding does (1e-4)`, () => {
      const m = make({ features, unroll: 3, featureWeight: 0.7 }, { seed: 3 });
      const B = 2;
      const T = 7;
      const C = m.config.nEmbd;
      const rows = Array.from({ length: B }, (_, b) => randomTokens(T + 2, 256, 40 + b));
      const inputs = tf.tensor2d(rows.map((r) => r.slice(0, T)), [B, T], 'int32');
      const targets = tf.tensor3d([rows.map((r) => r.slice(1, T + 1)), rows.map((r) => r.slice(2, T + 2))], [2, B, T], 'int32');
      // reference: every anchor a and depth s separately, the drafter run from scratch as in featureDraftLogits
      const reference = (): { total: tf.Scalar; ce: tf.Scalar[] } => {
        const ce: tf.Scalar[] = [];
        const steps: tf.Scalar[] = [];
        for (let s = 0; s < 3; s++) {
          const ces: tf.Scalar[] = [];
          const l1: tf.Tensor[] = [];
          for (let b = 0; b < B; b++) {
            const { x, mask } = m.trunk.embed(tf.tensor2d([rows[b].slice(0, T)], [1, T], 'int32'));
            const { z, features: f } = m.trunkFeatures(x, mask);
            const g = m.inputStates(tf.reshape(f, [T, m.featureWidth]) as tf.Tensor2D);
            for (let a = 0; a + s < T; a++) {
              const t = a + s;
              const out = draftFromScratch(m, tf.slice(g, [0, 0], [a + 1, C]) as tf.Tensor2D, rows[b].slice(1, a + 2), rows[b].slice(a + 2, t + 2));
              const logits = m.trunk.unembed(tf.expandDims(out, 0) as tf.Tensor3D); // [1, 1, V]
              ces.push(tf.neg(tf.gather(tf.reshape(tf.logSoftmax(tf.reshape(logits, [1, -1])), [-1]), rows[b][t + 2])) as tf.Scalar);
              if (t + 1 < T) {
                const d = tf.abs(tf.sub(out, tf.reshape(tf.slice(z, [0, t + 1, 0], [1, 1, C]), [1, C])));
                l1.push(tf.sub(tf.mul(tf.square(d), 0.5), tf.mul(tf.square(tf.relu(tf.sub(d, 1))), 0.5))); // ½d², minus ½(d − 1)² past 1
              }
            }
          }
          const meanCe = tf.div(tf.addN(ces), ces.length) as tf.Scalar;
          ce.push(meanCe);
          steps.push(tf.add(meanCe, tf.mul(tf.mean(tf.concat(l1, 0)), 0.7)) as tf.Scalar);
        }
        return { total: tf.div(tf.addN(steps), 3) as tf.Scalar, ce };
      };
      tf.tidy(() => {
        const out = m.loss(inputs, targets);
        const ref = reference();
        expect(out.heads.length).toBe(4);
        for (let s = 0; s < 3; s++) expect(Math.abs(out.heads[s + 1].loss.dataSync()[0] - ref.ce[s].dataSync()[0]), `step ${s + 1}`).toBeLessThan(1e-4);
        expect(Math.abs(out.loss.dataSync()[0] - ref.total.dataSync()[0])).toBeLessThan(1e-4);
      });
      const vars = m.trainableVariables();
      const got = tf.variableGrads(() => m.loss(inputs, targets).loss, vars);
      const want = tf.variableGrads(() => reference().total, vars);
      for (const v of vars) {
        const a = got.grads[v.name].dataSync();
        const b = want.grads[v.name].dataSync();
        const scale = Math.max(1e-3, ...Array.from(b, Math.abs));
        expect(maxAbsDiff(a, b) / scale, v.name).toBeLessThan(1e-3);
      }
      expect(Object.keys(got.grads).length).toBe(vars.length);
      tf.dispose([inputs, targets, got.value, want.value, ...Object.values(got.grads), ...Object.values(want.grads)]);
      m.dispose();
    });
  }

  it('a training step moves the drafter only, and leaks no tensors', async () => {
    const m = make({ unroll: 2 }, { seed: 4 });
    const before = new Map([...m.params].map(([n, v]) => [n, v.dataSync().slice()]));
    const text = Uint8Array.from(randomTokens(4000, 256, 9));
    const trainer = new Trainer(m, { ...resolveConfig('nano').train, steps: 3 }, { train: text, val: text });
    await trainer.trainStep();
    const n0 = tf.memory().numTensors;
    const s = await trainer.trainStep();
    expect(tf.memory().numTensors).toBe(n0);
    expect(s.heads.length).toBe(3);
    for (const [n, v] of m.params) {
      const moved = maxAbsDiff(before.get(n)!, v.dataSync()) > 0;
      expect(moved, n).toBe(n.startsWith('draft.'));
    }
    trainer.dispose();
    m.dispose();
  });
});

describe('feature drafter decoding is lossless', { timeout: 60_000 }, () => {
  for (const backend of ['cpu', 'wasm'] as const) {
    for (const features of ['last', 'fused'] as const) {
      it(`${backend}, ${features} features, random weights: chains (k = 6, k = 3) and a dense tree equal greedy, 60 new tokens (past the 32-token window); wasm: seeds 11 and 12, prompts of 1, 9 and 40 tokens; cpu: seed 11, 9 and 40`, async () => {
        await initBackend(backend);
        for (const seed of backend === 'cpu' ? [11] : [11, 12]) {
          const m = make({ features }, { seed });
          for (const len of backend === 'cpu' ? [9, 40] : [1, 9, 40]) {
            const prompt = randomTokens(len, 256, seed * 100 + len);
            const ar = await generate(m, prompt, { maxNewTokens: 60 });
            for (const opts of [{}, { k: 3 }, { tree: denseTree(3) }]) {
              const out = await decode(m, m.drafter(opts), prompt, { maxNewTokens: 60 });
              expect(out.tokens).toEqual(ar.tokens);
              expect(out.steps.reduce((x, y) => x + y, 0)).toBe(60);
            }
          }
          m.dispose();
        }
      });
    }
  }

  it('every chain and dense tree the drafter proposes equals a from-scratch recomputation, through window slides; drafter forwards are counted apart (wasm)', async () => {
    await initBackend('wasm');
    const m = make({}, { seed: 8 });
    const prompt = [3, 1, 4, 1, 5];
    const ar = await generate(m, prompt, { maxNewTokens: 70 });
    for (const tree of [undefined, denseTree(3)]) {
      const { out, rec, checked } = await decodeRecorded(m, prompt, 70, { tree });
      expect(out.tokens).toEqual(ar.tokens);
      expect(checked).toBeGreaterThan(tree ? 150 : 100);
      expect(rec.commits.some((c) => c.reset && c.windowStart > 0)).toBe(true);
      expect(out.stats.draftForwards).toBeGreaterThan(out.stats.forwards);
    }
    m.dispose();
  });

  it('forced partial acceptances and rejections keep the drafter consistent with a from-scratch recomputation, chain and tree', async () => {
    await initBackend('wasm');
    const m = make({ features: 'fused' }, { seed: 9 });
    for (const tree of [undefined, denseTree(3, [2])]) {
      const { out, checked } = await decodeRecorded(m, [2, 7, 1, 8, 2, 8], 80, { tree, k: 4, acceptance: forcedAcceptance([0, 1, 3, 2, 3, 0, 3, 1]) });
      expect(new Set(out.steps)).toEqual(new Set([1, 2, 3, 4]));
      expect(checked).toBeGreaterThan(60);
    }
    m.dispose();
  });

  it('dynamic trees (EAGLE-2): equal greedy; at most `nodes` drafts, none deeper than `depth`; children are top ranks of the from-scratch distribution (draws from it when sampling); a node never outlives its parent', async () => {
    await initBackend('wasm');
    const m = make({}, { seed: 14 });
    const prompt = [9, 8, 7, 6, 5];
    const ar = await generate(m, prompt, { maxNewTokens: 70 });
    const dynamic = { depth: 4, expand: 3, branch: 3, nodes: 10 };
    const { out, rec, checked } = await decodeRecorded(m, prompt, 70, { dynamic }); // every proposal against a from-scratch recomputation
    expect(out.tokens).toEqual(ar.tokens);
    for (const r of rec.records) {
      expect(r.tree.tokens.length).toBeLessThanOrEqual(1 + dynamic.nodes);
      expect(r.tree.parents.every((p, i) => i === 0 || (p >= 0 && p < i))).toBe(true);
      const depthOf = (u: number): number => (u === 0 ? 0 : 1 + depthOf(r.tree.parents[u]));
      expect(Math.max(...r.tree.tokens.map((_, u) => depthOf(u)))).toBeLessThanOrEqual(dynamic.depth);
    }
    expect(checked).toBeGreaterThan(50);
    expect(rec.records.some((r) => r.tree.tokens.length === 1 + dynamic.nodes)).toBe(true);
    const T1 = { temperature: 1, topK: 0, topP: 1 };
    const sampled = await decodeRecorded(m, prompt, 30, { dynamic, acceptance: speculativeAcceptance(T1), sampling: T1 }); // children drawn from q
    expect(sampled.checked).toBeGreaterThan(10);
    expect(sampled.rec.records.some((r) => r.tree.draws?.[0]?.kind === 'without-replacement')).toBe(true);
    expect(() => m.drafter({ dynamic, tree: denseTree(2) })).toThrow(/not both/);
    expect(() => m.drafter({ dynamic: { ...dynamic, nodes: 0 } })).toThrow(/dynamic.nodes must be an integer ≥ 1/);
    const medusa = createModel({ ...nano, mtp: { ...MTP_DEFAULTS.medusa, heads: 3 } });
    expect(() => medusa.drafter({ dynamic })).toThrow(/the dynamic tree is 4 deep, but this model drafts at most 3 tokens ahead/);
    medusa.dispose();
    m.dispose();
  });

  it('the CLI names the feature decoder and its dynamic tree; other variants refuse the feature decoder with a message and take dynamic trees', async () => {
    await initBackend('cpu');
    const m = make({}, { seed: 15 });
    const d = drafterFor(m, { decoder: 'feature', tree: 'dynamic', nodes: 5, k: 4 })!;
    expect(d.name).toBe('feature drafter dynamic tree (depth 3, expand 4, branch 4, 5 nodes)');
    d.dispose();
    expect(drafterFor(m, { decoder: 'feature', tree: 'chain' })!.name).toBe('feature drafter chain k=6');
    expect(() => drafterFor(m, { decoder: 'feature', tree: 'dynamic', nodes: 0 })).toThrow(/--nodes must be an integer ≥ 1/);
    const medusa = createModel({ ...nano, mtp: { ...MTP_DEFAULTS.medusa, heads: 3 } });
    expect(() => drafterFor(medusa, { decoder: 'feature', tree: 'chain' })).toThrow(/its decoder is --decoder=medusa/);
    const md = drafterFor(medusa, { decoder: 'medusa', tree: 'dynamic', nodes: 5 })!;
    expect(md.name).toBe('medusa dynamic tree (depth 3, expand 4, branch 4, 5 nodes)');
    md.dispose();
    medusa.dispose();
    m.dispose();
  });

  it('sampled drafts (speculative sampling, T = 1): every q equals the from-scratch drafter distribution; seeded runs repeat', async () => {
    await initBackend('cpu');
    const m = make({}, { seed: 10 });
    const sampling = { temperature: 1, topK: 0, topP: 1 };
    const { out, checked } = await decodeRecorded(m, [1, 2, 3], 40, { acceptance: speculativeAcceptance(sampling), sampling, k: 4 });
    expect(checked).toBeGreaterThan(20);
    const again = await decode(m, m.drafter({ k: 4 }), [1, 2, 3], { maxNewTokens: 40, acceptance: speculativeAcceptance(sampling), seed: 5 });
    expect(again.tokens).toEqual(out.tokens);
    m.dispose();
  });

  it(`a drafting step as one wasm kernel (${DECODE_BLOCK_FLAG}) equals the op-by-op step: states and logits within 1e-5, the cache rows too`, async () => {
    await initBackend('wasm');
    for (const layers of [1, 2]) {
      const m = make({ layers, features: 'fused' }, { seed: 21 });
      const tables = m.draftTables();
      const run = async (fused: boolean): Promise<number[][]> => {
        tf.env().set(DECODE_BLOCK_FLAG, fused);
        const cache = new KVCache(layers);
        const out: number[][] = [];
        for (const [R, seed] of [[5, 1], [1, 2], [3, 3]]) { // catch-up rows, then one and three rows over the cache
          const S = cache.length + R;
          const mask = new Float32Array(R * S);
          for (let r = 0; r < R; r++) mask.fill(MASKED, r * S + S - R + r + 1, (r + 1) * S);
          const step = tf.tidy(() => {
            const g = tf.tensor2d(randomTokens(R * m.config.nEmbd, 1000, seed).map((x) => x / 300 - 1.6), [R, m.config.nEmbd]);
            const r = m.draftStep(g, tf.tensor1d(randomTokens(R, 256, seed + 9), 'int32'), tf.tensor2d(mask, [R, S]), cache, tables);
            return [r.f, r.logits];
          });
          for (const t of step) out.push(Array.from(await t.data()));
          tf.dispose(step);
        }
        cache.dispose();
        return out;
      };
      try {
        const [fused, plain] = [await run(true), await run(false)];
        fused.forEach((f, i) => expect(maxAbsDiff(f, plain[i]), `layers ${layers}, output ${i}`).toBeLessThan(1e-5));
      } finally {
        tf.env().set(DECODE_BLOCK_FLAG, true);
        tf.dispose([tables.projG, tables.tokenTable]);
        m.dispose();
      }
    }
  });

  it('leaks no tensors across generations (wasm)', async () => {
    await initBackend('wasm');
    const m = make({ features: 'fused' }, { seed: 13 });
    const run = (): Promise<EngineResult> => decode(m, m.drafter({ tree: denseTree(3) }), [5, 6, 7], { maxNewTokens: 50 });
    await run();
    const n0 = tf.memory().numTensors;
    await run();
    await run();
    expect(tf.memory().numTensors).toBe(n0);
    m.dispose();
  });
});
