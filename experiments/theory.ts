/**
 * Theory vs measurement (docs/algorithms.md, metrics): does E[τ] = 1 + Σⱼ Πᵢ≤ⱼ αᵢ, computed from the measured
 * per-position acceptances, predict the measured τ? And does Leviathan's walltime formula
 * (1 − α^{γ+1}) / ((1 − α)(γc + 1)) predict the measured speedup, with α the constant acceptance
 * equivalent to the measured αᵢ, γ = k − 1 drafts, and c from the measured cost of a verification
 * forward over k tokens relative to one AR forward (self-drafting: γc + 1 = r_k, so c = (r_k − 1)/γ)?
 *
 * Reads the k-sweep's results (run experiments/k_sweep.ts first) and measures r_k on the models it measured (the
 * zoo's, or those it trained).
 *
 *   npx tsx experiments/theory.ts [--quick] [--corpus=code]
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { equivalentAlpha, expectedTau, walltimeGain } from '../src/eval/theory';
import type { CacheSet } from '../src/model/cache_set';
import type { MtpModel } from '../src/model/create';
import { loadModel } from '../src/train/run';
import { loadZooModel } from '../src/zoo/load';
import { tauVsK } from '../src/plot/figures';
import { declareModels, figureWriter, saveResults, startExperiment, valPrompts } from './lib';
import { loadCorpus, splitTrainVal } from '../src/data/corpus';
import type { SweepRow } from './k_sweep';

type Forward = (tokens: number[], caches: CacheSet) => tf.Tensor;

/** Median ms of one forward over n new tokens on top of the prompt's cache (output read back). */
async function forwardMs(model: MtpModel, run: Forward, prompt: number[], n: number, reps: number): Promise<number> {
  const times: number[] = [];
  for (let r = 0; r < reps + 2; r++) {
    const caches = model.newCaches();
    tf.tidy(() => run(prompt, caches)).dispose();
    const t0 = performance.now();
    const out = tf.tidy(() => run(prompt.slice(0, n), caches));
    await out.data();
    out.dispose();
    if (r >= 2) times.push(performance.now() - t0);
    caches.dispose();
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

async function main(): Promise<void> {
  const exp = await startExperiment('theory', 'Measured τ and speedup against the speculative-decoding formulas', (y) =>
    y.option('corpus', { type: 'string', default: 'code', describe: 'corpus of the k-sweep results to use' }),
  );
  await declareModels(exp, []); // measures the k-sweep's models, trains none
  const sweepDir = exp.quick ? path.join('runs', 'experiments-quick', 'k_sweep') : path.join('figures', 'k_sweep');
  const file = path.join(sweepDir, 'results.json');
  if (!fs.existsSync(file)) throw new Error(`${file} not found: run experiments/k_sweep.ts${exp.quick ? ' --quick' : ''} first`);
  const sweep = (JSON.parse(fs.readFileSync(file, 'utf8')).rows as SweepRow[]).filter(
    (r) => r.corpus === exp.args.corpus && r.variant === 'parallel' && r.k > 1,
  );
  const modelsDir = path.join(exp.quick ? path.join('runs', 'experiments-quick') : path.join('runs', 'experiments'), 'k_sweep', 'models');
  const rows: object[] = [];
  for (const r of sweep) {
    // the model the sweep measured: a zoo model, or the one it trained
    const { model, config } = r.zoo ? loadZooModel(r.zoo) : loadModel(path.join(modelsDir, `${r.corpus}-parallel-k${r.k}`, 'model.ckpt'));
    const corpus = loadCorpus(config.train.corpus, { maxBytes: config.train.maxCorpusBytes || undefined });
    const [prompt] = valPrompts(splitTrainVal(corpus.bytes).val, 1, Math.min(120, config.model.blockSize - r.k)); // cache + k fit the window
    const reps = exp.quick ? 3 : 15;
    const arForward: Forward = (t, c) => model.trunk.forward(tf.tensor2d([t], [1, t.length], 'int32'), { cache: c.trunk });
    const ar = await forwardMs(model, arForward, prompt, 1, reps);
    const verify = await forwardMs(model, (t, c) => model.decodeLogits(t, c), prompt, r.k, reps);
    const cost = verify / ar; // r_k
    const gamma = r.k - 1;
    const alpha = equivalentAlpha(r.alpha);
    const c = (cost - 1) / gamma;
    rows.push({
      k: r.k,
      alpha: r.alpha,
      alphaConstant: alpha,
      tauMeasured: r.tau,
      tauTheory: expectedTau(r.alpha),
      verifyCost: cost,
      c,
      speedupMeasured: r.speedup,
      speedupTheory: walltimeGain(alpha, gamma, c),
    });
    model.dispose();
  }
  saveResults(exp, rows, { corpus: exp.args.corpus });
  const typed = rows as { k: number; tauMeasured: number; tauTheory: number; speedupMeasured: number; speedupTheory: number }[];
  const writer = figureWriter(exp);
  await writer.write(
    tauVsK(
      typed.map((r) => ({ series: 'parallel', k: r.k, tau: r.tauMeasured })),
      typed.map((r) => ({ series: 'parallel', k: r.k, tau: r.tauTheory })),
      { title: `Measured τ vs E[τ] from measured αᵢ (parallel heads, ${exp.args.corpus})` },
    ),
    exp.outDir,
    'tau_theory',
    typed,
  );
  await writer.write(
    tauVsK(
      typed.map((r) => ({ series: 'parallel', k: r.k, tau: r.speedupMeasured })),
      typed.map((r) => ({ series: 'parallel', k: r.k, tau: r.speedupTheory })),
      { title: `Speedup: measured (markers) vs Leviathan's walltime formula with measured c (dashed), ${exp.args.corpus}`, yTitle: 'wall-clock speedup vs greedy AR (×)', ideal: false },
    ),
    exp.outDir,
    'speedup_theory',
    typed,
  );
  await writer.close();
  console.log(`results and figures: ${path.resolve(exp.outDir)}`);
}

main().catch((e: Error) => {
  console.error(`error: ${e.message}`);
  process.exit(1);
});
