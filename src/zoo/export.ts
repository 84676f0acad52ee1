/**
 * Exporting a trained checkpoint into the zoo (Node only): its weights as float16 in `<zoo>/<name>/weights.f16`
 * (no optimiser state) and its entry in `<zoo>/manifest.json` (see manifest.ts). Only a finished run is exported
 * (checkpoint step = config.train.steps), with the validation metrics its run logged at that step.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { readCheckpoint } from '../train/checkpoint';
import { CHECKPOINT_FILE } from '../train/run';
import { writeFileDurable } from '../util/files';
import type { Config } from '../config';
import type { TokenizerSpec } from '../data/tokenizer';
import { FLOAT16_MAX, fromFloat16, toFloat16 } from './float16';
import { readZooWeights } from './load';
import { describeMachine } from './machine';
import { checkZooName, DEFAULT_ZOO_DIR, readManifest, WEIGHTS_FILE, writeManifest, ZooEntry, ZooTensor, ZooValLoss } from './manifest';

export interface ExportOptions {
  /** Zoo folder holding manifest.json and one folder per model [default: models/ at the repository root]. */
  dir?: string;
  /** The command that trained the model, recorded as given (e.g. `npm run mtp -- train …`). */
  command: string;
  /** Where it was trained [default: this machine, describeMachine(config.train.backend)]. */
  machine?: string;
  /** Zoo name of the model whose weights started this one (`--init`), if any. */
  initFrom?: string;
  /** When training finished, ISO 8601 [default: the checkpoint file's modification time]. */
  trainedAt?: string;
  /** Share tensors that equal `initFrom`'s in float16 instead of storing them again [default: true]. */
  share?: boolean;
}

/** The checkpoint file for a run folder or a checkpoint path. */
function checkpointFile(run: string): string {
  return fs.existsSync(run) && fs.statSync(run).isDirectory() ? path.join(run, CHECKPOINT_FILE) : run;
}

/** The evaluation logged at `step` in the run's metrics.jsonl (beside the checkpoint), or an error saying why not. */
export function valLossAt(runDir: string, step: number): ZooValLoss {
  const file = path.join(runDir, 'metrics.jsonl');
  if (!fs.existsSync(file)) throw new Error(`${file} not found: the zoo records the validation loss per head that the run logged there`);
  let found: ZooValLoss | undefined;
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!line.includes('"eval"')) continue;
    let row: { type?: string; step?: number; valLoss?: number; heads?: { loss: number; acc: number }[] };
    try {
      row = JSON.parse(line);
    } catch {
      continue; // a torn last line of a killed run
    }
    if (row.type === 'eval' && row.step === step && typeof row.valLoss === 'number' && Array.isArray(row.heads)) {
      found = { objective: row.valLoss, heads: row.heads.map((h) => ({ loss: h.loss, acc: h.acc })) };
    }
  }
  if (!found) throw new Error(`${file} holds no evaluation at step ${step} (the checkpoint's step); export the run folder that wrote this checkpoint`);
  return found;
}

/**
 * Writes `<dir>/<name>/weights.f16` and the model's manifest entry (replacing an entry of the same name); returns
 * the entry. `run` is a run folder (or its model.ckpt). Refuses an unfinished run, a run without an evaluation at
 * its last step, and weights that float16 cannot hold (|w| ≥ 65520 or NaN), naming the parameter. Tensors that a
 * model started from another zoo model (`initFrom`) kept unchanged are shared with it, not stored (writeZooEntry).
 */
export function exportZooModel(name: string, run: string, opts: ExportOptions): ZooEntry {
  checkZooName(name);
  const ckptFile = checkpointFile(run);
  const ckpt = readCheckpoint(ckptFile);
  const { config, tokenizer, step } = ckpt.header;
  if (step !== config.train.steps) {
    throw new Error(`${ckptFile} is at step ${step} of ${config.train.steps}: only finished runs go into the zoo (resume it to the end first)`);
  }
  const params = ckpt.header.tensors
    .filter((t) => t.name.startsWith('param/'))
    .map((t) => ({ name: t.name.slice(6), shape: t.shape, values: ckpt.tensors.get(t.name)! }));
  return writeZooEntry(name, params, {
    ...opts,
    config,
    tokenizer,
    steps: step,
    valLoss: valLossAt(path.dirname(ckptFile), step),
    trainedAt: opts.trainedAt ?? fs.statSync(ckptFile).mtime.toISOString(),
    source: ckptFile,
  });
}

