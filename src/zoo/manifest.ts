/**
 * The model zoo's index (Node only): `<zoo>/manifest.json` lists every model by name with what it takes to rebuild and
 * trust it: its weights file (`<name>/weights.f16`, raw little-endian float16 of every parameter, in the order of
 * `tensors`), that file's sha256 and size, the full resolved config, the tokenizer, how long it trained (steps,
 * tokens), its validation loss per head, the command that trained it and the machine it trained on.
 *
 * The file is JSON with the models sorted by name and short values on one line (one tensor per line), so a change to
 * one model is a small diff.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Config } from '../config';
import type { TokenizerSpec } from '../data/tokenizer';
import { errorCode, fsCause, writeFileDurable } from '../util/files';
import { checkManifest, ZOO_FORMAT } from './weights';

/** The `format` field of a manifest this version reads and writes (defined in weights.ts, which the browser shares). */
export { ZOO_FORMAT };
export const MANIFEST_FILE = 'manifest.json';
export const WEIGHTS_FILE = 'weights.f16';
/** The committed zoo: `models/` at the repository root. */
export const DEFAULT_ZOO_DIR = path.resolve(__dirname, '..', '..', 'models');

/** One parameter tensor in a weights file; `offset` counts float16 values from the start of the file. */
export interface ZooTensor {
  name: string;
  shape: number[];
  offset: number;
}

/** Validation metrics of the exported checkpoint (from its run's metrics log, at the checkpoint's step). */
export interface ZooValLoss {
  /** The training objective on the validation windows (all heads, as weighted in training). */
  objective: number;
  /** Per head, head 0 = next token: cross-entropy (nats) and top-1 accuracy. */
  heads: { loss: number; acc: number }[];
}

/** Tensors a zoo model takes from another zoo model's weights file (ZooEntry.shared). */
export interface ZooShared {
  /** The zoo model whose file holds them (the model this one started from). */
  from: string;
  /** sha256 of that model's weights file when this one was exported. */
  sha256: string;
  /** The shared tensors (names and shapes; where they lie in `from`'s file, that model's entry says). */
  tensors: { name: string; shape: number[] }[];
}

export interface ZooEntry {
  /** Weights file, relative to the zoo folder (`<name>/weights.f16`). */
  weights: string;
  /** sha256 (hex) of the weights file. */
  sha256: string;
  /** Size of the weights file in bytes (2 per stored parameter: shared tensors are not in it). */
  bytes: number;
  dtype: 'float16';
  /** The model's parameter count, shared tensors included. */
  parameters: number;
  /** The tensors stored in the weights file. */
  tensors: ZooTensor[];
  /** The full resolved config the model was trained with. */
  config: Config;
  tokenizer: TokenizerSpec;
  /** Optimiser steps trained. */
  steps: number;
  /** Training tokens seen: steps · batchSize · blockSize (for a model started from another, its own steps only). */
  tokensSeen: number;
  valLoss: ZooValLoss;
  /** Zoo model whose weights started this one (`mtp train --init`), if any. */
  initFrom?: string;
  /**
   * Tensors this model keeps unchanged from `initFrom` (a frozen trunk: Medusa-1 heads, the feature drafter) are not
   * stored twice: the weights file holds only the tensors listed in `tensors`, and these come from `from`'s file,
   * which must still have the sha256 it had at export (sharedBase).
   */
  shared?: ZooShared;
  /** The command that trained it. */
  command: string;
  /** Where it was trained (CPU, cores, memory, OS, Node, backend). */
  machine: string;
  /** When its training finished (ISO 8601). */
  trainedAt: string;
}

export interface ZooManifest {
  format: string;
  models: Record<string, ZooEntry>;
}

/** `<zoo>/manifest.json`. */
export function manifestPath(dir: string): string {
  return path.join(dir, MANIFEST_FILE);
}

/** Zoo model names are folder names: letters, digits, '.', '_' and '-', starting with a letter or digit. */
export function checkZooName(name: string): void {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) {
    throw new Error(`zoo model name ${JSON.stringify(name)} is not allowed: use letters, digits, '.', '_' and '-', starting with a letter or digit`);
  }
}

/**
 * Reads `<dir>/manifest.json`. A missing file is an empty zoo when `missingOk` (for writing), else an error saying
 * how the zoo gets models; a file of another format or broken JSON is an error naming the file.
 */
export function readManifest(dir: string, opts: { missingOk?: boolean } = {}): ZooManifest {
  const file = manifestPath(dir);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if (errorCode(e) === 'ENOENT') {
      if (opts.missingOk) return { format: ZOO_FORMAT, models: {} };
      throw new Error(`${file} not found: this zoo holds no models yet; train and export them with \`npm run zoo\` (or pass the folder that holds manifest.json)`);
    }
    throw new Error(`could not read ${file}: ${fsCause(e)}`);
  }
  let manifest: ZooManifest;
  try {
    manifest = JSON.parse(text) as ZooManifest;
  } catch (e) {
    throw new Error(`${file} is not valid JSON (${(e as Error).message}); restore it from git (\`git checkout -- ${file}\`)`);
  }
  return checkManifest(manifest, file);
}

/** JSON with two-space indents, but any value that fits on one line of ≤ 120 characters kept on one line (a tensor, a shape). */
function pretty(v: unknown, indent = ''): string {
  const flat = JSON.stringify(v);
  if (typeof v !== 'object' || v === null || indent.length + flat.length <= 120) return flat;
  const inner = `${indent}  `;
  if (Array.isArray(v)) return `[\n${v.map((x) => inner + pretty(x, inner)).join(',\n')}\n${indent}]`;
  const fields = Object.entries(v).filter(([, x]) => x !== undefined);
  return `{\n${fields.map(([k, x]) => `${inner}${JSON.stringify(k)}: ${pretty(x, inner)}`).join(',\n')}\n${indent}}`;
}

/** Writes the manifest durably, models sorted by name. */
export function writeManifest(dir: string, manifest: ZooManifest): void {
  const models = Object.fromEntries(Object.keys(manifest.models).sort().map((name) => [name, manifest.models[name]]));
  writeFileDurable(manifestPath(dir), pretty({ format: manifest.format, models }) + '\n');
}
