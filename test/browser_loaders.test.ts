/**
 * What the lab page loads models with, checked in Node against the Node loaders: zoo weights from bytes
 * (src/zoo/weights.ts, sha256 through Web Crypto) give the same weights as loadZooModel; a checkpoint parsed from bytes
 * (src/train/checkpoint_bytes.ts) gives the same weights as readCheckpoint, and damage to it is refused and named;
 * the page's decoder choices (web/src/lab/choices.ts) refuse what a model cannot do.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/backend/index';
import { resolveConfig } from '../src/config';
import { createModel } from '../src/model/create';
import { readCheckpoint, saveCheckpoint } from '../src/train/checkpoint';
import { modelFromCheckpointBytes, parseCheckpointBytes } from '../src/train/checkpoint_bytes';
import { sha256Hex } from '../src/util/digest';
import { loadZooModel } from '../src/zoo/load';
import { DEFAULT_ZOO_DIR, readManifest } from '../src/zoo/manifest';
import { zooModelFromBytes } from '../src/zoo/weights';
import { drafterFor, nanoMtp } from '../web/src/lab/choices';

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'mtp-lab-loaders-'));
beforeAll(() => initBackend('cpu'));
afterAll(() => fs.rmSync(TMP, { recursive: true, force: true }));

async function paramValues(params: Map<string, { data(): Promise<unknown> }>): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const [n, v] of params) out.set(n, (await v.data()) as Float32Array);
  return out;
}

describe('zoo weights from bytes', () => {
  const name = 'code-parallel-k2';
  const entry = readManifest(DEFAULT_ZOO_DIR).models[name];
  const bytes = new Uint8Array(fs.readFileSync(path.join(DEFAULT_ZOO_DIR, entry.weights)));
  const source = { file: `zoo/${entry.weights}`, manifest: 'zoo/manifest.json', remedy: 'rebuild the page' };

  it('Web Crypto sha256 equals the manifest’s', async () => {
    expect(await sha256Hex(bytes)).toBe(entry.sha256);
  });

  it('give the same model as the Node loader', async () => {
    const fromBytes = await zooModelFromBytes(name, entry, bytes, source);
    const fromFile = loadZooModel(name).model;
    const [a, b] = [await paramValues(fromBytes.params), await paramValues(fromFile.params)];
    expect([...a.keys()]).toEqual([...b.keys()]);
    for (const [n, v] of a) expect(v, n).toEqual(b.get(n));
    fromBytes.dispose();
    fromFile.dispose();
  });

  it('refuse a changed byte or a truncated file, naming the file and the manifest', async () => {
    const flipped = bytes.slice();
    flipped[1234] ^= 1;
    await expect(zooModelFromBytes(name, entry, flipped, source)).rejects.toThrow(/zoo\/code-parallel-k2\/weights\.f16 is not the weights file recorded for zoo model 'code-parallel-k2' in zoo\/manifest\.json: .*sha256.*rebuild the page/s);
    await expect(zooModelFromBytes(name, entry, bytes.subarray(0, 100), source)).rejects.toThrow(/it has 100 bytes/);
  });
});

describe('checkpoints from bytes', () => {
  const config = resolveConfig('nano', { model: { mtp: nanoMtp('sequential', 3), seed: 3 } });
  const file = path.join(TMP, 'model.ckpt');
  let bytes: Uint8Array;

  beforeAll(async () => {
    const model = createModel(config.model);
    await saveCheckpoint(file, { config, tokenizer: { kind: 'byte' }, step: 5 }, model.params);
    model.dispose();
    bytes = new Uint8Array(fs.readFileSync(file));
  });

  it('give the weights readCheckpoint gives, and a model with them', async () => {
    const parsed = await parseCheckpointBytes(bytes, 'model.ckpt');
    const read = readCheckpoint(file);
    expect(parsed.header.step).toBe(5);
    expect(parsed.config).toEqual(read.header.config);
    for (const [n, v] of parsed.params) expect(v.values, n).toEqual(read.tensors.get(`param/${n}`));
    const { model } = await modelFromCheckpointBytes(bytes, 'model.ckpt');
    const values = await paramValues(model.params);
    for (const [n, v] of values) expect(v, n).toEqual(read.tensors.get(`param/${n}`));
    model.dispose();
  });

  it('refuse damage, naming the part', async () => {
    const body = bytes.slice();
    body[body.length - 8] ^= 0x10; // in the last parameter's data
    await expect(parseCheckpointBytes(body, 'x.ckpt')).rejects.toThrow(/checkpoint x\.ckpt is corrupt: its weights .* fail their sha256 check/);
    const header = bytes.slice();
    header[60] ^= 1; // inside the JSON header
    await expect(parseCheckpointBytes(header, 'x.ckpt')).rejects.toThrow(/its header .* fails its sha256 check/);
    await expect(parseCheckpointBytes(bytes.subarray(0, bytes.length - 4), 'x.ckpt')).rejects.toThrow(/truncated or padded/);
    await expect(parseCheckpointBytes(new TextEncoder().encode('hello\nworld'), 'x.ckpt')).rejects.toThrow(/x\.ckpt is not an mtp-lab checkpoint/);
  });
});

describe('the page’s decoder choices', () => {
  it('refuse drafting with a plain model; trees as deep as the drafter’s chain; k caps the depth', () => {
    const plain = createModel(resolveConfig('nano').model);
    expect(() => drafterFor(plain, { decoder: 'own', tree: 'chain' })).toThrow(/plain next-token model.*prompt lookup or AR/);
    expect(drafterFor(plain, { decoder: 'ar', tree: 'chain' })).toBeNull();
    expect(drafterFor(plain, { decoder: 'lookup', tree: 'chain', k: 3 })!.maxDepth).toBe(2);
    const seq = createModel(resolveConfig('nano', { model: { mtp: nanoMtp('sequential', 3) } }).model);
    expect(drafterFor(seq, { decoder: 'own', tree: 'chain' })!.maxDepth).toBe(2);
    expect(drafterFor(seq, { decoder: 'own', tree: 'dense' })!.maxDepth).toBe(2);
    const medusa = createModel(resolveConfig('nano', { model: { mtp: nanoMtp('medusa', 4) } }).model);
    expect(drafterFor(medusa, { decoder: 'own', tree: 'dense' })!.maxDepth).toBe(3);
    expect(drafterFor(medusa, { decoder: 'own', tree: 'sparse63', k: 3 })!.maxDepth).toBe(2);
    expect(() => drafterFor(medusa, { decoder: 'own', tree: 'chain', k: 0 })).toThrow(/k must be an integer ≥ 1/);
    for (const m of [plain, seq, medusa]) m.dispose();
  });
});
