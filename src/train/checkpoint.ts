/**
 * Checkpoints (Node only): one file holding the resolved config, the tokenizer, every parameter and,
 * for `--resume`, the optimiser moments and the batch sampler's state.
 *
 * Layout (version 2): the magic line `MTPLAB-CKPT 2\n`, a uint32 (little-endian) header length, the
 * 32-byte sha256 of the header, the JSON header, then float32 tensor data at the offsets the header
 * lists: the parameters first, then the optimiser moments. The header holds the sha256 of each of
 * those two parts, so a flipped byte anywhere is found on load and named (header, weights or
 * optimiser state). Version 1 files (no hashes) still load.
 *
 * Writes are durable (src/util/files.ts): a complete, fsynced temporary file is renamed over the
 * target, so a crash, a kill or a full disk leaves the previous checkpoint intact. The checkpoint it
 * replaces is kept as `<name>.prev.ckpt` (the last two are on disk), for when the newest is damaged.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import type { Config, ModelConfig } from '../config';
import type { TokenizerSpec } from '../data/tokenizer';
import type { MtpModel } from '../model/create';
import { MedusaModel } from '../model/medusa';
import type { ParamMap } from '../model/params';
import { errorCode, fsCause, writeFileDurable } from '../util/files';
import type { TrainerState } from './trainer';

const MAGIC_PREFIX = 'MTPLAB-CKPT ';
const VERSION = 2;
const MAGIC = `${MAGIC_PREFIX}${VERSION}\n`;
const HASH_BYTES = 32;

interface TensorEntry {
  name: string;
  shape: number[];
  offset: number;
  length: number;
}

export interface CheckpointHeader {
  config: Config;
  tokenizer: TokenizerSpec;
  step: number;
  /** Validation loss at save time, if measured. */
  valLoss?: number;
  rngState?: number;
  optimizerT?: number;
  tensors: TensorEntry[];
  /** sha256 (hex) of the parameter bytes and of the optimiser bytes (version 2). */
  sha256?: { params: string; optimizer: string };
}

export interface Checkpoint {
  header: CheckpointHeader;
  tensors: Map<string, Float32Array>;
  /** The file read (for messages). */
  file: string;
  /** Why the optimiser part cannot be used (hash mismatch), if it cannot; the weights were verified. */
  optimizerProblem?: string;
}

