/**
 * The zoo's storage (src/zoo/): a trained nano checkpoint exported as float16 weights + manifest entry and loaded
 * back, verified by sha256. The loaded weights are the float16 rounding of the checkpoint's; every head's logits stay
 * within 2^-9 of the largest logit (float16 keeps 11 significant bits: each weight moves by ≤ 2^-11 of itself);
 * damaged, replaced or unknown files are refused with messages that say what to do.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/backend/index';
import { MTP_DEFAULTS, resolveConfig } from '../src/config';
import { loadCorpus, splitTrainVal } from '../src/data/corpus';
import { readCheckpoint, saveCheckpoint } from '../src/train/checkpoint';
import { loadModel, trainRun } from '../src/train/run';
import { exportZooModel } from '../src/zoo/export';
import { fromFloat16, toFloat16 } from '../src/zoo/float16';
import { listZooModels, loadZooModel } from '../src/zoo/load';
import { readManifest } from '../src/zoo/manifest';

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'mtp-zoo-test-'));
const RUN = path.join(TMP, 'run');
const ZOO = path.join(TMP, 'zoo');
const config = resolveConfig('nano', {
  model: { mtp: { ...MTP_DEFAULTS.parallel, k: 2 } },
  train: { maxCorpusBytes: 100_000, steps: 20, evalEvery: 10, backend: 'cpu' },
});
const COMMAND = 'npm run mtp -- train --preset=nano (test)';

beforeAll(async () => {
  await initBackend('cpu');
  const r = await trainRun({ config, outDir: RUN });
  r.model.dispose();
}, 120_000);

afterAll(() => fs.rmSync(TMP, { recursive: true, force: true }));

/** The eval row the run logged at `step`. */
function evalRow(step: number): { valLoss: number; heads: { loss: number; acc: number }[] } {
  const rows = fs.readFileSync(path.join(RUN, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  return rows.filter((r) => r.type === 'eval' && r.step === step).pop();
}

describe('zoo export', () => {
  it('writes float16 weights and a manifest entry with everything needed to rebuild and trust the model', () => {
    const entry = exportZooModel('nano-par2', RUN, { dir: ZOO, command: COMMAND, machine: 'test machine' });
    const ckpt = readCheckpoint(path.join(RUN, 'model.ckpt'));
    const params = ckpt.header.tensors.filter((t) => t.name.startsWith('param/'));
    const nParams = params.reduce((a, t) => a + t.length, 0);
    const file = path.join(ZOO, 'nano-par2', 'weights.f16');
    expect(fs.statSync(file).size).toBe(2 * nParams);
    const manifest = readManifest(ZOO);
    expect(manifest.models['nano-par2']).toEqual(entry);
    const sha = createHash('sha256').update(fs.readFileSync(file)).digest('hex');
    expect(entry.sha256).toBe(sha);
    expect(entry.bytes).toBe(2 * nParams);
    expect(entry.parameters).toBe(nParams);
    expect(entry.config).toEqual(ckpt.header.config);
    expect(entry.tokenizer).toEqual(ckpt.header.tokenizer);
    expect(entry.steps).toBe(config.train.steps);
    expect(entry.tokensSeen).toBe(config.train.steps * config.train.batchSize * config.model.blockSize);
    const logged = evalRow(config.train.steps);
    expect(entry.valLoss.objective).toBe(logged.valLoss);
    expect(entry.valLoss.objective).toBe(ckpt.header.valLoss);
    expect(entry.valLoss.heads).toEqual(logged.heads);
    expect(entry.valLoss.heads).toHaveLength(2);
    expect(entry.command).toBe(COMMAND);
    expect(entry.machine).toBe('test machine');
    expect(entry.initFrom).toBeUndefined();
    expect(entry.tensors.map((t) => `param/${t.name}`)).toEqual(params.map((t) => t.name));
  });

  it('loads weights equal to the float16 rounding of the checkpoint, into the model the config describes', () => {
    const before = tf.memory().numTensors;
    const zoo = loadZooModel('nano-par2', { dir: ZOO });
    const ckpt = readCheckpoint(path.join(RUN, 'model.ckpt'));
    expect(zoo.config).toEqual(ckpt.header.config);
    expect(zoo.model.k).toBe(2);
    for (const [name, v] of zoo.model.params) {
      const saved = ckpt.tensors.get(`param/${name}`)!;
      const got = v.dataSync();
      expect(Array.from(got), name).toEqual(Array.from(fromFloat16(toFloat16(saved))));
    }
    zoo.model.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('keeps every head’s logits within 2^-9 of the largest logit of the float32 model', () => {
    const f32 = loadModel(path.join(RUN, 'model.ckpt'));
    const f16 = loadZooModel('nano-par2', { dir: ZOO });
    const { val } = splitTrainVal(loadCorpus('code', { maxBytes: config.train.maxCorpusBytes }).bytes);
    let worst = 0;
    let largest = 0;
    let compared = 0;
    for (let w = 0; w < 4; w++) {
      const tokens = Array.from(val.subarray(w * 2000, w * 2000 + config.model.blockSize));
      const run = (m: typeof f32.model) => {
        const caches = m.newCaches();
        const logits = tf.tidy(() => m.decodeLogits(tokens, caches));
        const data = logits.dataSync();
        logits.dispose();
        caches.dispose();
        return data;
      };
      const a = run(f32.model);
      const b = run(f16.model);
      expect(b.length).toBe(2 * tokens.length * config.model.vocabSize); // both heads
      for (let i = 0; i < a.length; i++) {
        worst = Math.max(worst, Math.abs(a[i] - b[i]));
        largest = Math.max(largest, Math.abs(a[i]));
      }
      compared += a.length;
    }
    expect(compared).toBeGreaterThan(0);
    expect(worst).toBeGreaterThan(0); // the weights did change
    expect(worst).toBeLessThanOrEqual(2 ** -9 * largest);
    f32.model.dispose();
    f16.model.dispose();
  });

  it('lists the models, sorted, with their variant and next-token loss; a second export keeps the first', () => {
    exportZooModel('a-copy', RUN, { dir: ZOO, command: COMMAND, initFrom: 'nano-par2', share: false });
    const list = listZooModels({ dir: ZOO });
    expect(list.map((m) => m.name)).toEqual(['a-copy', 'nano-par2']);
    const m = list[1];
    expect(m).toMatchObject({ kind: 'parallel', k: 2, corpus: 'code', steps: 20, nextTokenLoss: evalRow(20).heads[0].loss });
    expect(list[0].initFrom).toBe('nano-par2');
    expect(readManifest(ZOO).models['a-copy'].machine).toMatch(/cores/); // this machine, described
  });

  it('refuses a damaged, truncated or missing weights file, naming it and what to do', () => {
    const file = path.join(ZOO, 'a-copy', 'weights.f16');
    const good = fs.readFileSync(file);
    const flipped = Buffer.from(good);
    flipped[100] ^= 1;
    fs.writeFileSync(file, flipped);
    expect(() => loadZooModel('a-copy', { dir: ZOO })).toThrow(
      new RegExp(`${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} is not the weights file recorded for zoo model 'a-copy'.*sha256.*git checkout -- .*npm run zoo -- --only=a-copy`, 's'),
    );
    fs.writeFileSync(file, good.subarray(0, 1000));
    expect(() => loadZooModel('a-copy', { dir: ZOO })).toThrow(/it has 1000 bytes/);
    fs.writeFileSync(file, 'version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n');
    expect(() => loadZooModel('a-copy', { dir: ZOO })).toThrow(/Git LFS pointer.*git lfs pull/);
    fs.rmSync(file);
    expect(() => loadZooModel('a-copy', { dir: ZOO })).toThrow(/could not read .*weights\.f16.*no such file/);
    fs.writeFileSync(file, good);
    loadZooModel('a-copy', { dir: ZOO }).model.dispose();
  });

  it('refuses unknown names, a missing manifest, bad names, unfinished runs and weights float16 cannot hold', async () => {
    expect(() => loadZooModel('nope', { dir: ZOO })).toThrow(/no model 'nope' in .*manifest\.json; it holds: a-copy, nano-par2/);
    expect(() => loadZooModel('x', { dir: path.join(TMP, 'empty') })).toThrow(/manifest\.json not found.*npm run zoo/);
    expect(() => exportZooModel('../up', RUN, { dir: ZOO, command: COMMAND })).toThrow(/zoo model name "..\/up" is not allowed/);
    expect(() => exportZooModel('half', path.join(RUN, 'model.prev.ckpt'), { dir: ZOO, command: COMMAND })).toThrow(/is at step 10 of 20: only finished runs go into the zoo/);

    const big = path.join(TMP, 'big');
    fs.mkdirSync(big);
    fs.copyFileSync(path.join(RUN, 'metrics.jsonl'), path.join(big, 'metrics.jsonl'));
    const { model, tokenizer, config: cfg, step } = loadModel(path.join(RUN, 'model.ckpt'));
    const v = model.params.get('head')!;
    v.assign(tf.tidy(() => v.add(tf.scalar(70_000))));
    await saveCheckpoint(path.join(big, 'model.ckpt'), { config: cfg, tokenizer: tokenizer.toJSON(), step, valLoss: evalRow(20).valLoss }, model.params);
    model.dispose();
    expect(() => exportZooModel('big', big, { dir: ZOO, command: COMMAND })).toThrow(/parameter 'head' holds 7\d{4}\.\d+ at index 0, which float16 cannot hold/);
    expect(Object.keys(readManifest(ZOO).models)).toEqual(['a-copy', 'nano-par2']);
  });

  it('stores only the tensors a model changed from the one it started from, and loads it whole', async () => {
    // a model that kept every tensor of nano-par2 but the unembedding (as a frozen trunk keeps its blocks)
    const tuned = path.join(TMP, 'tuned');
    fs.mkdirSync(tuned);
    fs.copyFileSync(path.join(RUN, 'metrics.jsonl'), path.join(tuned, 'metrics.jsonl'));
    const { model, tokenizer, config: cfg, entry: { steps: step } } = loadZooModel('nano-par2', { dir: ZOO });
    const head = model.params.get('head')!;
    head.assign(tf.tidy(() => head.mul(tf.scalar(1.5))));
    await saveCheckpoint(path.join(tuned, 'model.ckpt'), { config: cfg, tokenizer: tokenizer.toJSON(), step, valLoss: evalRow(20).valLoss }, model.params);
    const expected = new Map([...model.params].map(([n, v]) => [n, Array.from(fromFloat16(toFloat16(v.dataSync() as Float32Array)))]));
    model.dispose();

    const entry = exportZooModel('nano-tuned', tuned, { dir: ZOO, command: COMMAND, initFrom: 'nano-par2' });
    const names = [...expected.keys()];
    expect(entry.tensors.map((t) => t.name)).toEqual(['head']);
    expect(entry.shared?.from).toBe('nano-par2');
    expect(entry.shared?.sha256).toBe(readManifest(ZOO).models['nano-par2'].sha256);
    expect(entry.shared?.tensors.map((t) => t.name)).toEqual(names.filter((n) => n !== 'head'));
    expect(entry.bytes).toBe(2 * expected.get('head')!.length);
    expect(fs.statSync(path.join(ZOO, 'nano-tuned', 'weights.f16')).size).toBe(entry.bytes);
    expect(entry.parameters).toBe([...expected.values()].reduce((a, v) => a + v.length, 0));

    const before = tf.memory().numTensors;
    const back = loadZooModel('nano-tuned', { dir: ZOO });
    for (const [n, v] of back.model.params) expect(Array.from(v.dataSync()), n).toEqual(expected.get(n));
    back.model.dispose();
    expect(tf.memory().numTensors).toBe(before);

    // its base retrained or replaced (another sha256), or gone: refused, saying what to do
    const other = path.join(TMP, 'zoo-other');
    fs.cpSync(ZOO, other, { recursive: true });
    const manifest = readManifest(other);
    manifest.models['nano-par2'].sha256 = '0'.repeat(64);
    fs.writeFileSync(path.join(other, 'manifest.json'), JSON.stringify(manifest));
    expect(() => loadZooModel('nano-tuned', { dir: other })).toThrow(/takes \d+ tensors from zoo model 'nano-par2' as exported with sha256 [0-9a-f]{64}, but 'nano-par2' now has sha256 0{64}.*re-export 'nano-tuned'/);
    delete manifest.models['nano-par2'];
    fs.writeFileSync(path.join(other, 'manifest.json'), JSON.stringify(manifest));
    expect(() => loadZooModel('nano-tuned', { dir: other })).toThrow(/from zoo model 'nano-par2', which the manifest does not hold/);
  });
});
