/**
 * Nothing lost, nothing silent (library level, cpu backend): checkpoint integrity (sha256 per part, the previous
 * checkpoint kept and named), stale temporary files, the run lock, resume checks, the metrics log, stop requests,
 * the memory estimate, prompt token ids. The CLI, full disks, read-only file systems and random kills are in
 * test/cli_faults.test.ts.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/index';
import { Config, MTP_DEFAULTS, resolveConfig } from '../src/config';
import { generate } from '../src/decode/ar';
import { createModel } from '../src/model/create';
import { previousCheckpointPath, readCheckpoint, saveCheckpoint, trainerStateOf } from '../src/train/checkpoint';
import { checkFits, trainingMemory, WASM_HEAP_MAX } from '../src/train/memory';
import { MetricsLog } from '../src/train/metrics_log';
import { trainRun } from '../src/train/run';
import { LOCK_FILE, RunLock } from '../src/train/run_lock';
import { makeDir, writeFileDurable } from '../src/util/files';

const cfg = resolveConfig('nano', { train: { corpus: 'prose', maxCorpusBytes: 20_000, steps: 6, evalEvery: 2 } });

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'mtp-faults-'));
}

/** Flips one byte of `file` at `offset` (negative: from the end). */
function flip(file: string, offset: number): void {
  const buf = fs.readFileSync(file);
  const at = offset < 0 ? buf.length + offset : offset;
  buf[at] ^= 0x5a;
  fs.writeFileSync(file, buf);
}

/** Flips a byte inside the first parameter tensor of a checkpoint file. */
function flipWeight(file: string): void {
  const ckpt = readCheckpoint(file);
  const dataStart = fs.statSync(file).size - 4 * ckpt.header.tensors.reduce((a, t) => a + t.length, 0);
  flip(file, dataStart + 4 * (ckpt.header.tensors[0].offset + 3));
}

/** Byte offset where a version-2 checkpoint's header JSON starts. */
function headerStart(file: string): number {
  const buf = fs.readFileSync(file);
  return buf.indexOf(10) + 1 + 4 + 32;
}

async function trainedRun(dir: string, config: Config = cfg): Promise<void> {
  const r = await trainRun({ config, outDir: dir });
  r.model.dispose();
}

describe('checkpoint integrity', () => {
  let dir: string;
  let file: string;

  beforeAll(async () => {
    await initBackend('cpu');
    dir = tmpDir();
    await trainedRun(dir); // checkpoints at steps 2, 4, 6: model.ckpt = 6, model.prev.ckpt = 4
    file = path.join(dir, 'model.ckpt');
  }, 60_000);

  const copy = (name: string) => {
    const d = tmpDir();
    fs.copyFileSync(file, path.join(d, 'model.ckpt'));
    fs.copyFileSync(previousCheckpointPath(file), path.join(d, 'model.prev.ckpt'));
    return path.join(d, name);
  };

  it('keeps the last two checkpoints', () => {
    expect(readCheckpoint(file).header.step).toBe(6);
    expect(readCheckpoint(previousCheckpointPath(file)).header.step).toBe(4);
  });

  it('refuses flipped weight bytes, naming the part and the previous checkpoint', () => {
    const f = copy('model.ckpt');
    flipWeight(f);
    expect(() => readCheckpoint(f)).toThrow(/is corrupt: its weights \(the parameter tensors\) fail their sha256 check\. The previous checkpoint .*model\.prev\.ckpt \(step 4\) is intact/);
  });

  it('loads the weights but refuses to resume when the optimiser state is damaged', () => {
    const f = copy('model.ckpt');
    flip(f, -10); // the last bytes are Adam moments
    const ckpt = readCheckpoint(f);
    expect(ckpt.tensors.size).toBeGreaterThan(0);
    expect(() => trainerStateOf(ckpt, f)).toThrow(/optimiser state \(Adam moments\) fails its sha256 check, so it cannot be resumed/);
  });

  it('refuses a damaged header and a damaged header-length field with clear messages', () => {
    const f = copy('model.ckpt');
    flip(f, headerStart(f) + 20);
    expect(() => readCheckpoint(f)).toThrow(/is corrupt: its header \(config, tokenizer, tensor table\) fails its sha256 check/);
    const g = copy('model.ckpt');
    flip(g, fs.readFileSync(g).indexOf(10) + 4); // the length's most significant byte
    expect(() => readCheckpoint(g)).toThrow(/header-length field says \d+ bytes but only \d+ follow/);
  });

  it('says when no previous checkpoint is kept, and names a folder passed as a checkpoint', () => {
    const d = tmpDir();
    const f = path.join(d, 'model.ckpt');
    fs.copyFileSync(file, f);
    flipWeight(f);
    expect(() => readCheckpoint(f)).toThrow(/No previous checkpoint is kept beside it/);
    expect(() => readCheckpoint(d)).toThrow(/is a folder; pass the checkpoint file inside it/);
  });

  it('still reads format 1 (no hashes)', () => {
    const ckpt = readCheckpoint(file);
    const { sha256: _drop, ...header } = ckpt.header;
    const json = Buffer.from(JSON.stringify(header));
    const len = Buffer.alloc(4);
    len.writeUInt32LE(json.length);
    const buf = fs.readFileSync(file);
    const data = buf.subarray(headerStart(file) + buf.readUInt32LE(buf.indexOf(10) + 1));
    const v1 = path.join(tmpDir(), 'old.ckpt');
    fs.writeFileSync(v1, Buffer.concat([Buffer.from('MTPLAB-CKPT 1\n'), len, json, data]));
    const old = readCheckpoint(v1);
    expect(old.header.step).toBe(6);
    for (const [name, t] of ckpt.tensors) expect(Buffer.from(old.tensors.get(name)!.buffer, old.tensors.get(name)!.byteOffset, t.byteLength).equals(Buffer.from(t.buffer, t.byteOffset, t.byteLength))).toBe(true);
  });
});