/** Where the checkpoint that `file` replaced is kept: `model.ckpt` → `model.prev.ckpt`. */
export function previousCheckpointPath(file: string): string {
  return file.endsWith('.ckpt') ? `${file.slice(0, -5)}.prev.ckpt` : `${file}.prev`;
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

function bytesOf(a: Float32Array): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** Keeps the current `file` (if any) as its `.prev.ckpt`, without ever leaving `file` missing. */
function keepPrevious(file: string): void {
  if (!fs.existsSync(file)) return;
  const prev = previousCheckpointPath(file);
  const tmp = `${prev}.${process.pid}.tmp`;
  fs.rmSync(tmp, { force: true });
  try {
    fs.linkSync(file, tmp);
  } catch {
    fs.copyFileSync(file, tmp); // file systems without hard links
  }
  fs.renameSync(tmp, prev);
}

/**
 * Writes a checkpoint durably (see the file comment); the checkpoint it replaces becomes `<name>.prev.ckpt` unless
 * `keepPrevious` is false. On a write error (disk full, read-only, permission) nothing on disk changes and the error
 * names the path and the cause.
 */
export async function saveCheckpoint(
  file: string,
  meta: { config: Config; tokenizer: TokenizerSpec; step: number; valLoss?: number },
  params: ParamMap,
  trainer?: TrainerState,
  opts: { keepPrevious?: boolean } = {},
): Promise<void> {
  const arrays: [string, number[], Float32Array][] = [];
  for (const [name, v] of params) arrays.push([`param/${name}`, v.shape, (await v.data()) as Float32Array]);
  const nParams = arrays.length;
  if (trainer) {
    for (const [name, data] of trainer.optimizer.m) arrays.push([`adam.m/${name}`, [data.length], data]);
    for (const [name, data] of trainer.optimizer.v) arrays.push([`adam.v/${name}`, [data.length], data]);
  }
  const tensors: TensorEntry[] = [];
  let offset = 0;
  for (const [name, shape, data] of arrays) {
    tensors.push({ name, shape, offset, length: data.length });
    offset += data.length;
  }
  const body = new Float32Array(offset);
  for (let i = 0; i < arrays.length; i++) body.set(arrays[i][2], tensors[i].offset);
  const split = nParams < tensors.length ? tensors[nParams].offset : offset;
  const header: CheckpointHeader = {
    ...meta,
    rngState: trainer?.rngState,
    optimizerT: trainer?.optimizer.t,
    tensors,
    sha256: { params: sha256(bytesOf(body.subarray(0, split))), optimizer: sha256(bytesOf(body.subarray(split))) },
  };
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const lenBuf = Buffer.alloc(4);
  lenBuf.writeUInt32LE(json.length);
  const headerHash = createHash('sha256').update(json).digest();
  writeFileDurable(file, [Buffer.from(MAGIC, 'utf8'), lenBuf, headerHash, json, bytesOf(body)], () => {
    if (opts.keepPrevious ?? true) keepPrevious(file);
  });
}

/** ' The previous checkpoint … can be used …' when one is kept beside `file`, else ''. */
function previousHint(file: string): string {
  const prev = previousCheckpointPath(file);
  if (!fs.existsSync(prev)) return ' No previous checkpoint is kept beside it.';
  let step = '';
  try {
    step = ` (step ${readCheckpoint(prev).header.step})`;
  } catch {
    return ` The previous checkpoint ${prev} is damaged too.`;
  }
  return ` The previous checkpoint ${prev}${step} is intact: use it with --ckpt=${prev}, or move it over ${file} to --resume from it.`;
}

function corrupt(file: string, what: string): Error {
  return new Error(`checkpoint ${file} is corrupt: ${what}.${previousHint(file)}`);
}

/**
 * Reads a checkpoint file and verifies it: a file that is not a checkpoint, truncated, or whose header or weights
 * fail their sha256 is refused with a message naming the part and the previous checkpoint kept beside it. A
 * damaged optimiser part is recorded in `optimizerProblem` (the weights are still usable; `--resume` is refused).
 */
export function readCheckpoint(file: string): Checkpoint {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    const code = errorCode(e);
    if (code === 'ENOENT') throw new Error(`checkpoint not found: ${file}`);
    if (code === 'EISDIR') throw new Error(`${file} is a folder; pass the checkpoint file inside it (e.g. ${file.replace(/\/$/, '')}/model.ckpt)`);
    throw new Error(`could not read checkpoint ${file}: ${fsCause(e)}`);
  }
  const magicLine = buf.subarray(0, buf.indexOf(10) + 1).toString('latin1');
  if (!magicLine.startsWith(MAGIC_PREFIX)) {
    throw new Error(`${file} is not an mtp-lab checkpoint (expected it to start with '${MAGIC.trim()}')`);
  }
  const version = Number(magicLine.slice(MAGIC_PREFIX.length).trim());
  if (version !== 1 && version !== 2) {
    throw new Error(`${file} is an mtp-lab checkpoint of format ${magicLine.trim().slice(MAGIC_PREFIX.length)}; this version reads formats 1 and 2`);
  }
  const hasHash = version >= 2;
  const lenAt = magicLine.length;
  if (buf.length < lenAt + 4 + (hasHash ? HASH_BYTES : 0)) throw corrupt(file, `the file ends inside its header (${buf.length} bytes)`);
  const hlen = buf.readUInt32LE(lenAt);
  const start = lenAt + 4 + (hasHash ? HASH_BYTES : 0);
  if (start + hlen > buf.length) {
    throw corrupt(file, `its header-length field says ${hlen} bytes but only ${buf.length - start} follow (a damaged length field, or a truncated file)`);
  }
  const json = buf.subarray(start, start + hlen);
  if (hasHash && !createHash('sha256').update(json).digest().equals(buf.subarray(lenAt + 4, start))) {
    throw corrupt(file, 'its header (config, tokenizer, tensor table) fails its sha256 check');
  }
  let header: CheckpointHeader;
  try {
    header = JSON.parse(json.toString('utf8')) as CheckpointHeader;
  } catch {
    throw corrupt(file, 'its header is not valid JSON');
  }
  if (!header || !Array.isArray(header.tensors) || !header.config?.model || !header.tokenizer) {
    throw corrupt(file, 'its header lacks the config, tokenizer or tensor table');
  }
  const dataStart = start + hlen;
  const total = header.tensors.reduce((a, t) => a + t.length, 0);
  if (buf.length - dataStart !== total * 4) {
    throw corrupt(file, `it is truncated or padded: ${buf.length - dataStart} data bytes, the header lists ${total * 4}`);
  }
  const body = new Float32Array(buf.buffer.slice(buf.byteOffset + dataStart, buf.byteOffset + buf.length));
  let optimizerProblem: string | undefined;
  if (hasHash) {
    const firstOpt = header.tensors.find((t) => !t.name.startsWith('param/'));
    const split = firstOpt ? firstOpt.offset : total;
    if (sha256(bytesOf(body.subarray(0, split))) !== header.sha256?.params) {
      throw corrupt(file, 'its weights (the parameter tensors) fail their sha256 check');
    }
    if (sha256(bytesOf(body.subarray(split))) !== header.sha256?.optimizer) {
      optimizerProblem = `checkpoint ${file} is corrupt: its optimiser state (Adam moments) fails its sha256 check, so it cannot be resumed (its weights are intact and still load).${previousHint(file)}`;
    }
  }
  const tensors = new Map<string, Float32Array>();
  for (const t of header.tensors) tensors.set(t.name, body.subarray(t.offset, t.offset + t.length));
  return { header, tensors, file, optimizerProblem };
}

