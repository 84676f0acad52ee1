/**
 * The job pool (experiments/jobs.ts) on nano models: jobs trained two at a time in child processes give checkpoints
 * bit for bit equal to the same jobs one at a time, and to the experiments' serial path (trainOrLoad in this process),
 * including a Medusa job that starts from another job's checkpoint; a job with a bad config fails with its error
 * output while the others finish; finished runs are skipped and reused; job lists and --jobs values are checked.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import yargs from 'yargs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/backend/index';
import { configFromArgs, withConfigOptions } from '../src/cli/options';
import { Config, MTP_DEFAULTS, MtpConfig, resolveConfig } from '../src/config';
import { readCheckpoint } from '../src/train/checkpoint';
import { configArgs } from '../experiments/config_args';
import { defaultJobs, parseJobs, runJobs, TrainJob } from '../experiments/jobs';
import type { Experiment, ModelSpec } from '../experiments/lib';
import { modelJobs, trainOrLoad } from '../experiments/lib';

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'mtp-jobs-test-'));
afterAll(() => fs.rmSync(TMP, { recursive: true, force: true }));

const base = resolveConfig('nano', { train: { maxCorpusBytes: 100_000, steps: 12, evalEvery: 6, backend: 'wasm', workers: 1 } });
const withMtp = (mtp: MtpConfig, train: Partial<Config['train']> = {}): Config => resolveConfig(undefined, { model: { ...base.model, mtp }, train: { ...base.train, ...train } });

/** A stream that keeps what is written (not a terminal). */
function sink(): { write(t: string): boolean; text: () => string } {
  let text = '';
  return { write: (t: string) => ((text += t), true), text: () => text };
}

/** The parameter bytes of a run folder's checkpoint, by tensor name. */
function weights(dir: string): Map<string, Buffer> {
  const ckpt = readCheckpoint(path.join(dir, 'model.ckpt'));
  const out = new Map<string, Buffer>();
  for (const [name, data] of ckpt.tensors) if (name.startsWith('param/')) out.set(name, Buffer.from(data.buffer, data.byteOffset, data.byteLength));
  return out;
}

function expectSameWeights(a: string, b: string): void {
  const wa = weights(a);
  const wb = weights(b);
  expect([...wb.keys()]).toEqual([...wa.keys()]);
  for (const [name, bytes] of wa) expect(bytes.equals(wb.get(name)!), `${name}: ${a} vs ${b}`).toBe(true);
}

describe('configArgs', () => {
  it('gives back every config through the CLI’s own flag parsing', () => {
    const configs = [
      base,
      withMtp({ ...MTP_DEFAULTS.parallel, k: 3, headWeights: [0.5, 0.25, 0.25] }, { eps: 1e-9, lr: 0.0012345678901234, corpus: 'prose' }),
      withMtp({ ...MTP_DEFAULTS.sequential, depth: 2, lambda: 0.3 }, { tokenizer: 'char', backward: 'memory-efficient' }),
      withMtp({ ...MTP_DEFAULTS.medusa, heads: 5, frozenTrunk: false }, { gradClip: 0 }),
      resolveConfig('tiny', { model: { tieEmbeddings: true, normEps: 1e-6 } }),
    ];
    for (const c of configs) {
      const argv = withConfigOptions(yargs(configArgs(c)).parserConfiguration({ 'dot-notation': false, 'camel-case-expansion': false })).strict().parseSync();
      expect(configFromArgs(argv as Record<string, unknown>)).toEqual(c);
    }
  });
});

