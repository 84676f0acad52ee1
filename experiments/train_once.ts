/**
 * Train once or train per k? The cheap sweep decodes one model trained with the most heads using only
 * its first k heads; the honest sweep trains a separate model per k. Same corpus, steps and decoding
 * setup; τ and wall-clock speedup side by side (and next-token loss: extra heads change the trunk).
 *
 * The models are the zoo's (parallel k = 1, 2, 4, 8 of the `deep` preset) unless `--train`; trained models are
 * shared with the k-sweep (same model folder and configs), so running k_sweep first makes this experiment
 * decode-only.
 *
 *   npx tsx experiments/train_once.ts [--quick] [--corpus=code]
 */
import * as path from 'node:path';
import { Config, MTP_DEFAULTS, MtpConfig, resolveConfig } from '../src/config';
import { selfSpeculative } from '../src/decode/decoders';
import { compareWithAR } from '../src/eval/speed';
import { tauVsK } from '../src/plot/figures';
import { declareModels, figureWriter, ModelSpec, quickTrain, saveResults, startExperiment, trainOrLoad, valPrompts } from './lib';

async function main(): Promise<void> {
  const exp = await startExperiment('train_once', 'Decoding a k_max-head model with its first k heads vs models trained per k', (y) =>
    y.option('corpus', { type: 'string', default: 'code', describe: 'corpus' }),
  );
  exp.workDir = path.join(path.dirname(path.dirname(exp.workDir)), 'k_sweep', 'models'); // share the k-sweep's models
  const corpus = exp.args.corpus as Config['train']['corpus'];
  const ks = exp.quick ? [1, 2, 4] : [1, 2, 4, 8]; // the k-sweep's parallel models, reused
  const kMax = ks[ks.length - 1];
  const configFor = (mtp: MtpConfig): Config =>
    quickTrain(exp, resolveConfig(undefined, { model: { ...exp.base.model, mtp }, train: { ...exp.base.train, corpus } }));
  const opts = { tokens: exp.quick ? 24 : 128, runs: exp.quick ? 1 : 3 };
  const perK = new Map<number, ModelSpec>(
    ks.map((k) => [
      k,
      {
        label: k === 1 ? `${corpus}-k1` : `${corpus}-parallel-k${k}`,
        config: configFor(k === 1 ? { kind: 'none' } : { ...MTP_DEFAULTS.parallel, k }),
        zoo: k === 1 ? `${corpus}-ar` : `${corpus}-parallel-k${k}`,
      },
    ]),
  );
  await declareModels(exp, [...perK.values()]);
  const once = await trainOrLoad(exp, perK.get(kMax)!);
  const prompts = valPrompts(once.val, exp.quick ? 2 : 16, exp.quick ? 32 : 64); // the k-sweep's protocol
  const rows: object[] = [];
  const onceRows = await compareWithAR(
    once.model,
    prompts,
    ks.map((k) => ({ label: `first ${k} of ${kMax} heads`, decode: (m, p, n) => selfSpeculative(m, p, { maxNewTokens: n, k }) })),
    opts,
  );
  onceRows.forEach((r, i) => rows.push({ sweep: `train once (k=${kMax})`, k: ks[i], nextTokenLoss: once.eval.heads[0].loss, ...r }));
  for (const k of ks) {
    const t = k === kMax ? once : await trainOrLoad(exp, perK.get(k)!);
    const [r] = await compareWithAR(t.model, prompts, [{ label: `trained with k=${k}`, decode: (m, p, n) => selfSpeculative(m, p, { maxNewTokens: n }) }], opts);
    rows.push({ sweep: 'train per k', k, nextTokenLoss: t.eval.heads[0].loss, ...r });
    if (t !== once) t.model.dispose();
  }
  for (const r of rows as { identical: boolean; label: string }[]) {
    if (!r.identical) throw new Error(`${r.label}: output differs from greedy AR — a lossless decoder is broken`);
  }
  saveResults(exp, rows, { corpus, kMax });
  const typed = rows as { sweep: string; k: number; tau: number; speedup: number }[];
  const measured = typed.map((r) => ({ series: r.sweep, k: r.k, tau: r.tau }));
  const writer = figureWriter(exp);
  await writer.write(tauVsK(measured, [], { title: `Train once (k=${kMax}, first k heads) vs train per k: τ (${corpus})` }), exp.outDir, 'tau_once_vs_per_k', typed);
  await writer.close();
  once.model.dispose();
  console.log(`results and figures: ${path.resolve(exp.outDir)}`);
}

main().catch((e: Error) => {
  console.error(`error: ${e.message}`);
  process.exit(1);
});
