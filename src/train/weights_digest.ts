/**
 * A digest of a model's weights, which data-parallel ranks compare at the end of a run to show that their copies
 * stayed bit-identical. Web Crypto's sha256 (src/util/digest.ts), so Node threads and Web Workers compute the same hex.
 */
import type { MtpModel } from '../model/create';
import { sha256Hex } from '../util/digest';

/** The parameters of a model as host arrays, by name (wasm and cpu read synchronously). */
export function hostParams(model: MtpModel): [string, Float32Array][] {
  return [...model.params].map(([name, v]) => [name, v.dataSync() as Float32Array]);
}

/** sha256 over each parameter's name (UTF-8) then its float32 bytes, in name order: equal on every rank when the weights are. */
export async function weightsDigest(params: Iterable<[string, Float32Array]>): Promise<string> {
  const sorted = [...params].sort((a, b) => (a[0] < b[0] ? -1 : 1));
  const utf8 = new TextEncoder();
  const parts = sorted.flatMap(([name, data]) => [utf8.encode(name), new Uint8Array(data.buffer, data.byteOffset, data.byteLength)]);
  const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    at += p.length;
  }
  return sha256Hex(bytes);
}
