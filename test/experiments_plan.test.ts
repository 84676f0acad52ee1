/**
 * Experiments declare their models before training any (experiments/lib.ts, declareModels): `--plan=<file>` writes
 * them as pool jobs and exits without training or writing results. The k-sweep's quick plan holds its 12 models, each
 * Medusa-1 model and feature drafter waiting for its corpus's k = 1 model and starting from its checkpoint; train_once declares a subset of
 * the same run folders with the same configs (run_all trains each folder once); experiments that train no run-folder
 * models declare none.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { TrainJob } from '../experiments/jobs';
import { configDifferences } from '../experiments/run_state';

const ROOT = path.resolve(__dirname, '..');
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'mtp-plan-test-'));
afterAll(() => fs.rmSync(TMP, { recursive: true, force: true }));

function plan(name: string, ...args: string[]): TrainJob[] {
  const file = path.join(TMP, `${name}.json`);
  const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(ROOT, 'experiments', `${name}.ts`), '--quick', `--plan=${file}`, `--out=${path.join(TMP, 'out', name)}`, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  expect(r.status, r.stderr).toBe(0);
  expect(fs.existsSync(path.join(TMP, 'out', name)), 'a plan writes no results').toBe(false);
  return (JSON.parse(fs.readFileSync(file, 'utf8')) as { jobs: TrainJob[] }).jobs;
}

describe('experiments --plan', () => {
  it('lists the models each experiment trains, as pool jobs, without training', () => {
    const sweep = plan('k_sweep');
    const labels = (c: string) => [`${c}-k1`, `${c}-parallel-k2`, `${c}-parallel-k4`, `${c}-sequential-d1`, `${c}-medusa1-K2`, `${c}-feature`];
    expect(sweep.map((j) => j.name)).toEqual([...labels('code'), ...labels('prose')].map((l) => `k_sweep/${l}`));
    for (const j of sweep) {
      expect(path.basename(j.dir)).toBe(j.name.split('/')[1]);
      expect(j.config.train.backend).toBe('wasm');
      expect(j.config.train.workers).toBe(1);
    }
    const medusa = sweep.find((j) => j.name === 'k_sweep/prose-medusa1-K2')!;
    expect(medusa.after).toEqual(['k_sweep/prose-k1']);
    expect(medusa.init).toBe(path.join(sweep.find((j) => j.name === 'k_sweep/prose-k1')!.dir, 'model.ckpt'));
    expect(medusa.config.model.mtp).toMatchObject({ kind: 'medusa', heads: 2, frozenTrunk: true });
    for (const c of ['code', 'prose']) {
      // the feature drafter trains on the same frozen k = 1 trunk: it waits for that run and starts from its checkpoint
      const feature = sweep.find((j) => j.name === `k_sweep/${c}-feature`)!;
      const trunk = sweep.find((j) => j.name === `k_sweep/${c}-k1`)!;
      expect(feature.after).toEqual([trunk.name]);
      expect(feature.init).toBe(path.join(trunk.dir, 'model.ckpt'));
      expect(feature.config.model.mtp.kind).toBe('feature');
      expect(feature.config.train.corpus).toBe(c);
      expect(configDifferences(trunk.config, { ...feature.config, model: { ...feature.config.model, mtp: trunk.config.model.mtp } })).toEqual([]);
    }

    const once = plan('train_once');
    expect(once.length).toBe(3);
    for (const j of once) {
      const same = sweep.find((s) => s.dir === j.dir);
      expect(same, j.dir).toBeDefined();
      expect(configDifferences(same!.config, j.config)).toEqual([]);
    }
    expect(plan('theory')).toEqual([]);
  }, 120_000);

  it('refuses --train.backend other than --backend', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', path.join(ROOT, 'experiments', 'theory.ts'), '--quick', '--train.backend=cpu', `--plan=${path.join(TMP, 'x.json')}`], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/--train\.backend=cpu differs from --backend=wasm/);
  });
});
