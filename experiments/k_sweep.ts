/**
 * k-sweep: quality vs speed across k for every variant, on the code and prose corpora (claims C2, C5,
 * C7, C8 in docs/claims.md).
 *
 * Per corpus, the models: `parallel` heads for each k (k = 1 is the plain next-token model), `sequential`
 * modules for each D, and, on the frozen k = 1 trunk, Medusa-1 heads and the feature drafter (EAGLE-style,
 * `mtp.kind = 'feature'`). By default they are the model zoo's (models/: the `deep` preset, 2,000 steps, every
 * variant on the same trunk shape), so the grid is the zoo's: k = 1, 2, 4, 8, D = 1, 2, 3, Medusa K = 5. With
 * `--train` every model is trained from the same base config (any k or D); `--quick` trains nano models.
 * For every model, same backend and run:
 * - next-token validation loss and per-head top-1 accuracy (fixed validation windows);
 * - lossless self-speculative decoding vs greedy AR: τ, αᵢ, wall-clock speedup (src/eval/speed.ts);
 *   Medusa with a chain of K heads for each K, the tree optimised from measured accuracies and the
 *   63-node sparse tree; the feature drafter with a chain for each k > 1 of the parallel grid and an
 *   EAGLE-2 dynamic tree at the largest k; prompt lookup (no trained drafter) on the k = 1 model;
 * - lossy unverified emission (not for the feature drafter): exact match with greedy, first divergence,
 *   and the NLL of its text under the k = 1 model (bits/token), next to the NLL of the greedy text.
 * Writes results.json/.csv and the figures (HTML + PNG + data) to figures/k_sweep/.
 *
 * Protocol (README, results): prompts of 64 bytes from random positions of the validation split (seeded), 128 new
 * tokens each, 16 prompts, AR and every decoder interleaved 3 times, medians (quick: 2 × 32 bytes, 24 tokens, once).
 *
 *   npx tsx experiments/k_sweep.ts [--quick] [--train] [--corpora=code,prose] [--prompts=…]
 */
import * as path from 'node:path';
import { Config, MTP_DEFAULTS, MtpConfig, resolveConfig } from '../src/config';
import { selfSpeculative } from '../src/decode/decoders';
import { unverifiedGenerate } from '../src/decode/decoders';
import { generate } from '../src/decode/ar';
import { chainTree, optimizeTree, sparseTree } from '../src/decode/tree';
import { LOOKUP_DEFAULTS, PromptLookupDrafter } from '../src/decode/lookup';
import { medusaGenerate } from '../src/decode/decoders';
import { decode } from '../src/decode/engine';
import { evalBatches } from '../src/data/batch';
import { agreement, nllBits } from '../src/eval/quality';
import { compareWithAR, Decoder, SpeedRow } from '../src/eval/speed';
import { expectedTau } from '../src/eval/theory';
import { MedusaModel } from '../src/model/medusa';
import { headRankAccuracies } from '../src/eval/head_accuracy';
import type { FigureWriter } from '../src/plot/write';
import { acceptanceByHead, qualityVsSpeed, tauVsK, trainingCurves, treeFigure } from '../src/plot/figures';
import { declareModels, Experiment, figureWriter, ModelSpec, quickTrain, readCurves, saveResults, startExperiment, TrainedModel, trainOrLoad, valPrompts } from './lib';

export interface SweepRow {
  corpus: string;
  variant: 'parallel' | 'sequential' | 'medusa' | 'feature' | 'lookup';
  /** Heads predicting tokens: parallel k, sequential 1 + D, Medusa 1 + K, feature drafter 1 + depth (draft depth + 1), prompt lookup 1 + drafts. */
  k: number;
  decoder: string;
  nextTokenLoss: number;
  headAcc: number[];
  tau: number;
  alpha: number[];
  speedup: number;
  tokensPerSec: number;
  arTokensPerSec: number;
  identical: boolean;
  /** Median training tokens/s of the model's run (NaN for a zoo model). */
  trainTokensPerSec: number;
  /** The zoo model measured, or '' for a model trained by the experiment. */
  zoo: string;
  /** NLL (bits/token) under the k = 1 model of the greedy text this model writes. */
  greedyNll: number;
  /** Unverified emission with all k heads (lossy); NaN where not applicable. */
  lossyExactMatch: number;
  lossyFirstDivergence: number;
  lossyNll: number;
  lossySpeedup: number;
}

