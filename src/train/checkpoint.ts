/**
 * Checkpoints (Node only): one file holding the resolved config, the tokenizer, every parameter and,
 * for `--resume`, the optimiser moments and the batch sampler's state.
 *
 * Layout: the magic line `MTPLAB-CKPT 1\n`, a uint32 (little-endian) header length, the JSON
 * header, then float32 tensor data at the offsets the header lists. Writes go to a temporary file
 * in the same folder and are renamed over the target, so a crash never leaves half a checkpoint and
 * the previous one stays intact until the new one is complete.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import type { Config, ModelConfig } from '../config';
import type { TokenizerSpec } from '../data/tokenizer';
import type { ParamMap } from '../model/params';
import type { TrainerState } from './trainer';

const MAGIC = 'MTPLAB-CKPT 1\n';

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
}

export interface Checkpoint {
  header: CheckpointHeader;
  tensors: Map<string, Float32Array>;
}

/** Writes a checkpoint atomically (temp file + rename). */
export async function saveCheckpoint(
  file: string,
  meta: { config: Config; tokenizer: TokenizerSpec; step: number; valLoss?: number },
  params: ParamMap,
  trainer?: TrainerState,
): Promise<void> {
  const arrays: [string, number[], Float32Array][] = [];
  for (const [name, v] of params) arrays.push([`param/${name}`, v.shape, (await v.data()) as Float32Array]);
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
  const header: CheckpointHeader = {
    ...meta,
    rngState: trainer?.rngState,
    optimizerT: trainer?.optimizer.t,
    tensors,
  };
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const lenBuf = Buffer.alloc(4);
  lenBuf.writeUInt32LE(json.length);
  const body = new Float32Array(offset);
  for (let i = 0; i < arrays.length; i++) body.set(arrays[i][2], tensors[i].offset);
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  try {
    const fd = fs.openSync(tmp, 'w');
    try {
      fs.writeSync(fd, Buffer.from(MAGIC, 'utf8'));
      fs.writeSync(fd, lenBuf);
      fs.writeSync(fd, json);
      fs.writeSync(fd, Buffer.from(body.buffer, body.byteOffset, body.byteLength));
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
}

/** Reads a checkpoint file, with a clear error when it is not one or is truncated. */
export function readCheckpoint(file: string): Checkpoint {
  if (!fs.existsSync(file)) throw new Error(`checkpoint not found: ${file}`);
  const buf = fs.readFileSync(file);
  if (buf.subarray(0, MAGIC.length).toString('utf8') !== MAGIC) {
    throw new Error(`${file} is not an mtp-lab checkpoint (expected it to start with '${MAGIC.trim()}')`);
  }
  const hlen = buf.readUInt32LE(MAGIC.length);
  const start = MAGIC.length + 4;
  const header = JSON.parse(buf.subarray(start, start + hlen).toString('utf8')) as CheckpointHeader;
  const dataStart = start + hlen;
  const total = header.tensors.reduce((a, t) => a + t.length, 0);
  if (buf.length - dataStart !== total * 4) {
    throw new Error(`checkpoint ${file} is truncated or corrupt: ${buf.length - dataStart} data bytes, expected ${total * 4}`);
  }
  const body = new Float32Array(buf.buffer.slice(buf.byteOffset + dataStart, buf.byteOffset + buf.length));
  const tensors = new Map<string, Float32Array>();
  for (const t of header.tensors) tensors.set(t.name, body.subarray(t.offset, t.offset + t.length));
  return { header, tensors };
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

/** The trainer state saved in a checkpoint (for --resume), or an error if it holds none. */
export function trainerStateOf(ckpt: Checkpoint, file = 'checkpoint'): TrainerState {
  const { header, tensors } = ckpt;
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
