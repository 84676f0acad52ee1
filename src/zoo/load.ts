/**
 * Loading zoo models (Node only): the manifest entry, its weights file checked against the recorded sha256 and size
 * (weights.ts, shared with the browser lab),
 * the model built from the recorded config (createModel) and its float16 weights assigned as float32 (loadParams,
 * which also checks every name and shape against the model).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Config } from '../config';
import { mtpTokens } from '../config';
import { Tokenizer, tokenizerFromSpec } from '../data/tokenizer';
import { createModel, MtpModel } from '../model/create';
import { Checkpoint, loadParams } from '../train/checkpoint';
import { fsCause } from '../util/files';
import { DEFAULT_ZOO_DIR, manifestPath, readManifest, ZooEntry } from './manifest';
import { entryTensors, sharedBase, withSharedValues, zooWeightValues } from './weights';

export interface ZooOptions {
  /** Zoo folder holding manifest.json [default: models/ at the repository root]. */
  dir?: string;
}

/** What listZooModels says about each model. */
export interface ZooListing {
  name: string;
  /** MTP variant ('none' = plain next-token model). */
  kind: string;
  /** Tokens predicted per position (1 for the plain model). */
  k: number;
  corpus: string;
  parameters: number;
  steps: number;
  /** Next-token validation loss (nats), head 0. */
  nextTokenLoss: number;
  /** Bytes of its own weights file (tensors shared with `initFrom` are not in it). */
  bytes: number;
  initFrom?: string;
}

export interface ZooModel {
  name: string;
  model: MtpModel;
  tokenizer: Tokenizer;
  config: Config;
  entry: ZooEntry;
}

/** Every model in the zoo's manifest, sorted by name (reads no weights). */
export function listZooModels(opts: ZooOptions = {}): ZooListing[] {
  const manifest = readManifest(opts.dir ?? DEFAULT_ZOO_DIR);
  return Object.keys(manifest.models)
    .sort()
    .map((name) => {
      const e = manifest.models[name];
      return {
        name,
        kind: e.config.model.mtp.kind,
        k: mtpTokens(e.config.model.mtp),
        corpus: e.config.train.corpus,
        parameters: e.parameters,
        steps: e.steps,
        nextTokenLoss: e.valLoss.heads[0]?.loss ?? e.valLoss.objective,
        bytes: e.bytes,
        ...(e.initFrom !== undefined ? { initFrom: e.initFrom } : {}),
      };
    });
}

/** What to do about a weights file that is not the one the manifest records. */
function remedy(name: string, file: string): string {
  return `restore it (\`git checkout -- ${file}\`; \`git lfs pull\` if the repository keeps it in Git LFS) or re-export the model (\`npm run zoo -- --only=${name}\`)`;
}

/**
 * Reads a zoo model's weights file and checks it against its manifest entry (size and sha256); returns the float32
 * values of every parameter by name. Refuses a missing, damaged or replaced file, naming it and what to do.
 */
export function readZooWeights(name: string, entry: ZooEntry, dir: string): Map<string, Float32Array> {
  const file = path.resolve(dir, entry.weights);
  if (path.relative(path.resolve(dir), file).startsWith('..')) {
    throw new Error(`${manifestPath(dir)}: model '${name}' names weights outside the zoo folder (${entry.weights})`);
  }
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    throw new Error(`could not read ${file}, the weights of zoo model '${name}': ${fsCause(e)}; ${remedy(name, file)}`);
  }
  const sha = createHash('sha256').update(buf).digest('hex');
  return zooWeightValues(name, entry, buf, sha, { file, manifest: manifestPath(dir), remedy: remedy(name, file) });
}

/**
 * A zoo model as a checkpoint (weights only, verified): what `mtp train --init=zoo:NAME` copies from, and what
 * loadZooModel loads. Errors name the manifest or the file and what to do (unknown name: the names there are).
 */
export function zooCheckpoint(name: string, opts: ZooOptions = {}): { checkpoint: Checkpoint; entry: ZooEntry } {
  const dir = opts.dir ?? DEFAULT_ZOO_DIR;
  const manifest = readManifest(dir);
  const entry = manifest.models[name];
  if (!entry) {
    const names = Object.keys(manifest.models).sort();
    throw new Error(`no model '${name}' in ${manifestPath(dir)}; it holds: ${names.join(', ') || 'none'}`);
  }
  const base = sharedBase(name, entry, manifest, manifestPath(dir));
  const values = withSharedValues(name, entry, readZooWeights(name, entry, dir), base && readZooWeights(base.name, base.entry, dir));
  let offset = 0;
  const tensors = entryTensors(entry).map((t) => {
    const length = values.get(t.name)!.length;
    offset += length;
    return { name: `param/${t.name}`, shape: t.shape, offset: offset - length, length };
  });
  const checkpoint: Checkpoint = {
    header: { config: entry.config, tokenizer: entry.tokenizer, step: entry.steps, tensors },
    tensors: new Map([...values].map(([n, v]) => [`param/${n}`, v])),
    file: path.resolve(dir, entry.weights),
  };
  return { checkpoint, entry };
}

/** Loads a zoo model: its verified weights (zooCheckpoint) assigned to a model built from the recorded config. */
export function loadZooModel(name: string, opts: ZooOptions = {}): ZooModel {
  const { checkpoint, entry } = zooCheckpoint(name, opts);
  const config = entry.config;
  const model = createModel(config.model);
  try {
    loadParams(checkpoint, config.model, model.params, `zoo model '${name}' (${checkpoint.file})`);
  } catch (e) {
    model.dispose();
    throw e;
  }
  return { name, model, tokenizer: tokenizerFromSpec(entry.tokenizer), config, entry };
}