let exp: Experiment;
let quick = false;
let nPrompts = 16;
let promptBytes = 64;
let nTokens = 128;
let runs = 3;

/** What the zoo holds per corpus (the grid when models come from the zoo). */
const ZOO_GRID = { parallel: [1, 2, 4, 8], sequential: [1, 2, 3], medusa: 5 };

/** The k (and D, K) values swept per corpus (flags --parallel, --sequential, --medusa, --prose*). */
function grid(corpus: string): { parallel: number[]; sequential: number[]; medusa: number } {
  if (quick) return { parallel: [1, 2, 4], sequential: [1], medusa: 2 };
  const list = (flag: string, trained: string, zoo: number[]) => {
    const given = exp.args[flag] as string | undefined;
    const values = (given ?? (exp.train ? trained : zoo.join(','))).split(',').map(Number);
    const missing = exp.train ? [] : values.filter((v) => !zoo.includes(v));
    if (missing.length) {
      throw new Error(`--${flag}=${given}: the zoo holds ${flag.toLowerCase().includes('parallel') ? 'parallel k' : 'sequential D'} = ${zoo.join(', ')}, not ${missing.join(', ')}; pick from those, or pass --train to train the grid from scratch`);
    }
    return values;
  };
  const medusa = (exp.args.medusa as number | undefined) ?? ZOO_GRID.medusa;
  if (!exp.train && medusa !== ZOO_GRID.medusa) throw new Error(`--medusa=${medusa}: the zoo's Medusa models have K = ${ZOO_GRID.medusa} heads; pass --train to train other K`);
  return corpus === 'code'
    ? { parallel: list('parallel', '1,2,4,8', ZOO_GRID.parallel), sequential: list('sequential', '1,2,3', ZOO_GRID.sequential), medusa }
    : { parallel: list('proseParallel', '1,4', ZOO_GRID.parallel), sequential: list('proseSequential', '1', ZOO_GRID.sequential), medusa };
}

function configFor(corpus: string, mtp: MtpConfig): Config {
  return quickTrain(exp, resolveConfig(undefined, { model: { ...exp.base.model, mtp }, train: { ...exp.base.train, corpus: corpus as Config['train']['corpus'] } }));
}

/** The models of one corpus: the k = 1 reference, parallel heads per k > 1, modules per D, Medusa-1 heads and the feature drafter on the reference's trunk. */
function models(corpus: string): { reference: ModelSpec; parallel: Map<number, ModelSpec>; sequential: Map<number, ModelSpec>; medusa: ModelSpec; feature: ModelSpec } {
  const g = grid(corpus);
  const reference: ModelSpec = { label: `${corpus}-k1`, config: configFor(corpus, { kind: 'none' }), zoo: `${corpus}-ar` };
  const parallel = new Map(
    g.parallel.map((k) => [k, k === 1 ? reference : { label: `${corpus}-parallel-k${k}`, config: configFor(corpus, { ...MTP_DEFAULTS.parallel, k }), zoo: `${corpus}-parallel-k${k}` }]),
  );
  const sequential = new Map(
    g.sequential.map((depth) => [depth, { label: `${corpus}-sequential-d${depth}`, config: configFor(corpus, { ...MTP_DEFAULTS.sequential, depth }), zoo: `${corpus}-sequential-d${depth}` }]),
  );
  // Medusa-1: fresh heads (W1 = 0, W2 = a copy of the trained LM head) on the frozen, trained k = 1 trunk
  const medusa: ModelSpec = {
    label: `${corpus}-medusa1-K${g.medusa}`,
    config: configFor(corpus, { ...MTP_DEFAULTS.medusa, heads: g.medusa, frozenTrunk: true }),
    initFrom: reference.label,
    zoo: `${corpus}-medusa1-k${g.medusa}`,
  };
  // the feature drafter (EAGLE-style, drafts any depth): trained on the same frozen, trained k = 1 trunk
  const feature: ModelSpec = { label: `${corpus}-feature`, config: configFor(corpus, { ...MTP_DEFAULTS.feature }), initFrom: reference.label, zoo: `${corpus}-feature` };
  return { reference, parallel, sequential, medusa, feature };
}

