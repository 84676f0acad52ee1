/**
 * sha256 through Web Crypto (`crypto.subtle`), which browsers, web workers and Node ≥ 20 all provide: what the browser
 * loaders (zoo weights, checkpoint files) check bytes with. Node-only code may use node:crypto's synchronous hash
 * instead; both give the same lowercase hex.
 */

/** Lowercase hex sha256 of `bytes`. */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const subtle = globalThis.crypto?.subtle;
  if (subtle === undefined) {
    throw new Error('sha256: Web Crypto (crypto.subtle) is unavailable here; browsers provide it only in secure contexts (https:// or http://127.0.0.1)');
  }
  const digest = new Uint8Array(await subtle.digest('SHA-256', new Uint8Array(bytes))); // a copy on a plain ArrayBuffer, as digest() wants
  let hex = '';
  for (const b of digest) hex += b.toString(16).padStart(2, '0');
  return hex;
}
