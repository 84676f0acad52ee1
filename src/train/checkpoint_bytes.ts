/**
 * A checkpoint file (`MTPLAB-CKPT 1` or `2`, the layout in checkpoint.ts) parsed from its bytes, without file access:
 * what the browser lab does with a file the user picks. The same checks as `readCheckpoint` — magic line, header
 * length, the sha256 of the header and of the weights (Web Crypto) — and the same kind of message naming the part
 * that fails. The optimiser part is not checked: a page only decodes with the weights.
 */
import type { Config } from '../config';
import { createModel } from '../model/create';
import type { MtpModel } from '../model/mtp_model';
import { assignParams, NamedValues } from '../model/assign_params';
import { sha256Hex } from '../util/digest';
import type { CheckpointHeader } from './checkpoint';

const MAGIC_PREFIX = 'MTPLAB-CKPT ';
const HASH_BYTES = 32;

/** The weights of a checkpoint read from bytes. */
export interface CheckpointWeights {
  config: Config;
  header: CheckpointHeader;
  /** Every parameter by name (without the `param/` prefix). */
  params: Map<string, NamedValues>;
}

function hex(bytes: Uint8Array): string {
  let s = '';
  for (const b of bytes) s += b.toString(16).padStart(2, '0');
  return s;
}

/** Parses and verifies a checkpoint's bytes; `file` names it in errors. */
export async function parseCheckpointBytes(bytes: Uint8Array, file: string): Promise<CheckpointWeights> {
  const corrupt = (what: string) => new Error(`checkpoint ${file} is corrupt: ${what}`);
  const newline = bytes.indexOf(10);
  const magicLine = new TextDecoder('latin1').decode(bytes.subarray(0, newline + 1));
  if (newline < 0 || !magicLine.startsWith(MAGIC_PREFIX)) throw new Error(`${file} is not an mtp-lab checkpoint (expected it to start with '${MAGIC_PREFIX}2')`);
  const version = Number(magicLine.slice(MAGIC_PREFIX.length).trim());
  if (version !== 1 && version !== 2) throw new Error(`${file} is an mtp-lab checkpoint of format ${magicLine.trim().slice(MAGIC_PREFIX.length)}; this version reads formats 1 and 2`);
  const hashBytes = version >= 2 ? HASH_BYTES : 0;
  const lenAt = magicLine.length;
  if (bytes.length < lenAt + 4 + hashBytes) throw corrupt(`the file ends inside its header (${bytes.length} bytes)`);
  const hlen = new DataView(bytes.buffer, bytes.byteOffset + lenAt, 4).getUint32(0, true);
  const start = lenAt + 4 + hashBytes;
  if (start + hlen > bytes.length) throw corrupt(`its header-length field says ${hlen} bytes but only ${bytes.length - start} follow`);
  const json = bytes.subarray(start, start + hlen);
  if (hashBytes && (await sha256Hex(json)) !== hex(bytes.subarray(lenAt + 4, start))) throw corrupt('its header (config, tokenizer, tensor table) fails its sha256 check');
  let header: CheckpointHeader;
  try {
    header = JSON.parse(new TextDecoder('utf-8').decode(json)) as CheckpointHeader;
  } catch {
    throw corrupt('its header is not valid JSON');
  }
  if (!header || !Array.isArray(header.tensors) || !header.config?.model || !header.tokenizer) throw corrupt('its header lacks the config, tokenizer or tensor table');
  const dataStart = start + hlen;
  const total = header.tensors.reduce((a, t) => a + t.length, 0);
  if (bytes.length - dataStart !== total * 4) throw corrupt(`it is truncated or padded: ${bytes.length - dataStart} data bytes, the header lists ${total * 4}`);
  const body = new Float32Array(bytes.slice(dataStart).buffer); // an own, aligned copy (little-endian hosts)
  const firstOpt = header.tensors.find((t) => !t.name.startsWith('param/'));
  const split = firstOpt ? firstOpt.offset : total;
  if (hashBytes && (await sha256Hex(new Uint8Array(body.buffer, 0, split * 4))) !== header.sha256?.params) {
    throw corrupt('its weights (the parameter tensors) fail their sha256 check');
  }
  const params = new Map<string, NamedValues>();
  for (const t of header.tensors) {
    if (t.name.startsWith('param/')) params.set(t.name.slice(6), { shape: t.shape, values: body.subarray(t.offset, t.offset + t.length) });
  }
  return { config: header.config, header, params };
}

/** A model built from a checkpoint's config with its verified weights. */
export async function modelFromCheckpointBytes(bytes: Uint8Array, file: string): Promise<{ model: MtpModel; checkpoint: CheckpointWeights }> {
  const checkpoint = await parseCheckpointBytes(bytes, file);
  const model = createModel(checkpoint.config.model);
  try {
    assignParams(checkpoint.params, model.params, `checkpoint ${file}`);
  } catch (e) {
    model.dispose();
    throw e;
  }
  return { model, checkpoint };
}
