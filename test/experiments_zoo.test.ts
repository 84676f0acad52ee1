/**
 * The experiments load the model zoo's trained models by default (`--train` trains from scratch; `--quick` always
 * trains nano models, see experiments.test.ts). A one-corpus k-sweep on a small grid and a short protocol: every row
 * names the zoo model it measured, every lossless decoder matched greedy AR, the results record where the models
 * came from and the protocol; a k the zoo does not hold is refused with what it holds.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '..');
const TSX = path.join(ROOT, 'node_modules', '.bin', 'tsx');
const OUT = fs.mkdtempSync(path.join(os.tmpdir(), 'mtp-k-sweep-zoo-'));
afterAll(() => fs.rmSync(OUT, { recursive: true, force: true }));

function kSweep(...flags: string[]) {
  return spawnSync(TSX, [path.join(ROOT, 'experiments', 'k_sweep.ts'), '--corpora=code', '--prompts=1', '--promptBytes=32', '--tokens=16', '--runs=1', `--out=${OUT}`, ...flags], {
    cwd: ROOT,
    encoding: 'utf8',
  });
}

describe('k-sweep on the zoo', () => {
  it(
    'measures the zoo models of every variant, lossless, and records where they came from',
    () => {
      const r = kSweep('--parallel=1,2', '--sequential=1');
      expect(r.status, `${r.stdout.slice(-2000)}\n${r.stderr.slice(-2000)}`).toBe(0);
      const results = JSON.parse(fs.readFileSync(path.join(OUT, 'results.json'), 'utf8'));
      expect(results.models).toBe('zoo');
      expect(results.protocol).toEqual({ prompts: 1, promptBytes: 32, tokens: 16, runs: 1 });
      const rows = results.rows as { variant: string; k: number; decoder: string; zoo: string; identical: boolean; tau: number }[];
      const zooOf = (variant: string) => [...new Set(rows.filter((x) => x.variant === variant).map((x) => x.zoo))];
      expect(zooOf('parallel')).toEqual(['code-ar', 'code-parallel-k2']);
      expect(zooOf('sequential')).toEqual(['code-sequential-d1']);
      expect(zooOf('medusa')).toEqual(['code-medusa1-k5']);
      expect(zooOf('feature')).toEqual(['code-feature']);
      expect(zooOf('lookup')).toEqual(['code-ar']);
      // Medusa: chains of 1..5 heads, the optimised tree and the 63-node sparse tree
      expect(rows.filter((x) => x.variant === 'medusa').map((x) => x.decoder.replace(/\(\d+ nodes\)/, '(n)'))).toEqual([
        ...[1, 2, 3, 4, 5].map((K) => `Medusa chain K=${K}`),
        'Medusa optimised tree (n)',
        'Medusa sparse tree (n)',
      ]);
      expect(rows.find((x) => x.decoder.startsWith('Medusa sparse'))!.decoder).toContain('(64 nodes)');
      for (const row of rows) {
        expect(row.identical, row.decoder).toBe(true);
        expect(row.tau, row.decoder).toBeGreaterThanOrEqual(1);
      }
      // no training curves: the zoo keeps weights only
      expect(fs.existsSync(path.join(OUT, 'training_curves_code.png'))).toBe(false);
      expect(fs.existsSync(path.join(OUT, 'quality_vs_speed_code.png'))).toBe(true);
    },
    5 * 60_000,
  );

  it('refuses a k or a Medusa K the zoo does not hold, saying what it holds', () => {
    const r = kSweep('--parallel=1,3');
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/--parallel=1,3: the zoo holds parallel k = 1, 2, 4, 8, not 3; .*--train/);
    const m = kSweep('--medusa=3');
    expect(m.status).not.toBe(0);
    expect(m.stderr).toMatch(/--medusa=3: the zoo's Medusa models have K = 5 heads; pass --train/);
  }, 60_000);
});