/** Differences between two model configs, as 'field: checkpoint vs requested' lines. */
export function configDiff(saved: ModelConfig, wanted: ModelConfig): string[] {
  const keys = new Set([...Object.keys(saved), ...Object.keys(wanted)]) as Set<keyof ModelConfig>;
  const out: string[] = [];
  for (const key of keys) {
    const a = JSON.stringify(saved[key]);
    const b = JSON.stringify(wanted[key]);
    if (a !== b) out.push(`model.${key}: checkpoint has ${a}, requested ${b}`);
  }
  return out;
}

/**
 * Copies a checkpoint's parameters into a model's variables. Refuses, without changing any
 * weight, a checkpoint whose model config or parameter shapes differ from the model's.
 */
export function loadParams(ckpt: Checkpoint, modelConfig: ModelConfig, params: ParamMap, file = 'checkpoint'): void {
  const diff = configDiff(ckpt.header.config.model, modelConfig);
  if (diff.length) throw new Error(`${file} does not match the requested model:\n  - ${diff.join('\n  - ')}`);
  const shapes = new Map(ckpt.header.tensors.map((t) => [t.name, t.shape]));
  const problems: string[] = [];
  for (const [name, v] of params) {
    const shape = shapes.get(`param/${name}`);
    if (!shape) problems.push(`parameter '${name}' missing from the checkpoint`);
    else if (JSON.stringify(shape) !== JSON.stringify(v.shape)) {
      problems.push(`parameter '${name}' has shape [${shape}] in the checkpoint, the model needs [${v.shape}]`);
    }
  }
  for (const name of shapes.keys()) {
    if (name.startsWith('param/') && !params.has(name.slice(6))) problems.push(`checkpoint has unknown parameter '${name.slice(6)}'`);
  }
  if (problems.length) throw new Error(`${file} does not fit the model:\n  - ${problems.join('\n  - ')}`);
  tf.tidy(() => {
    for (const [name, v] of params) v.assign(tf.tensor(ckpt.tensors.get(`param/${name}`)!, v.shape, 'float32'));
  });
}

/**
 * Copies every checkpoint parameter whose name and shape the model also has (e.g. a trained trunk under
 * freshly initialised MTP heads); returns how many tensors were copied, and refuses a checkpoint that
 * shares none.
 */
export function copyParams(ckpt: Checkpoint, params: ParamMap, file = 'checkpoint'): number {
  const shapes = new Map(ckpt.header.tensors.map((t) => [t.name, t.shape]));
  let copied = 0;
  tf.tidy(() => {
    for (const [name, v] of params) {
      const shape = shapes.get(`param/${name}`);
      if (!shape || JSON.stringify(shape) !== JSON.stringify(v.shape)) continue;
      v.assign(tf.tensor(ckpt.tensors.get(`param/${name}`)!, v.shape, 'float32'));
      copied += 1;
    }
  });
  if (copied === 0) throw new Error(`${file} shares no parameter (same name and shape) with the model`);
  return copied;
}

/**
 * Starts a fresh model from a checkpoint (`mtp train --init`): copies the same-named, same-shaped tensors (copyParams),
 * and Medusa heads then start from the loaded LM head. Returns how many tensors were copied.
 */
export function initFromCheckpoint(ckpt: Checkpoint, model: MtpModel, file = 'checkpoint'): number {
  const copied = copyParams(ckpt, model.params, file);
  if (model instanceof MedusaModel) model.initHeads(); // W2 = a copy of the loaded LM head
  return copied;
}

/** The trainer state saved in a checkpoint (for --resume), or an error if it holds none. */
export function trainerStateOf(ckpt: Checkpoint, file = 'checkpoint'): TrainerState {
  const { header, tensors } = ckpt;
  if (ckpt.optimizerProblem) throw new Error(ckpt.optimizerProblem);
  if (header.rngState === undefined || header.optimizerT === undefined) {
    throw new Error(`${file} holds weights only (no optimizer state); it cannot be resumed`);
  }
  const m = new Map<string, Float32Array>();
  const v = new Map<string, Float32Array>();
  for (const [name, data] of tensors) {
    if (name.startsWith('adam.m/')) m.set(name.slice(7), data);
    if (name.startsWith('adam.v/')) v.set(name.slice(7), data);
  }
  return { step: header.step, rngState: header.rngState, optimizer: { t: header.optimizerT, m, v } };
}
