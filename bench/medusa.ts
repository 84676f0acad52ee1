/**
 * Medusa tree decoding on the tiny code model (wasm): τ and wall-clock speedup over greedy AR for
 * the chain, dense, 63-node sparse and optimised trees, all in one run on the same prompts.
 *
 * 1. base: the plain tiny code model from --base (trained there with preset tiny when it holds no checkpoint);
 * 2. Medusa-1: K heads on the frozen trunk, trained --steps steps on the code corpus (or, with
 *    --data=distill, on the base model's own greedy continuations of corpus prompts);
 * 3. per-head rank accuracies on the validation split (with --data=distill: on the model's continuations
 *    of validation prompts) → optimizeTree with 63 nodes, and with the node
 *    count that maximises predicted τ ÷ measured forward cost on this machine;
 * 4. every decoder on the same validation prompts, median tokens/s of --runs runs, τ and αᵢ; greedy
 *    tree outputs are checked against AR.
 *
 *   npm run bench:medusa -- --steps=600 --runs=5
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../src/backend/index';
import { MTP_DEFAULTS, resolveConfig } from '../src/config';
import { evalBatches, splitTrainVal } from '../src/data/batch';
import { generate } from '../src/decode/ar';
import { medusaGenerate } from '../src/decode/decoders';
import { chainTree, denseTree, expectedAccepted, optimizeTree, sparseTree, TreeChoices } from '../src/decode/tree';
import { MedusaModel } from '../src/model/medusa';
import { headRankAccuracies } from '../src/eval/head_accuracy';
import { CHECKPOINT_FILE, loadModel, prepareData, trainRun } from '../src/train/run';
import { selfDistillTokens } from '../src/train/self_distill';
import { Trainer } from '../src/train/trainer';
import { progressBar } from '../src/cli/progress';
import { machine, markdownTable, median, writeResults } from './common';

interface Decoder {
  name: string;
  nodes: number;
  predictedTau?: number;
  run: (prompt: number[]) => Promise<{ tokens: number[]; stats: { newTokens: number; forwards: number; ms: number; attempts?: number[]; accepts?: number[] } }>;
}

const fmt = (x: number, d = 2) => (Number.isFinite(x) ? x.toFixed(d) : '-');

async function main() {
  const argv = yargs(hideBin(process.argv))
    .option('base', { type: 'string', default: 'runs/medusa-base', describe: 'run folder of the plain tiny code model; trained there when it holds no checkpoint' })
    .option('baseSteps', { type: 'number', default: 800, describe: 'training steps of the base model when it is trained here' })
    .option('heads', { type: 'number', default: 4, describe: 'K Medusa heads' })
    .option('steps', { type: 'number', default: 600, describe: 'Medusa-1 training steps (heads only)' })
    .option('lr', { type: 'number', default: 3e-3, describe: 'peak learning rate of the heads' })
    .option('data', { type: 'string', choices: ['corpus', 'distill'], default: 'corpus', describe: 'train the heads on the code corpus, or on the base model’s own greedy continuations (self-distillation)' })
    .option('distillSamples', { type: 'number', default: 1024, describe: '--data=distill: continuations generated' })
    .option('distillTokens', { type: 'number', default: 96, describe: '--data=distill: tokens per continuation (after a 32-token corpus prompt)' })
    .option('prompts', { type: 'number', default: 8, describe: 'validation prompts decoded per run' })
    .option('promptLen', { type: 'number', default: 32, describe: 'tokens per prompt' })
    .option('tokens', { type: 'number', default: 128, describe: 'new tokens per prompt (past the 64-token window)' })
    .option('runs', { type: 'number', default: 5, describe: 'timed runs per decoder (median reported)' })
    .option('nodes', { type: 'number', default: 63, describe: 'non-root nodes of the optimised tree compared with the 63-node sparse one' })
    .strict()
    .parseSync();
  const backend = await initBackend('wasm');
  const command = `npm run bench:medusa -- ${process.argv.slice(2).join(' ')}`.trim();
  console.log(`backend ${backend.name} (${backend.detail}) | ${command}`);
  console.log(`settings ${JSON.stringify(argv, (k, v) => (k === '_' || k === '$0' || k.includes('-') ? undefined : v))}`);

  // 1. the base model
  const ckpt = path.join(argv.base, CHECKPOINT_FILE);
  const t0 = performance.now();
  if (!fs.existsSync(ckpt)) {
    const config = resolveConfig('tiny', { train: { corpus: 'code', backend: 'wasm', steps: argv.baseSteps } });
    const bar = progressBar('base', 'loss {loss}');
    bar.start(config.train.steps, 0, { loss: '-' });
    const r = await trainRun({ config, outDir: argv.base, overwrite: true, onStep: (s) => bar.update(s.step, { loss: fmt(s.loss, 3) }) }).finally(() => bar.stop());
    r.model.dispose();
  }
  const base = loadModel(ckpt);
  const baseMs = performance.now() - t0;
  if (base.config.model.mtp.kind !== 'none') throw new Error(`${ckpt} holds a '${base.config.model.mtp.kind}' model; --base must hold a plain one`);
  console.log(`base: ${ckpt} (step ${base.step}${baseMs > 60_000 ? `, trained in ${fmt(baseMs / 60_000, 1)} min` : ''})`);

  // 2. Medusa-1 heads on the frozen trunk
  const { tokens, config } = prepareData(base.config);
  const { train, val } = splitTrainVal(tokens);
  const mtp = { ...MTP_DEFAULTS.medusa, heads: argv.heads, frozenTrunk: true };
  const model = MedusaModel.fromTrunk(base.model, mtp);
  base.model.dispose();
  let trainStream: ArrayLike<number> = train;
  if (argv.data === 'distill') {
    const bar = progressBar('distill', 'samples');
    bar.start(argv.distillSamples, 0);
    trainStream = await selfDistillTokens(model.trunk, train, { samples: argv.distillSamples, promptLen: 32, newTokens: argv.distillTokens, batchSize: 32, seed: 1, onProgress: (d) => bar.update(d) }).finally(() => bar.stop());
  }
  const trainCfg = { ...config.train, steps: argv.steps, lr: argv.lr, warmupSteps: Math.min(30, argv.steps), evalBatches: 16 };
  const trainer = new Trainer(model, trainCfg, { train: trainStream, val });
  const bar = progressBar('medusa-1', 'loss {loss} | top-1 per head {acc}');
  bar.start(argv.steps, 0, { loss: '-', acc: '-' });
  const t1 = performance.now();
  for (let i = 0; i < argv.steps; i++) {
    const r = await trainer.trainStep();
    bar.update(r.step, { loss: fmt(r.loss, 3), acc: r.heads.map((h) => fmt(h.acc)).join('/') });
  }
  bar.stop();
  const trainMin = (performance.now() - t1) / 60_000;
  const valResult = await trainer.evaluate();
  trainer.dispose();
  console.log(`medusa-1: ${argv.steps} steps in ${fmt(trainMin, 1)} min | val top-1 per head (LM, 1..K) ${valResult.heads.map((h) => fmt(h.acc, 3)).join(' / ')}`);

  // 3. rank accuracies, forward cost per tree size, trees
  const T = model.config.blockSize;
  // with self-distillation the heads are scored on the model's own continuations of validation prompts, as they are used
  const accStream = argv.data === 'distill' ? await selfDistillTokens(model.trunk, val, { samples: 128, promptLen: 32, newTokens: argv.distillTokens, batchSize: 32, seed: 2 }) : val;
  const accuracies = await headRankAccuracies(model, evalBatches(accStream, 16, T, model.k, 16), 10);
  const costs = await forwardCosts(model, [1, 2, 4, 8, 12, 16, 24, 32, 48, 64]);
  const score = (n: number) => (1 + expectedAccepted(optimizeTree(accuracies, n - 1), accuracies)) / costs.get(n)!;
  const cpuNodes = [...costs.keys()].filter((n) => n > 1).reduce((a, b) => (score(b) > score(a) ? b : a));
  const K = argv.heads;
  const trees: [string, TreeChoices][] = [
    [`chain (top-1 × ${K})`, chainTree(K)],
    ['dense (top-3, then top-2)', denseTree(K)],
    ['sparse 63 (10/28/23/2)', sparseTree(K)],
    [`optimised ${argv.nodes}`, optimizeTree(accuracies, argv.nodes)],
    [`optimised ${cpuNodes - 1} (best τ/cost here)`, optimizeTree(accuracies, cpuNodes - 1)],
  ];

  // 4. decoders on the same prompts, runs interleaved
  const prompts = Array.from({ length: argv.prompts }, (_, i) => {
    const s = Math.round((i * (val.length - argv.promptLen - 1)) / Math.max(1, argv.prompts - 1));
    return Array.from(val.subarray(s, s + argv.promptLen));
  });
  const decoders: Decoder[] = [
    { name: 'greedy AR', nodes: 1, run: (p) => generate(model.trunk, p, { maxNewTokens: argv.tokens }) },
    ...trees.map(([name, tree]) => ({
      name,
      nodes: tree.length + 1,
      predictedTau: 1 + expectedAccepted(tree, accuracies),
      run: (p: number[]) => medusaGenerate(model, p, { maxNewTokens: argv.tokens, tree }),
    })),
  ];
  const reference: number[][] = [];
  for (const p of prompts) reference.push((await generate(model.trunk, p, { maxNewTokens: argv.tokens })).tokens);
  const rates = decoders.map(() => [] as number[]);
  const totals = decoders.map(() => ({ tokens: 0, forwards: 0, attempts: new Array(K).fill(0), accepts: new Array(K).fill(0), identical: true }));
  const runBar = progressBar('decode', '{name}');
  runBar.start((argv.runs + 1) * decoders.length, 0, { name: '-' });
  for (let r = 0; r <= argv.runs; r++) {
    for (let j = 0; j < decoders.length; j++) {
      const d = decoders[(j + r) % decoders.length]; // rotate the order so drift spreads over all decoders
      const i = decoders.indexOf(d);
      runBar.increment({ name: d.name });
      let newTokens = 0;
      let ms = 0;
      for (const [pi, p] of prompts.entries()) {
        const out = await d.run(p);
        newTokens += out.stats.newTokens;
        ms += out.stats.ms;
        if (r > 0) continue; // run 0: warm-up, correctness and counts
        totals[i].identical &&= out.tokens.join() === reference[pi].join();
        totals[i].tokens += out.stats.newTokens;
        totals[i].forwards += out.stats.forwards;
        out.stats.attempts?.forEach((a, k) => (totals[i].attempts[k] += a));
        out.stats.accepts?.forEach((a, k) => (totals[i].accepts[k] += a));
      }
      if (r > 0) rates[i].push((newTokens * 1000) / ms);
    }
  }
  runBar.stop();
  const arRate = median(rates[0]);
  const rows = decoders.map((d, i) => ({
    decoder: d.name,
    nodes: d.nodes,
    tau: totals[i].tokens / totals[i].forwards,
    predictedTau: d.predictedTau ?? 1,
    tokensPerSec: median(rates[i]),
    tokensPerSecRuns: rates[i],
    speedup: median(rates[i]) / arRate,
    msPerForward: (1000 * totals[i].tokens) / totals[i].forwards / median(rates[i]),
    alpha: totals[i].attempts.map((a: number, k: number) => (a > 0 ? totals[i].accepts[k] / a : NaN)),
    identicalToGreedy: totals[i].identical,
  }));
  const table = markdownTable(
    ['decoder', 'nodes', 'τ', 'τ predicted', 'tokens/s', 'speedup', 'ms/forward', ...Array.from({ length: K }, (_, k) => `α${k + 1}`), '= greedy'],
    rows.map((r) => [r.decoder, r.nodes, fmt(r.tau), fmt(r.predictedTau), fmt(r.tokensPerSec, 0), `${fmt(r.speedup)}×`, fmt(r.msPerForward), ...r.alpha.map((a: number) => fmt(a)), r.identicalToGreedy ? 'yes' : 'NO']),
  );
  const heads = markdownTable(
    ['head', 'predicts', 'top-1', 'top-3', 'top-10', 'val loss'],
    valResult.heads.map((h, k) => [k === 0 ? 'LM' : `Medusa ${k}`, `x[t+${k + 1}]`, fmt(h.acc, 3), k === 0 ? '-' : fmt(accuracies[k - 1].slice(0, 3).reduce((a, b) => a + b, 0), 3), k === 0 ? '-' : fmt(accuracies[k - 1].reduce((a, b) => a + b, 0), 3), fmt(h.loss, 3)]),
  );
  const file = writeResults('medusa', {
    machine: machine(),
    command,
    settings: { ...argv, _: undefined, $0: undefined },
    base: { checkpoint: ckpt, step: base.step, config: base.config },
    medusa: { mtp, train: trainCfg, minutes: trainMin, val: valResult },
    accuracies,
    forwardMs: Object.fromEntries(costs),
    trees: Object.fromEntries(trees.map(([name, tree]) => [name, tree])),
    prompts: { count: prompts.length, length: argv.promptLen, newTokens: argv.tokens },
    rows,
  });
  console.log(`\n${heads}\n\n${table}\n\nforward ms by tree size: ${[...costs].map(([n, ms]) => `${n}: ${fmt(ms)}`).join(', ')}\nresults: ${file}`);
  model.dispose();
}

/** Median ms of one tree-step forward (decodeHidden over n tokens after a 32-token cache, base argmax read, heads' top-10 read) per size n. */
async function forwardCosts(model: MedusaModel, sizes: number[]): Promise<Map<number, number>> {
  const out = new Map<number, number>();
  const caches = model.newCaches();
  const prefix = Array.from({ length: 32 }, (_, i) => 97 + (i % 26));
  tf.dispose(model.decodeHidden(prefix, caches));
  for (const n of sizes) {
    const ms: number[] = [];
    for (let rep = 0; rep < 12; rep++) {
      const t0 = performance.now();
      const { argmax, top } = tf.tidy(() => {
        const { logits, hidden } = model.decodeHidden(Array.from({ length: n }, (_, i) => prefix[i % 32]), caches, { positions: Array.from({ length: n }, (_, i) => 32 + Math.min(i, 4)), mask: tf.zeros([n, 32 + n]) as tf.Tensor2D });
        return { argmax: tf.argMax(logits, 1), top: tf.topk(model.headsLogits(tf.slice(hidden, [0, 0], [1, -1])), 10).indices };
      });
      await argmax.data();
      await top.data();
      tf.dispose([argmax, top]);
      caches.truncate(32);
      if (rep >= 2) ms.push(performance.now() - t0);
    }
    out.set(n, median(ms));
  }
  caches.dispose();
  return out;
}

main().catch((e) => {
  console.error(`error: ${(e as Error).message}`);
  process.exit(1);
});