/** One parameter to store: its name, shape and float32 values. */
export interface ZooParam {
  name: string;
  shape: number[];
  values: Float32Array;
}

/** What a zoo entry records besides its tensors. */
export interface ZooEntryMeta extends ExportOptions {
  config: Config;
  tokenizer: TokenizerSpec;
  steps: number;
  valLoss: ZooValLoss;
  trainedAt: string;
  /** Where the values came from, for error messages. */
  source: string;
}

/** True when two arrays hold the same float32 bit patterns. */
function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length);
  const y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

/**
 * Writes a zoo model's float16 weights and manifest entry. Where `initFrom` is a self-contained model of the same zoo
 * and `share` is on, every tensor whose float16 values equal that model's tensor of the same name (a frozen trunk)
 * is recorded in `shared` instead of being stored again; the rest go into the weights file.
 */
export function writeZooEntry(name: string, params: ZooParam[], meta: ZooEntryMeta): ZooEntry {
  checkZooName(name);
  const dir = meta.dir ?? DEFAULT_ZOO_DIR;
  const manifest = readManifest(dir, { missingOk: true });
  const baseEntry = meta.share !== false && meta.initFrom !== undefined ? manifest.models[meta.initFrom] : undefined;
  const base = baseEntry && !baseEntry.shared ? readZooWeights(meta.initFrom!, baseEntry, dir) : undefined;
  const stored: { p: ZooParam; half: Uint16Array }[] = [];
  const shared: { name: string; shape: number[] }[] = [];
  for (const p of params) {
    const half = toFloat16(p.values);
    for (let i = 0; i < half.length; i++) {
      if ((half[i] & 0x7c00) === 0x7c00) {
        throw new Error(
          `${meta.source}: parameter '${p.name}' holds ${p.values[i]} at index ${i}, which float16 cannot hold (finite values up to ±${FLOAT16_MAX}); ` +
            'this model cannot go into the float16 zoo',
        );
      }
    }
    const fromBase = base?.get(p.name);
    if (fromBase && sameBits(fromFloat16(half), fromBase)) shared.push({ name: p.name, shape: p.shape });
    else stored.push({ p, half });
  }
  const total = params.reduce((a, p) => a + p.values.length, 0);
  const bits = new Uint16Array(stored.reduce((a, s) => a + s.half.length, 0));
  const tensors: ZooTensor[] = [];
  let offset = 0;
  for (const { p, half } of stored) {
    bits.set(half, offset);
    tensors.push({ name: p.name, shape: p.shape, offset });
    offset += half.length;
  }
  const bytes = Buffer.from(bits.buffer, bits.byteOffset, bits.byteLength);
  if (os.endianness() === 'BE') bytes.swap16(); // the file is little-endian
  const weights = `${name}/${WEIGHTS_FILE}`;
  writeFileDurable(path.join(dir, weights), [bytes]);
  const entry: ZooEntry = {
    weights,
    sha256: createHash('sha256').update(bytes).digest('hex'),
    bytes: bytes.length,
    dtype: 'float16',
    parameters: total,
    tensors,
    config: meta.config,
    tokenizer: meta.tokenizer,
    steps: meta.steps,
    tokensSeen: meta.steps * meta.config.train.batchSize * meta.config.model.blockSize,
    valLoss: meta.valLoss,
    ...(meta.initFrom !== undefined ? { initFrom: meta.initFrom } : {}),
    ...(shared.length ? { shared: { from: meta.initFrom!, sha256: baseEntry!.sha256, tensors: shared } } : {}),
    command: meta.command,
    machine: meta.machine ?? describeMachine(meta.config.train.backend),
    trainedAt: meta.trainedAt,
  };
  manifest.models[name] = entry;
  writeManifest(dir, manifest);
  return entry;
}