describe('durable writes', () => {
  it('a write error leaves the old file, no temp file, and names path and cause', () => {
    const dir = tmpDir();
    const file = path.join(dir, 'a.txt');
    writeFileDurable(file, 'old');
    expect(() =>
      writeFileDurable(file, 'new', () => {
        throw Object.assign(new Error('no space left on device'), { code: 'ENOSPC' });
      }),
    ).toThrow(`could not write ${file}: the disk is full (ENOSPC)`);
    expect(fs.readFileSync(file, 'utf8')).toBe('old');
    expect(fs.readdirSync(dir)).toEqual(['a.txt']);
  });

  it('makeDir fails with a message where Node’s recursive mkdir would never return (/proc)', () => {
    expect(() => makeDir('/proc/mtp-lab-test/run', 'the run folder')).toThrow(/could not create the run folder \/proc\/mtp-lab-test\/run: no such file or folder \(ENOENT\)/);
    const f = path.join(tmpDir(), 'file');
    fs.writeFileSync(f, '');
    expect(() => makeDir(path.join(f, 'sub'))).toThrow(/a part of the path is a file, not a folder \(ENOTDIR\)/);
  });
});

describe('runs', () => {
  beforeAll(async () => {
    await initBackend('cpu');
  });

  it('removes temporary files left by killed writers at the next start', async () => {
    const dir = tmpDir();
    await trainedRun(dir);
    for (const f of ['model.ckpt.99999.tmp', 'metrics.jsonl.4242.tmp']) fs.writeFileSync(path.join(dir, f), 'partial');
    fs.writeFileSync(path.join(dir, 'notes.txt.1.tmp'), 'not ours'); // only the run's own files are cleaned
    const notices: string[] = [];
    const r = await trainRun({ config: { ...cfg, train: { ...cfg.train, steps: 8 } }, outDir: dir, resume: true, onNotice: (m) => notices.push(m) });
    r.model.dispose();
    expect(notices.join('\n')).toMatch(/removed 2 temporary file\(s\)/);
    expect(fs.readdirSync(dir).sort()).toEqual(['config.json', 'metrics.jsonl', 'model.ckpt', 'model.prev.ckpt', 'notes.txt.1.tmp']);
  }, 60_000);

  it('a run lock refuses a second writer, names it, takes over a stale lock and is released after the run', async () => {
    const dir = tmpDir();
    const sleeper = spawn('sleep', ['30']);
    try {
      fs.writeFileSync(path.join(dir, LOCK_FILE), JSON.stringify({ pid: sleeper.pid, host: os.hostname(), started: 'earlier' }));
      await expect(trainRun({ config: cfg, outDir: dir })).rejects.toThrow(new RegExp(`run folder ${dir} is in use by PID ${sleeper.pid}`));
      fs.writeFileSync(path.join(dir, LOCK_FILE), JSON.stringify({ pid: sleeper.pid, host: 'another-host', started: 'earlier' }));
      await expect(trainRun({ config: cfg, outDir: dir })).rejects.toThrow(/in use by PID \d+ on host another-host/);
    } finally {
      sleeper.kill();
    }
    await new Promise((resolve) => sleeper.once('exit', resolve));
    fs.writeFileSync(path.join(dir, LOCK_FILE), JSON.stringify({ pid: sleeper.pid, host: os.hostname(), started: 'earlier' })); // its process is gone
    await trainedRun(dir);
    expect(fs.existsSync(path.join(dir, LOCK_FILE))).toBe(false);
    const held = RunLock.acquire(dir);
    expect(() => RunLock.acquire(dir)).toThrow(/already in use by this process/);
    held.release();
  }, 60_000);

  it('resume refuses another corpus, tokenizer or batch size, naming each field; notes other changed settings', async () => {
    const dir = tmpDir();
    await trainedRun(dir);
    const other = resolveConfig('nano', { train: { ...cfg.train, corpus: 'code', batchSize: 8, steps: 10 } });
    await expect(trainRun({ config: other, outDir: dir, resume: true })).rejects.toThrow(
      /trained with other settings:\n {2}- train\.corpus: checkpoint has "prose", requested "code"\n {2}- train\.batchSize: checkpoint has 4, requested 8/,
    );
    const char = resolveConfig('nano', { train: { ...cfg.train, tokenizer: 'char' } });
    await expect(trainRun({ config: char, outDir: dir, resume: true })).rejects.toThrow(/model\.vocabSize: checkpoint has 256, requested \d+[\s\S]*train\.tokenizer: checkpoint has "byte", requested "char"/);
    const notices: string[] = [];
    const longer = await trainRun({ config: { ...cfg, train: { ...cfg.train, steps: 8, lr: 1e-3 } }, outDir: dir, resume: true, onNotice: (m) => notices.push(m) });
    longer.model.dispose();
    expect(notices.join('\n')).toMatch(/resuming with changed training settings: train\.steps: 6 → 8, train\.lr: 0\.003 → 0\.001/);
  }, 60_000);

  it('--resume with --overwrite is an error; an --overwrite run killed before its first checkpoint cannot resume the old weights', async () => {
    const dir = tmpDir();
    await trainedRun(dir);
    await expect(trainRun({ config: cfg, outDir: dir, resume: true, overwrite: true })).rejects.toThrow(/--resume and --overwrite contradict each other/);
    const crash = () => {
      throw new Error('killed');
    };
    await expect(trainRun({ config: cfg, outDir: dir, overwrite: true, onStep: crash })).rejects.toThrow('killed');
    await expect(trainRun({ config: cfg, outDir: dir, resume: true })).rejects.toThrow(/--resume: no checkpoint at/);
  }, 60_000);

  it('resume drops metrics lines past the checkpoint and repairs a torn last line; a damaged middle line is named', async () => {
    const dir = tmpDir();
    await trainedRun(dir);
    const log = path.join(dir, 'metrics.jsonl');
    fs.appendFileSync(log, JSON.stringify({ type: 'train', step: 7 }) + '\n{"type":"train","st');
    const notices: string[] = [];
    const r = await trainRun({ config: { ...cfg, train: { ...cfg.train, steps: 8 } }, outDir: dir, resume: true, onNotice: (m) => notices.push(m) });
    r.model.dispose();
    expect(notices.join('\n')).toMatch(/dropped a torn last line[\s\S]*dropped 1 line\(s\) of steps after the checkpoint's step 6/);
    const rows = fs.readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { type: string; step: number });
    expect(rows.filter((x) => x.type === 'train').map((x) => x.step)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    const lines = fs.readFileSync(log, 'utf8').split('\n');
    lines[2] = '{oops';
    fs.writeFileSync(log, lines.join('\n'));
    expect(() => new MetricsLog(log).truncateAfter(8)).toThrow(new RegExp(`${log} line 3 is not valid JSON`));
  }, 60_000);

  it('a stop request ends the run after the current step with a checkpoint; resuming equals the uninterrupted run', async () => {
    const straight = await trainRun({ config: cfg, outDir: tmpDir() });
    const dir = tmpDir();
    const stop = new AbortController();
    const first = await trainRun({ config: cfg, outDir: dir, signal: stop.signal, onStep: (s) => s.step === 3 && stop.abort('SIGTERM') });
    expect(first.stopped).toBe('SIGTERM');
    expect(first.steps).toBe(3);
    expect(readCheckpoint(path.join(dir, 'model.ckpt')).header.step).toBe(3);
    first.model.dispose();
    const resumed = await trainRun({ config: cfg, outDir: dir, resume: true });
    const a = readCheckpoint(straight.checkpoint);
    const b = readCheckpoint(resumed.checkpoint);
    expect(b.header.sha256).toEqual(a.header.sha256); // weights and Adam moments bit for bit
    expect(resumed.val!.loss).toBe(straight.val!.loss);
    straight.model.dispose();
    resumed.model.dispose();
  }, 60_000);

  it('the built model and resolved vocabulary are reported (char tokenizer: not 256)', async () => {
    const char = resolveConfig('nano', { train: { ...cfg.train, tokenizer: 'char', steps: 1 } });
    let seen: { vocab: number; params: number } | undefined;
    const r = await trainRun({
      config: char,
      outDir: tmpDir(),
      onStart: ({ config, model }) => (seen = { vocab: config.model.vocabSize, params: [...model.params.values()].reduce((a, v) => a + v.size, 0) }),
    });
    expect(seen!.vocab).toBe(r.tokenizer.vocabSize);
    expect(seen!.vocab).toBeLessThan(256);
    expect(seen!.params).toBe(r.model.trainableVariables().reduce((a, v) => a + v.size, 0));
    r.model.dispose();
  }, 60_000);
});

describe('inputs', () => {
  beforeAll(async () => {
    await initBackend('cpu');
  });
  afterAll(() => tf.disposeVariables());

  it('a config that cannot fit in memory is refused with the numbers, unless overridden', () => {
    const huge = resolveConfig('nano', { model: { mtp: { ...MTP_DEFAULTS.parallel, k: 1000 } } });
    const e = trainingMemory(huge);
    expect(e.params).toBeGreaterThan(12e6);
    expect(e.total).toBeGreaterThan(WASM_HEAP_MAX);
    expect(() => checkFits(huge, 'wasm')).toThrow(/needs about [\d.]+ GB to train, more than 2\.1 GB \(what the wasm backend can address: 2 GiB\)[\s\S]*--allow-large/);
    expect(() => checkFits(huge, 'wasm', true)).not.toThrow();
    expect(() => checkFits(resolveConfig('tiny'), 'wasm')).not.toThrow();
    const bigBatch = resolveConfig('small', { train: { batchSize: 100_000 } });
    expect(() => checkFits(bigBatch, 'cpu')).toThrow(/80 % of this machine’s/);
  });

  it('prompt token ids must be integers in the vocabulary', async () => {
    const model = createModel(cfg.model);
    await expect(generate(model, [1, 1.5], { maxNewTokens: 2 })).rejects.toThrow(/prompt token 1\.5 is outside the vocabulary \[0, 256\)/);
    await expect(generate(model, [300], { maxNewTokens: 2 })).rejects.toThrow(/prompt token 300 is outside the vocabulary \[0, 256\)/);
    model.dispose();
  });
});

it('saveCheckpoint keeps a previous version only when asked to', async () => {
  await initBackend('cpu');
  const dir = tmpDir();
  const file = path.join(dir, 'w.ckpt');
  const model = createModel(cfg.model);
  await saveCheckpoint(file, { config: cfg, tokenizer: { kind: 'byte' }, step: 1 }, model.params);
  await saveCheckpoint(file, { config: cfg, tokenizer: { kind: 'byte' }, step: 2 }, model.params, undefined, { keepPrevious: false });
  expect(fs.readdirSync(dir)).toEqual(['w.ckpt']);
  await saveCheckpoint(file, { config: cfg, tokenizer: { kind: 'byte' }, step: 3 }, model.params);
  expect(fs.readdirSync(dir).sort()).toEqual(['w.ckpt', 'w.prev.ckpt']);
  expect(readCheckpoint(path.join(dir, 'w.prev.ckpt')).header.step).toBe(2);
  model.dispose();
});
