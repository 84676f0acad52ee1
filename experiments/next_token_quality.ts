/**
 * Does multi-token training change next-token quality? (claims C6 and C8 in docs/claims.md.)
 * Gloeckle et al. 2024 report it helps code and induction at scale but hurts small models on
 * natural-language benchmarks; the seed says MTP "improves context understanding".
 *
 * 1. Real corpora: the next-token validation loss of every model in the k-sweep (same trunk config,
 *    same steps and batches = equal training tokens), relative to the k = 1 model (run k_sweep first).
 * 2. Induction (a synthetic task with known answers, src/data/synthetic.ts): a name seen once must be
 *    completed when its first token reappears. k = 1, parallel k = 2 and 4 and sequential D = 1 models
 *    are trained on the same batches; next-token accuracy is scored only where the rule fixes the token.
 *
 *   npx tsx experiments/next_token_quality.ts [--quick]
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { MTP_DEFAULTS, MtpConfig, ModelConfig } from '../src/config';
import { inductionTask, SyntheticBatch } from '../src/data/synthetic';
import { createModel, MtpModel } from '../src/model/create';
import { acceptanceByHead } from '../src/plot/figures';
import { Trainer } from '../src/train/trainer';
import { Rng } from '../src/util/rng';
import { declareModels, figureWriter, saveResults, startExperiment } from './lib';
import type { SweepRow } from './k_sweep';

/** Next-token accuracy at the positions the task's rule determines. */
async function scoredAccuracy(model: MtpModel, batches: SyntheticBatch[]): Promise<number> {
  let hit = 0;
  let total = 0;
  for (const b of batches) {
    const pred = tf.tidy(() => tf.argMax(model.trunk.forward(tf.tensor2d(b.inputs, [b.B, b.T], 'int32')), 2)); // [B, T]
    const p = await pred.data();
    pred.dispose();
    for (let i = 0; i < b.B * b.T; i++) {
      if (!b.scoreMask[i]) continue;
      total += 1;
      if (p[i] === b.targets[i]) hit += 1; // row 0 of targets = next token
    }
  }
  return hit / total;
}

async function main(): Promise<void> {
  const exp = await startExperiment('next_token_quality', 'Next-token quality of MTP-trained trunks vs k = 1', (y) =>
    y.option('inductionSteps', { type: 'number', describe: 'training steps on the induction task [default: 300, quick 20]' }),
  );
  await declareModels(exp, []); // its synthetic-task models train in this process, not in run folders
  const rows: object[] = [];
  const sweepFile = path.join(exp.quick ? path.join('runs', 'experiments-quick', 'k_sweep') : path.join('figures', 'k_sweep'), 'results.json');
  if (fs.existsSync(sweepFile)) {
    const sweep = JSON.parse(fs.readFileSync(sweepFile, 'utf8')).rows as SweepRow[];
    const seen = new Set<string>();
    for (const r of sweep) {
      const key = `${r.corpus} ${r.variant} ${r.k}`;
      if (seen.has(key) || r.decoder.includes('tree')) continue;
      seen.add(key);
      const base = sweep.find((x) => x.corpus === r.corpus && x.variant === 'parallel' && x.k === 1)!;
      rows.push({ task: r.corpus, variant: r.variant, k: r.k, metric: 'next-token val loss (nats)', value: r.nextTokenLoss, vsK1: r.nextTokenLoss - base.nextTokenLoss });
    }
  }

  const task = inductionTask({ vocab: 32, nameLength: 3, names: 2, occurrences: 2, keys: 16 });
  const steps = (exp.args.inductionSteps as number | undefined) ?? (exp.quick ? 20 : 300);
  const model: ModelConfig = { ...exp.base.model, vocabSize: task.vocabSize, blockSize: 48 };
  const variants: { label: string; mtp: MtpConfig }[] = [
    { label: 'k = 1', mtp: { kind: 'none' } },
    { label: 'parallel k = 2', mtp: { ...MTP_DEFAULTS.parallel, k: 2 } },
    { label: 'parallel k = 4', mtp: { ...MTP_DEFAULTS.parallel, k: 4 } },
    { label: 'sequential D = 1', mtp: { ...MTP_DEFAULTS.sequential, depth: 1 } },
  ];
  const valRng = new Rng(99);
  const val = Array.from({ length: 8 }, () => task.sample(valRng, 16, model.blockSize, 5));
  const curves: { series: string; head: number; alpha: number }[] = [];
  for (const v of variants) {
    const m = createModel({ ...model, mtp: v.mtp });
    const trainer = new Trainer(m, { ...exp.base.train, steps, evalBatches: 1 }, { sample: (rng, B, T, k) => task.sample(rng, B, T, k), val: val.slice(0, 1) });
    const checkpoints = exp.quick ? [steps] : [steps / 4, steps / 2, (3 * steps) / 4, steps].map(Math.round);
    for (const at of checkpoints) {
      while (trainer.step < at) await trainer.trainStep();
      const acc = await scoredAccuracy(m, val);
      curves.push({ series: v.label, head: at, alpha: acc });
      if (at === steps) rows.push({ task: 'induction', variant: v.label, k: m.k, metric: 'next-token accuracy where the rule decides', value: acc, vsK1: NaN });
    }
    trainer.dispose();
    m.dispose();
  }
  const k1 = (rows as { task: string; variant: string; value: number; vsK1: number }[]).find((r) => r.task === 'induction' && r.variant === 'k = 1')!;
  for (const r of rows as { task: string; value: number; vsK1: number }[]) if (r.task === 'induction') r.vsK1 = r.value - k1.value;
  saveResults(exp, rows, { steps, task: task.options });
  const writer = figureWriter(exp);
  await writer.write(
    acceptanceByHead(curves, { title: 'Induction: next-token accuracy where the answer is determined, during training', xTitle: 'training step', yTitle: 'accuracy on determined tokens' }),
    exp.outDir,
    'induction_accuracy',
    curves,
  );
  await writer.close();
  console.log(`results and figures: ${path.resolve(exp.outDir)}`);
}

main().catch((e: Error) => {
  console.error(`error: ${e.message}`);
  process.exit(1);
});
