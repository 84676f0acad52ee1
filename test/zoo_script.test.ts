/**
 * `npm run zoo` (experiments/zoo.ts): the dry run lists the 16 reference models and trains nothing; unknown names are
 * refused; a nano zoo of two models (a Medusa-1 model and the AR baseline it starts from, so the Medusa job waits for
 * it) trains in the job pool into a temporary folder, exports both, loads back verified, and a second call finds
 * them trained and leaves the zoo unchanged.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../src/backend/index';
import { listZooModels, loadZooModel } from '../src/zoo/load';
import { readManifest } from '../src/zoo/manifest';

const ROOT = path.resolve(__dirname, '..');
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'mtp-zoo-script-'));
const ZOO = path.join(TMP, 'models');
const RUNS = path.join(TMP, 'runs');
afterAll(() => fs.rmSync(TMP, { recursive: true, force: true }));

function zoo(...args: string[]) {
  return spawnSync(process.execPath, ['--import', 'tsx', path.join(ROOT, 'experiments', 'zoo.ts'), ...args], { cwd: ROOT, encoding: 'utf8', timeout: 240_000 });
}

const NANO = ['--preset=nano', '--train.maxCorpusBytes=100000', `--out=${ZOO}`, `--runs=${RUNS}`];

describe('npm run zoo', () => {
  beforeAll(async () => {
    await initBackend('cpu');
  });

  it('--dry-run lists every reference model and what happens to it, training nothing', () => {
    const r = zoo('--dry-run', `--runs=${RUNS}`, `--out=${ZOO}`);
    expect(r.status, r.stderr).toBe(0);
    const names = [...r.stdout.matchAll(/^ {2}(\S+) /gm)].map((m) => m[1]);
    const per = (c: string) => [`${c}-ar`, `${c}-parallel-k2`, `${c}-parallel-k4`, `${c}-parallel-k8`, `${c}-sequential-d1`, `${c}-sequential-d2`, `${c}-sequential-d3`, `${c}-medusa1-k5`, `${c}-feature`, `${c}-feature-fused`];
    expect(names).toEqual([...per('code'), ...per('prose')]);
    expect(r.stdout).toMatch(/^20 training jobs, \d+ at a time \(preset tiny, 800 steps, backend wasm\)/);
    expect(r.stdout).toMatch(/code-medusa1-k5 .*starts from code-ar's checkpoint, after it \| to train → .*code-medusa1-k5\/weights\.f16/);
    expect(r.stdout).toMatch(/each job runs: npm run mtp -- train .*--mtp\.kind=none .*--train\.steps=800 .*--train\.backend=wasm/);
    expect(fs.existsSync(RUNS)).toBe(false);
    expect(fs.existsSync(ZOO)).toBe(false);

    const few = zoo('--dry-run', '--preset=nano', '--steps=7', '--corpora=prose', '--only=prose-medusa1-k5', `--runs=${RUNS}`);
    expect(few.status, few.stderr).toBe(0);
    expect(few.stdout).toMatch(/^2 training jobs, .*preset nano, 7 steps/);
    expect(few.stdout).toMatch(/prose-ar .*\(not exported: needed by prose-medusa1-k5\)/);
  });

  it('refuses unknown model names and corpora, naming what is allowed', () => {
    const r = zoo('--dry-run', '--only=code-ar,code-k9');
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/--only: unknown model code-k9; the zoo's models: code-ar, code-parallel-k2/);
    const c = zoo('--dry-run', '--corpora=code,poems');
    expect(c.status).toBe(1);
    expect(c.stderr).toMatch(/--corpora: unknown corpus poems; allowed: code, prose/);
  });

  it('trains two nano models in parallel, the Medusa one after its baseline, and exports both', () => {
    const r = zoo(...NANO, '--only=code-ar,code-medusa1-k5', '--jobs=2', '--machine=test box');
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/code-ar +trained in[\s\S]*code-medusa1-k5 +trained in/);
    expect(r.stdout).toMatch(/exported 2 model\(s\) to .*: code-ar, code-medusa1-k5/);
    const list = listZooModels({ dir: ZOO });
    expect(list.map((m) => [m.name, m.kind, m.k, m.steps, m.initFrom])).toEqual([
      ['code-ar', 'none', 1, 20, undefined],
      ['code-medusa1-k5', 'medusa', 6, 20, 'code-ar'],
    ]);
    const manifest = readManifest(ZOO);
    const medusa = manifest.models['code-medusa1-k5'];
    expect(medusa.machine).toBe('test box');
    expect(medusa.command).toMatch(/^npm run mtp -- train .*--mtp\.kind=medusa --mtp\.heads=5 --mtp\.frozenTrunk=true .*--init=.*code-ar\/model\.ckpt$/);
    expect(medusa.config.train.workers).toBe(1);

    // the Medusa-1 trunk is the baseline's (frozen), so their shared float16 tensors are equal
    const ar = loadZooModel('code-ar', { dir: ZOO });
    const m = loadZooModel('code-medusa1-k5', { dir: ZOO });
    for (const [name, v] of ar.model.params) expect(Array.from(m.model.params.get(name)!.dataSync()), name).toEqual(Array.from(v.dataSync()));
    ar.model.dispose();
    m.model.dispose();

    const again = zoo(...NANO, '--only=code-ar,code-medusa1-k5', '--jobs=2', '--machine=other box');
    expect(again.status, again.stderr).toBe(0);
    expect(again.stdout).toMatch(/0 trained, 2 skipped/);
    expect(readManifest(ZOO)).toEqual(manifest); // the record of where they were trained is kept
  }, 240_000);
});
