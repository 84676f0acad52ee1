/**
 * Every experiment's --quick mode runs (nano models, a few steps) and writes its files: the resolved
 * config, results as JSON + CSV, and each figure as HTML + PNG + the data that made it. Quick runs
 * write under runs/experiments-quick/, never over the committed results in figures/.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';

const ROOT = path.resolve(__dirname, '..');
const OUT = path.join(ROOT, 'runs', 'experiments-quick');

/** Expected figures per experiment (each as .html, .png and .json). */
const FIGURES: Record<string, string[]> = {
  k_sweep: ['quality_vs_speed_code', 'quality_vs_speed_prose', 'tau_vs_k_code', 'acceptance_code', 'head_accuracy_code', 'training_curves_code', 'medusa_tree_code'],
  train_once: ['tau_once_vs_per_k'],
  theory: ['tau_theory', 'speedup_theory'],
  next_token_quality: ['induction_accuracy'],
};

describe('experiments --quick', () => {
  it(
    'run in order and write config, results and figures',
    () => {
      fs.rmSync(OUT, { recursive: true, force: true });
      const t0 = Date.now();
      const r = spawnSync(path.join(ROOT, 'node_modules', '.bin', 'tsx'), [path.join(ROOT, 'experiments', 'run_all.ts'), '--quick'], {
        cwd: ROOT,
        encoding: 'utf8',
      });
      expect(r.status, `${r.stdout.slice(-2000)}\n${r.stderr.slice(-2000)}`).toBe(0);
      expect(Date.now() - t0).toBeLessThan(6 * 60_000);
      for (const [name, figures] of Object.entries(FIGURES)) {
        const dir = path.join(OUT, name);
        for (const f of ['config.json', 'results.json', 'results.csv']) expect(fs.existsSync(path.join(dir, f)), `${name}/${f}`).toBe(true);
        const results = JSON.parse(fs.readFileSync(path.join(dir, 'results.json'), 'utf8'));
        expect(results.rows.length, `${name} rows`).toBeGreaterThan(0);
        for (const fig of figures) {
          for (const ext of ['html', 'png', 'json']) expect(fs.existsSync(path.join(dir, `${fig}.${ext}`)), `${name}/${fig}.${ext}`).toBe(true);
          const png = fs.readFileSync(path.join(dir, `${fig}.png`));
          expect(png.subarray(1, 4).toString('latin1')).toBe('PNG');
        }
      }
      // lossless decoders were checked identical to greedy AR inside the sweep; the rows say so
      const sweep = JSON.parse(fs.readFileSync(path.join(OUT, 'k_sweep', 'results.json'), 'utf8')).rows as { corpus: string; variant: string; k: number; decoder: string; identical: boolean; lossyNll: number | null }[];
      expect(sweep.every((row) => row.identical)).toBe(true);
      // the feature drafter on the frozen k = 1 trunk: a chain per k > 1 and a dynamic tree at the largest k, all identical to AR, no lossy rows
      for (const corpus of ['code', 'prose']) {
        const feature = sweep.filter((row) => row.corpus === corpus && row.variant === 'feature');
        expect(feature.map((row) => [row.k, row.decoder.includes('dynamic tree')]), corpus).toEqual([[2, false], [4, false], [4, true]]);
        for (const row of feature) {
          expect(row.identical, `${corpus} ${row.decoder}`).toBe(true);
          expect(row.lossyNll ?? NaN).toBeNaN();
        }
      }
    },
    8 * 60_000,
  );
});