const rows: SweepRow[] = [];
const curves: { series: string; step: number[]; loss: number[]; kind: 'train' | 'val' }[] = [];
let writer: FigureWriter;

async function measure(corpus: string, variant: SweepRow['variant'], t: TrainedModel, reference: TrainedModel, decoders: { label: string; k: number; decode: Decoder }[], lossyK: number) {
  const prompts = valPrompts(t.val, nPrompts, promptBytes);
  const speed: SpeedRow[] = await compareWithAR(t.model, prompts, decoders, { tokens: nTokens, runs });
  let greedyNll = 0;
  let lossy = { exactMatch: NaN, firstDivergence: NaN, nll: NaN, speedup: NaN };
  const greedy: number[][] = [];
  for (const p of prompts) {
    const g = await generate(t.model.trunk, p, { maxNewTokens: nTokens });
    greedy.push(g.tokens);
    greedyNll += (await nllBits(reference.model.trunk, p, g.tokens)) / prompts.length;
  }
  if (lossyK > 1) {
    lossy = { exactMatch: 0, firstDivergence: 0, nll: 0, speedup: 0 };
    for (let i = 0; i < prompts.length; i++) {
      const u = await unverifiedGenerate(t.model, prompts[i], { maxNewTokens: nTokens, k: lossyK });
      const a = agreement(u.tokens, greedy[i]);
      lossy.exactMatch += a.exactMatch / prompts.length;
      lossy.firstDivergence += a.firstDivergence / prompts.length;
      lossy.nll += (await nllBits(reference.model.trunk, prompts[i], u.tokens)) / prompts.length;
      lossy.speedup += u.stats.tokensPerSec / speed[0].arTokensPerSec / prompts.length;
    }
  }
  decoders.forEach((d, i) => {
    const s = speed[i];
    if (!s.identical) throw new Error(`${corpus} ${variant} ${d.label}: output differs from greedy AR — a lossless decoder is broken`);
    rows.push({
      corpus,
      variant,
      k: d.k,
      decoder: d.label,
      nextTokenLoss: t.eval.heads[0].loss,
      headAcc: t.eval.heads.map((h) => h.acc),
      tau: s.tau,
      alpha: s.alpha,
      speedup: s.speedup,
      tokensPerSec: s.tokensPerSec,
      arTokensPerSec: s.arTokensPerSec,
      identical: s.identical,
      greedyNll,
      lossyExactMatch: i === decoders.length - 1 ? lossy.exactMatch : NaN,
      lossyFirstDivergence: i === decoders.length - 1 ? lossy.firstDivergence : NaN,
      lossyNll: i === decoders.length - 1 ? lossy.nll : NaN,
      lossySpeedup: i === decoders.length - 1 ? lossy.speedup : NaN,
      trainTokensPerSec: t.trainTokensPerSec,
      zoo: t.zoo ?? '',
    });
  });
  const c = readCurves(t.dir);
  if (c.val.length && variant !== 'lookup') curves.push({ series: `${corpus} ${variant} ${t.label}`, step: c.valStep, loss: c.val, kind: 'val' });
}

