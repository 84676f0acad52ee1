/**
 * The zoo's format without file access, shared by the Node loader (load.ts, manifest.ts) and the browser lab: a
 * manifest's JSON checked, a weights file's bytes checked against its entry (size, sha256) and decoded from float16,
 * and a verified model built from them. Browser-safe: the caller brings the bytes and (for `zooWeightValues`) their
 * sha256; `zooModelFromBytes` hashes with Web Crypto itself.
 */
import { createModel } from '../model/create';
import type { MtpModel } from '../model/mtp_model';
import { assignParams, NamedValues } from '../model/assign_params';
import { sha256Hex } from '../util/digest';
import { fromFloat16 } from './float16';
import type { ZooEntry, ZooManifest } from './manifest';

/** The `format` field of a manifest this version reads and writes. */
export const ZOO_FORMAT = 'mtp-lab-zoo 1';

/** A manifest's parsed JSON, checked for this format and a models object; `file` names it in errors. */
export function checkManifest(manifest: unknown, file: string): ZooManifest {
  const m = manifest as Partial<ZooManifest> | null;
  if (m?.format !== ZOO_FORMAT) {
    throw new Error(`${file} has format ${JSON.stringify(m?.format)}; this version reads ${JSON.stringify(ZOO_FORMAT)}`);
  }
  if (typeof m.models !== 'object' || m.models === null || Array.isArray(m.models)) {
    throw new Error(`${file} has no "models" object`);
  }
  return m as ZooManifest;
}

/** True on a big-endian host (the weights file is little-endian). */
function bigEndian(): boolean {
  return new Uint8Array(new Uint16Array([1]).buffer)[0] === 0;
}

/** Where a weights file came from, for error messages. */
export interface WeightsSource {
  /** The weights file (a path or a URL). */
  file: string;
  /** The manifest that records it. */
  manifest: string;
  /** What to do about a file that is not the recorded one. */
  remedy: string;
}

/**
 * The float32 values of every parameter of a zoo model, from its weights file's bytes, checked against its manifest
 * entry: refuses a Git LFS pointer, and bytes whose size or sha256 (`sha256`, hex, computed by the caller) differ from
 * the entry's.
 */
export function zooWeightValues(name: string, entry: ZooEntry, bytes: Uint8Array, sha256: string, source: WeightsSource): Map<string, Float32Array> {
  const { file, manifest, remedy } = source;
  if (new TextDecoder('latin1').decode(bytes.subarray(0, 64)).startsWith('version https://git-lfs')) {
    throw new Error(`${file} is a Git LFS pointer, not the weights of zoo model '${name}': fetch the weights with \`git lfs pull\``);
  }
  if (bytes.length !== entry.bytes || sha256 !== entry.sha256) {
    throw new Error(
      `${file} is not the weights file recorded for zoo model '${name}' in ${manifest}: ` +
        `it has ${bytes.length} bytes and sha256 ${sha256}, the manifest records ${entry.bytes} bytes and sha256 ${entry.sha256}. ` +
        `The file is damaged or was replaced without updating the manifest; ${remedy}`,
    );
  }
  const own = bytes.slice(); // an own, aligned copy
  if (bigEndian()) for (let i = 0; i + 1 < own.length; i += 2) [own[i], own[i + 1]] = [own[i + 1], own[i]];
  const values = fromFloat16(new Uint16Array(own.buffer, 0, own.length >> 1));
  const out = new Map<string, Float32Array>();
  for (const t of entry.tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (t.offset + n > values.length) throw new Error(`${manifest}: tensor '${t.name}' of model '${name}' runs past the end of ${file}`);
    out.set(t.name, values.subarray(t.offset, t.offset + n));
  }
  return out;
}

/**
 * The zoo model whose weights file holds the tensors `name` shares (`entry.shared`), checked: it must be in the
 * manifest with the weights file recorded when `name` was exported (same sha256), so a retrained or replaced base is
 * refused rather than silently mixed in. Returns its name and entry, or undefined for an entry that stores all its
 * tensors. `file` names the manifest in errors.
 */