describe('runJobs', () => {
  const specs: ModelSpec[] = [
    { label: 'ar', config: base },
    { label: 'par2', config: withMtp({ ...MTP_DEFAULTS.parallel, k: 2 }) },
    { label: 'medusa', config: withMtp({ ...MTP_DEFAULTS.medusa, heads: 2, frozenTrunk: true }), initFrom: 'ar' },
  ];
  const experiment = (name: string): Experiment => ({
    name,
    quick: true,
    train: true,
    outDir: path.join(TMP, name),
    workDir: path.join(TMP, name, 'models'),
    backend: { name: 'wasm', platform: 'node', detail: '' },
    base,
    args: {},
    fresh: false,
  });

  beforeAll(async () => {
    await initBackend('wasm');
  });

  it('trains two at a time exactly what one at a time and the serial in-process path train', async () => {
    const parallel = experiment('parallel');
    const out = sink();
    const two = await runJobs(modelJobs(parallel, specs), { jobs: 2, out, intervalMs: 200, handleSignals: false });
    expect(two.ok, out.text()).toBe(true);
    expect(two.results.map((r) => r.status)).toEqual(['trained', 'trained', 'trained']);
    expect(out.text()).toMatch(/3 training jobs, 2 at a time/);
    expect(out.text()).toMatch(/parallel\/medusa +trained in/);
    expect(out.text()).toMatch(/3 jobs, 0 running, 3 trained, 0 skipped in/);

    const one = experiment('one');
    const r1 = await runJobs(modelJobs(one, specs), { jobs: 1, out: sink(), handleSignals: false });
    expect(r1.ok).toBe(true);

    const serial = experiment('serial');
    for (const s of specs) (await trainOrLoad(serial, s)).model.dispose();

    for (const s of specs) {
      expectSameWeights(path.join(parallel.workDir, s.label), path.join(one.workDir, s.label));
      expectSameWeights(path.join(parallel.workDir, s.label), path.join(serial.workDir, s.label));
    }
    // the Medusa-1 trunk is the AR model's, frozen
    const ar = weights(path.join(parallel.workDir, 'ar'));
    const medusa = weights(path.join(parallel.workDir, 'medusa'));
    for (const [name, bytes] of ar) expect(bytes.equals(medusa.get(name)!), name).toBe(true);

    // the experiments reuse what the pool trained: nothing is rewritten
    const ckpt = path.join(parallel.workDir, 'par2', 'model.ckpt');
    const mtime = fs.statSync(ckpt).mtimeMs;
    const reused = await trainOrLoad(parallel, specs[1]);
    reused.model.dispose();
    expect(fs.statSync(ckpt).mtimeMs).toBe(mtime);
    expect(reused.trainTokensPerSec).toBeGreaterThan(0);

    // and the pool skips them
    const again = await runJobs(modelJobs(parallel, specs), { jobs: 2, out: sink(), handleSignals: false });
    expect(again.results.map((r) => r.status)).toEqual(['skipped', 'skipped', 'skipped']);
    expect(fs.statSync(ckpt).mtimeMs).toBe(mtime);
    const job = JSON.parse(fs.readFileSync(path.join(parallel.workDir, 'par2', 'job.json'), 'utf8'));
    expect(job.command).toMatch(/^npm run mtp -- train --model\.vocabSize=256 .*--mtp\.kind=parallel --mtp\.k=2 .*--out=/);
  }, 180_000);

  it('reports a failed job with its error output while the others finish; jobs waiting for it are not run', async () => {
    const bad: Config = { ...base, model: { ...base.model, nHead: 3 } };
    const jobs: TrainJob[] = [
      { name: 'bad', config: bad, dir: path.join(TMP, 'fail', 'bad') },
      { name: 'good', config: base, dir: path.join(TMP, 'fail', 'good') },
      { name: 'after-bad', config: base, dir: path.join(TMP, 'fail', 'after-bad'), after: ['bad'] },
    ];
    const out = sink();
    const r = await runJobs(jobs, { jobs: 2, out, handleSignals: false });
    expect(r.ok).toBe(false);
    const [b, g, a] = r.results;
    expect(g.status).toBe('trained');
    expect(fs.existsSync(path.join(TMP, 'fail', 'good', 'model.ckpt'))).toBe(true);
    expect(b.status).toBe('failed');
    expect(b.error).toMatch(/exit 1 .*end of its output.*train\.log/s);
    expect(b.error).toMatch(/model\.nEmbd \(32\) must be divisible by model\.nHead \(3\)/);
    expect(out.text()).toMatch(/--- bad failed ---[\s\S]*must be divisible by model\.nHead/);
    expect(fs.readFileSync(path.join(TMP, 'fail', 'bad', 'train.log'), 'utf8')).toMatch(/must be divisible/);
    expect(a).toMatchObject({ status: 'failed', error: 'not run: it needs bad, which failed' });
    expect(out.text()).toMatch(/1 trained, 0 skipped, 2 failed in .*; failed: bad, after-bad/);

    // a run folder holding another config is refused unless replace is set, naming the fields
    const other = await runJobs([{ name: 'good', config: { ...base, train: { ...base.train, steps: 13 } }, dir: path.join(TMP, 'fail', 'good') }], { out: sink(), handleSignals: false });
    expect(other.results[0].status).toBe('failed');
    expect(other.results[0].error).toMatch(/holds a checkpoint \(step 12\) of another config:\n {2}- train\.steps: 12 → 13/);
  }, 120_000);

  it('checks job lists and --jobs values before starting anything', async () => {
    const job = (name: string, after?: string[]): TrainJob => ({ name, config: base, dir: path.join(TMP, 'never', name), ...(after ? { after } : {}) });
    const opts = { out: sink(), handleSignals: false };
    await expect(runJobs([job('a'), job('a')], opts)).rejects.toThrow(/two jobs are named 'a'/);
    await expect(runJobs([job('a', ['b'])], opts)).rejects.toThrow(/job 'a' waits for 'b', which is not among the jobs \(a\)/);
    await expect(runJobs([job('a', ['b']), job('b', ['a'])], opts)).rejects.toThrow(/cycle: a → b → a/);
    await expect(runJobs([job('a')], { ...opts, jobs: 0 })).rejects.toThrow(/--jobs must be an integer ≥ 1/);
    expect(fs.existsSync(path.join(TMP, 'never'))).toBe(false);
    for (const bad of ['0', '-2', '1.5', 'x', '']) expect(() => parseJobs(bad), bad).toThrow(/--jobs must be an integer ≥ 1 .*got/);
    expect(parseJobs('3')).toBe(3);
    expect(parseJobs(undefined)).toBe(defaultJobs());
    expect(defaultJobs()).toBe(Math.max(1, os.availableParallelism() - 1));
  });
});