async function main(): Promise<void> {
  exp = await startExperiment('k_sweep', 'Quality vs speed across k for every MTP variant', (y) =>
    y
      .option('corpora', { type: 'string', default: 'code,prose', describe: 'corpora to sweep' })
      .option('prompts', { type: 'number', describe: 'validation prompts per model [default: 16, quick 2]' })
      .option('promptBytes', { type: 'number', describe: 'tokens per prompt, from random positions of the validation split [default: 64, quick 32]' })
      .option('tokens', { type: 'number', describe: 'tokens generated per prompt [default: 128, quick 24]' })
      .option('runs', { type: 'number', describe: 'timed repetitions [default: 3, quick 1]' })
    .option('parallel', { type: 'string', describe: 'parallel k values (code corpus; k = 1 is the plain model) [default: the zoo’s 1,2,4,8; with --train 1,2,4,8]' })
    .option('sequential', { type: 'string', describe: 'sequential D values (code corpus) [default: the zoo’s 1,2,3; with --train 1,2,3]' })
    .option('medusa', { type: 'number', describe: 'Medusa heads K (chains of 1..K heads, an optimised and a 63-node tree are decoded) [default: 5, the zoo’s]' })
    .option('proseParallel', { type: 'string', describe: 'parallel k values on the prose corpus [default: the zoo’s 1,2,4,8; with --train 1,4]' })
    .option('proseSequential', { type: 'string', describe: 'sequential D values on the prose corpus [default: the zoo’s 1,2,3; with --train 1]' }),
  );
  quick = exp.quick;
  writer = figureWriter(exp);
  nPrompts = (exp.args.prompts as number | undefined) ?? (quick ? 2 : 16);
  promptBytes = (exp.args.promptBytes as number | undefined) ?? (quick ? 32 : 64);
  nTokens = (exp.args.tokens as number | undefined) ?? (quick ? 24 : 128);
  runs = (exp.args.runs as number | undefined) ?? (quick ? 1 : 3);
  const corpora = (exp.args.corpora as string).split(',');
  const specs = corpora.map(models);
  await declareModels(exp, [...new Set(specs.flatMap((m) => [m.reference, ...m.parallel.values(), ...m.sequential.values(), m.medusa, m.feature]))]);
  for (const [c, corpus] of corpora.entries()) {
    const g = grid(corpus);
    const spec = specs[c];
    const reference = await trainOrLoad(exp, spec.reference);
    for (const k of g.parallel) {
      const t = k === 1 ? reference : await trainOrLoad(exp, spec.parallel.get(k)!);
      const label = k === 1 ? 'greedy AR (k = 1)' : `blockwise k=${k}`;
      await measure(corpus, 'parallel', t, reference, [{ label, k, decode: (m, p, n) => selfSpeculative(m, p, { maxNewTokens: n }) }], k);
      if (k !== 1) t.model.dispose();
    }
    for (const depth of g.sequential) {
      const t = await trainOrLoad(exp, spec.sequential.get(depth)!);
      await measure(corpus, 'sequential', t, reference, [{ label: `sequential D=${depth}`, k: 1 + depth, decode: (m, p, n) => selfSpeculative(m, p, { maxNewTokens: n }) }], 1);
      t.model.dispose();
    }
    const K = g.medusa;
    const medusaCfg = spec.medusa.config;
    const medusa = await trainOrLoad(exp, spec.medusa);
    const batches = evalBatches(medusa.val, medusaCfg.train.batchSize, medusaCfg.model.blockSize, 1 + K, medusaCfg.train.evalBatches);
    const accuracies = await headRankAccuracies(medusa.model as MedusaModel, batches, 4);
    const optimised = optimizeTree(accuracies, quick ? 8 : 24);
    const decoders: { label: string; k: number; decode: Decoder }[] = [];
    for (let heads = 1; heads <= K; heads++) {
      decoders.push({ label: `Medusa chain K=${heads}`, k: 1 + heads, decode: (m, p, n) => medusaGenerate(m as MedusaModel, p, { maxNewTokens: n, tree: chainTree(heads) }) });
    }
    decoders.push({ label: `Medusa optimised tree (${optimised.length + 1} nodes)`, k: 1 + K, decode: (m, p, n) => medusaGenerate(m as MedusaModel, p, { maxNewTokens: n, tree: optimised }) });
    if (!quick) {
      const sparse = sparseTree(K); // Medusa's 63-node tree (64 with the root)
      decoders.push({ label: `Medusa sparse tree (${sparse.length + 1} nodes)`, k: 1 + Math.max(...sparse.map((c) => c.length)), decode: (m, p, n) => medusaGenerate(m as MedusaModel, p, { maxNewTokens: n, tree: sparse }) });
    }
    await measure(corpus, 'medusa', medusa, reference, decoders, 1 + K);
    await writer.write(treeFigure(optimised, { accuracies, title: `Medusa tree optimised from measured head accuracies (${corpus}, ${optimised.length + 1} nodes)` }), exp.outDir, `medusa_tree_${corpus}`, { choices: optimised, accuracies });
    medusa.model.dispose();
    // the feature drafter: a chain for each k > 1 of the parallel grid (it drafts any depth), and an EAGLE-2 dynamic
    // tree at the largest k; lossy unverified emission is not measured for it (NaN)
    const feature = await trainOrLoad(exp, spec.feature);
    const featureKs = g.parallel.filter((k) => k > 1);
    const featureDecoders: { label: string; k: number; decode: Decoder }[] = featureKs.map((k) => ({
      label: `feature chain k=${k}`,
      k,
      decode: (m, p, n) => decode(m, m.drafter({ k }), p, { maxNewTokens: n }),
    }));
    if (featureKs.length) {
      const kMax = Math.max(...featureKs);
      const dynamic = { depth: kMax - 1, expand: 4, branch: 4, nodes: 24 };
      featureDecoders.push({ label: `feature dynamic tree k=${kMax} (${dynamic.nodes} nodes)`, k: kMax, decode: (m, p, n) => decode(m, m.drafter({ dynamic }), p, { maxNewTokens: n }) });
      await measure(corpus, 'feature', feature, reference, featureDecoders, 1);
    }
    feature.model.dispose();
    // prompt lookup: drafts copied from the context (no trained drafter), verified by the k = 1 model
    const lookupK = LOOKUP_DEFAULTS.k + 1;
    await measure(corpus, 'lookup', reference, reference, [{ label: `prompt lookup k=${lookupK}`, k: lookupK, decode: (m, p, n) => decode(m, new PromptLookupDrafter({ k: LOOKUP_DEFAULTS.k }), p, { maxNewTokens: n }) }], 1);
    reference.model.dispose();
  }

  saveResults(exp, rows, { models: exp.train ? 'trained' : 'zoo', protocol: { prompts: nPrompts, promptBytes, tokens: nTokens, runs } });
  for (const corpus of corpora) {
    const mine = rows.filter((r) => r.corpus === corpus);
    const points = mine.map((r) => ({ series: r.variant, label: r.decoder.includes('tree') ? `k=${r.k} tree` : `k=${r.k}`, speedup: r.speedup, quality: r.greedyNll, lossless: true }));
    const lossy = mine.filter((r) => Number.isFinite(r.lossyNll)).map((r) => ({ series: `${r.variant} unverified (lossy)`, label: `k=${r.k}`, speedup: r.lossySpeedup, quality: r.lossyNll, lossless: false }));
    await writer.write(
      qualityVsSpeed([...points, ...lossy], { qualityTitle: 'NLL under the k = 1 model (bits/token)', lowerIsBetter: true, title: `Quality vs speed across k (${corpus} corpus, ${exp.backend.name})` }),
      exp.outDir,
      `quality_vs_speed_${corpus}`,
      { points, lossy },
    );
    const chains = mine.filter((r) => !r.decoder.includes('tree'));
    const measured = chains.map((r) => ({ series: r.variant, k: r.k, tau: r.tau }));
    const theory = chains.map((r) => ({ series: r.variant, k: r.k, tau: expectedTau(r.alpha) }));
    await writer.write(tauVsK(measured, theory), exp.outDir, `tau_vs_k_${corpus}`, { measured, theory });
    const widest = ['parallel', 'sequential', 'medusa', 'feature'].map((v) => chains.filter((r) => r.variant === v).sort((a, b) => b.k - a.k)[0]).filter(Boolean);
    const alphaRows = widest.flatMap((r) => r.alpha.map((a, i) => ({ series: `${r.variant} (k=${r.k})`, head: i + 2, alpha: a })));
    await writer.write(acceptanceByHead(alphaRows), exp.outDir, `acceptance_${corpus}`, alphaRows);
    const accRows = widest.flatMap((r) => r.headAcc.map((a, i) => ({ series: `${r.variant} (k=${r.k})`, head: i + 1, alpha: a })));
    await writer.write(acceptanceByHead(accRows, { title: `Top-1 validation accuracy per head (${corpus})`, yTitle: 'top-1 accuracy of head i (predicts x[t+i])' }), exp.outDir, `head_accuracy_${corpus}`, accRows);
    const c = curves.filter((x) => x.series.startsWith(corpus));
    if (c.length) await writer.write(trainingCurves(c), exp.outDir, `training_curves_${corpus}`, c); // trained here: the zoo keeps no curves
  }
  await writer.close();
  console.log(`results and figures: ${path.resolve(exp.outDir)}`);
}

main().catch((e: Error) => {
  console.error(`error: ${e.message}`);
  process.exit(1);
});