export function sharedBase(name: string, entry: ZooEntry, manifest: ZooManifest, file: string): { name: string; entry: ZooEntry } | undefined {
  const shared = entry.shared;
  if (!shared) return undefined;
  const base = manifest.models[shared.from];
  if (!base) {
    throw new Error(`${file}: zoo model '${name}' takes ${shared.tensors.length} tensors from zoo model '${shared.from}', which the manifest does not hold; restore it (\`git checkout -- models\`)`);
  }
  if (base.sha256 !== shared.sha256) {
    throw new Error(
      `${file}: zoo model '${name}' takes ${shared.tensors.length} tensors from zoo model '${shared.from}' as exported with sha256 ${shared.sha256}, ` +
        `but '${shared.from}' now has sha256 ${base.sha256} (retrained or replaced); re-export '${name}' from its run, or restore '${shared.from}'`,
    );
  }
  if (base.shared) throw new Error(`${file}: zoo model '${name}' takes tensors from '${shared.from}', which itself takes tensors from '${base.shared.from}'; a model shares with a self-contained one only`);
  return { name: shared.from, entry: base };
}

/**
 * Every parameter of a zoo model: its own values (zooWeightValues of its file) and, for an entry that shares tensors
 * (`entry.shared`), those tensors from its base's values (`baseValues`, zooWeightValues of the base's file).
 */
export function withSharedValues(name: string, entry: ZooEntry, own: Map<string, Float32Array>, baseValues?: ReadonlyMap<string, Float32Array>): Map<string, Float32Array> {
  if (!entry.shared) return own;
  if (!baseValues) throw new Error(`zoo model '${name}' takes tensors from '${entry.shared.from}': its values are needed`);
  const out = new Map(own);
  for (const { name: t, shape } of entry.shared.tensors) {
    const v = baseValues.get(t);
    if (!v) throw new Error(`zoo model '${name}' takes tensor '${t}' from '${entry.shared.from}', which has no tensor of that name`);
    if (v.length !== shape.reduce((a, b) => a * b, 1)) throw new Error(`zoo model '${name}' takes tensor '${t}' of shape [${shape}] from '${entry.shared.from}', which holds ${v.length} values under that name`);
    out.set(t, v);
  }
  return out;
}

/** Every parameter of a zoo model by name and shape: the shared ones (`entry.shared`) first, then its stored ones. */
export function entryTensors(entry: ZooEntry): { name: string; shape: number[] }[] {
  return [...(entry.shared?.tensors ?? []), ...entry.tensors];
}

/** A model built from a zoo entry's config with `values` (zooWeightValues) assigned, every name and shape checked. */
export function zooModelFromValues(name: string, entry: ZooEntry, values: ReadonlyMap<string, Float32Array>): MtpModel {
  const shapes = new Map(entryTensors(entry).map((t) => [t.name, t.shape]));
  const weights = new Map<string, NamedValues>([...values].map(([n, v]) => [n, { shape: shapes.get(n)!, values: v }]));
  const model = createModel(entry.config.model);
  try {
    assignParams(weights, model.params, `zoo model '${name}'`);
  } catch (e) {
    model.dispose();
    throw e;
  }
  return model;
}

/**
 * Bytes → verified model (sha256 through Web Crypto): what the browser lab does with a fetched weights file. For an
 * entry that shares tensors, `base` brings its base's entry, bytes and source (sharedBase says which model).
 */
export async function zooModelFromBytes(
  name: string,
  entry: ZooEntry,
  bytes: Uint8Array,
  source: WeightsSource,
  base?: { name: string; entry: ZooEntry; bytes: Uint8Array; source: WeightsSource },
): Promise<MtpModel> {
  const own = zooWeightValues(name, entry, bytes, await sha256Hex(bytes), source);
  const baseValues = base ? zooWeightValues(base.name, base.entry, base.bytes, await sha256Hex(base.bytes), base.source) : undefined;
  return zooModelFromValues(name, entry, withSharedValues(name, entry, own, baseValues));
}
