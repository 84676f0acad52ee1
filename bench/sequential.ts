/**
 * Sequential MTP modules (DeepSeek-V3 Technical Report §2.2) on the code corpus. A k = 1 model and
 * D-module models of the same trunk (tiny preset, same seeds, same steps) are trained, then:
 * 1. the main model's next-token validation loss of each on identical windows — does MTP training
 *    change it? (DeepSeek-V3 discards the modules at inference, so this is what users get);
 * 2. each module's validation loss and top-1 accuracy;
 * 3. each module's agreement with the main model on validation text: module m's argmax at position i
 *    against the trunk's greedy token at i+m, both given the true tokens — the acceptance its drafts
 *    would see on text like the validation data (the decoder's αᵢ are measured on the model's own
 *    greedy continuations, which a small model fills with repetition);
 * 4. self-speculative decoding with the modules (decode/sequential.ts): τ, αᵢ (α₁ is the second-token
 *    acceptance, 85–90 % in DeepSeek-V3 §5.4.3), tokens/s against greedy AR with the main model alone
 *    (= modules discarded) on the same model, prompts, backend and run, interleaved so machine noise
 *    hits both alike; every speculative output must equal greedy AR's (the bench stops otherwise).
 * Tokens/s of a method = tokens ÷ time summed over the prompts of one run; medians over runs are
 * reported, and speedup = the median over runs of that run's ratio (docs/algorithms.md, metrics: same run).
 *
 *   npm run bench:sequential -- [--steps=800] [--depths=1,3] [--prompts=8] [--tokens=128] [--runs=5] [--resume]
 */
import * as path from 'node:path';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import * as tf from '@tensorflow/tfjs';
import { BACKEND_NAMES, BackendName, initBackend } from '../src/backend/index';
import { Config, MTP_DEFAULTS, MtpConfig, resolveConfig } from '../src/config';
import { Batch, evalBatches, splitTrainVal, valPrompts } from '../src/data/batch';
import { loadCorpus } from '../src/data/corpus';
import { progressBar } from '../src/cli/progress';
import { generate } from '../src/decode/ar';
import { sequentialGenerate } from '../src/decode/decoders';
import type { SequentialModel } from '../src/model/sequential';
import { evaluate } from '../src/train/evaluate';
import { trainRun } from '../src/train/run';
import { machine, markdownTable, median, writeResults } from './common';

/**
 * Agreement of each module with the main model on validation windows (batch 1, true tokens): module m
 * at position i (argmax) against the trunk's greedy token at position i+m, over the first `rows` rows.
 */
function agreement(model: SequentialModel, batches: Batch[], rows: number): number[] {
  const hits = new Array(model.depth).fill(0);
  let seen = 0;
  for (const b of batches) {
    for (let r = 0; r < b.B && seen < rows; r++, seen++) {
      const caches = model.newCaches();
      const counts = tf.tidy(() => {
        const row = (j: number) => tf.tensor1d(b.targets.subarray((j * b.B + r) * b.T, (j * b.B + r + 1) * b.T), 'int32'); // x[t+j+1], [T]
        const main = model.trunkStep(tf.tensor1d(b.inputs.subarray(r * b.T, (r + 1) * b.T), 'int32'), caches);
        const greedy = tf.argMax(tf.reshape(main.logits, [b.T, -1]), 1); // [T]
        let h = main.hidden; // h⁰ [1, T, C]
        return Array.from({ length: model.depth }, (_, i) => {
          const m = i + 1;
          h = model.moduleStep(m, h, row(m - 1), caches).hidden; // hᵐ [1, T, C]
          const guess = tf.argMax(tf.reshape(model.trunk.unembed(h), [b.T, -1]), 1); // [T]
          return tf.sum(tf.cast(tf.equal(tf.slice(guess, 0, b.T - m), tf.slice(greedy, m, b.T - m)), 'int32')).dataSync()[0];
        });
      });
      caches.dispose();
      counts.forEach((c, i) => (hits[i] += c / (b.T - i - 1)));
    }
  }
  return hits.map((h) => h / seen);
}

async function main() {
  const tiny = resolveConfig('tiny');
  const argv = yargs(hideBin(process.argv))
    .option('steps', { type: 'number', default: tiny.train.steps, describe: 'training steps per model (tiny preset default)' })
    .option('depths', { type: 'string', default: '1,3', describe: 'module counts D to train (comma list), beside the k = 1 model' })
    .option('prompts', { type: 'number', default: 8, describe: 'prompts from the validation split' })
    .option('promptLength', { type: 'number', default: 32, describe: 'tokens per prompt' })
    .option('tokens', { type: 'number', default: 128, describe: 'tokens generated per prompt' })
    .option('runs', { type: 'number', default: 5, describe: 'timed repetitions (medians)' })
    .option('evalBatches', { type: 'number', default: 32, describe: 'validation batches for the main-model loss (identical windows for every model)' })
    .option('backend', { type: 'string', default: 'wasm', choices: BACKEND_NAMES as unknown as string[] })
    .option('agreementRows', { type: 'number', default: 128, describe: 'validation rows for the modules’ agreement with the main model' })
    .option('out', { type: 'string', default: 'runs/bench-sequential', describe: 'folder for the training runs' })
    .option('resume', { type: 'boolean', default: false, describe: 'reuse the finished runs in --out (no training; training time not measured)' })
    .strict()
    .parseSync();
  const backend = await initBackend(argv.backend as BackendName);
  const depths = argv.depths.split(',').map(Number);
  const variants: { name: string; mtp: MtpConfig }[] = [
    { name: 'k = 1', mtp: { kind: 'none' } },
    ...depths.map((depth) => ({ name: `sequential D = ${depth}`, mtp: { ...MTP_DEFAULTS.sequential, depth } as MtpConfig })),
  ];
  const corpus = loadCorpus('code');
  const { val } = splitTrainVal(corpus.bytes);
  const kMax = 1 + Math.max(0, ...depths);
  const valBatches = evalBatches(val, tiny.train.batchSize, tiny.model.blockSize, kMax, argv.evalBatches);
  const prompts = valPrompts(val, argv.prompts, argv.promptLength);
  console.log(`${backend.name} (${backend.detail}); tiny preset, code corpus, ${argv.steps} steps per model; ${argv.prompts} prompts × ${argv.tokens} tokens × ${argv.runs} runs`);

  const rows = [];
  const configs: Record<string, Config> = {};
  for (const v of variants) {
    const config = resolveConfig('tiny', { model: { mtp: v.mtp }, train: { corpus: 'code', backend: argv.backend as BackendName, steps: argv.steps } });
    configs[v.name] = config;
    const bar = progressBar(v.name.padEnd(18), 'loss {loss} | {tps} tok/s');
    if (!argv.resume) bar.start(argv.steps, 0, { loss: '-', tps: '-' });
    const t0 = performance.now();
    const run = await trainRun({
      config,
      outDir: path.join(argv.out, v.name.replace(/[^a-z0-9]+/gi, '')),
      resume: argv.resume,
      overwrite: !argv.resume,
      onStep: (r) => bar.update(r.step, { loss: r.loss.toFixed(3), tps: ((r.tokens * 1000) / r.ms).toFixed(0) }),
    });
    if (!argv.resume) bar.stop();
    const trainSec = (performance.now() - t0) / 1000;
    const model = run.model;
    const quality = await evaluate(model, valBatches); // heads[0] = main model; heads[m] = module m
    const params = model.trainableVariables().reduce((a, x) => a + x.size, 0);
    const agree = model.k > 1 ? agreement(model as SequentialModel, valBatches, argv.agreementRows) : [];

    const arTps: number[] = [];
    const specTps: number[] = [];
    let sample = '';
    let committed = 0;
    let forwards = 0;
    let draftSteps = 0;
    const attempts = new Array(model.k - 1).fill(0);
    const accepts = new Array(model.k - 1).fill(0);
    for (const prompt of prompts) {
      // untimed warm-up pass (kernel compilation, allocator, JIT)
      await generate(model.trunk, prompt, { maxNewTokens: argv.tokens });
      if (model.k > 1) await sequentialGenerate(model as SequentialModel, prompt, { maxNewTokens: argv.tokens });
    }
    for (let r = 0; r < argv.runs; r++) {
      const sums = { arTokens: 0, arMs: 0, specTokens: 0, specMs: 0 };
      for (const prompt of prompts) {
        const ar = await generate(model.trunk, prompt, { maxNewTokens: argv.tokens });
        if (r === 0 && prompt === prompts[0]) sample = Buffer.from(ar.tokens).toString('utf8');
        sums.arTokens += ar.stats.newTokens;
        sums.arMs += ar.stats.ms;
        if (model.k === 1) continue;
        const spec = await sequentialGenerate(model as SequentialModel, prompt, { maxNewTokens: argv.tokens });
        if (JSON.stringify(spec.tokens) !== JSON.stringify(ar.tokens)) throw new Error(`${v.name}: sequential output differs from greedy AR — a lossless decoder is broken`);
        sums.specTokens += spec.stats.newTokens;
        sums.specMs += spec.stats.ms;
        if (r > 0) continue;
        committed += spec.stats.newTokens;
        forwards += spec.stats.forwards;
        draftSteps += spec.stats.draftForwards;
        spec.stats.attempts.forEach((a, i) => (attempts[i] += a));
        spec.stats.accepts.forEach((a, i) => (accepts[i] += a));
      }
      arTps.push((sums.arTokens * 1000) / sums.arMs);
      if (model.k > 1) specTps.push((sums.specTokens * 1000) / sums.specMs);
    }
    const row = {
      variant: v.name,
      params,
      steps: run.steps,
      trainSec: argv.resume ? null : trainSec,
      trainTokensPerSec: argv.resume ? null : run.tokensPerSec,
      mainValLoss: quality.heads[0].loss,
      mainValAcc: quality.heads[0].acc,
      modules: quality.heads.slice(1),
      agreement: agree,
      tau: model.k > 1 ? committed / forwards : 1,
      alpha: attempts.map((a, i) => accepts[i] / a),
      draftStepsPerForward: model.k > 1 ? draftSteps / forwards : 0,
      arTokensPerSec: median(arTps),
      seqTokensPerSec: model.k > 1 ? median(specTps) : NaN,
      speedup: model.k > 1 ? median(specTps.map((x, i) => x / arTps[i])) : NaN,
      arTokensPerSecRuns: arTps,
      seqTokensPerSecRuns: specTps,
      sample,
    };
    rows.push(row);
    console.log(
      `  main val loss ${row.mainValLoss.toFixed(4)}; τ ${row.tau.toFixed(2)}, α ${row.alpha.map((a) => a.toFixed(2)).join('/') || '-'}; ` +
        `AR ${row.arTokensPerSec.toFixed(1)} tok/s, sequential ${row.seqTokensPerSec.toFixed(1)} tok/s`,
    );
    model.dispose();
    tf.disposeVariables();
  }

  const base = rows[0].mainValLoss;
  const pct = (x: number) => `${(100 * x).toFixed(1)} %`;
  const table = markdownTable(
    ['variant', 'params', 'main val loss (Δ vs k=1)', 'module top-1 acc', 'module agreement', 'τ', 'α per draft', 'AR tok/s', 'sequential tok/s', 'speedup'],
    rows.map((r) => [
      r.variant,
      r.params,
      `${r.mainValLoss.toFixed(4)} (${r.mainValLoss - base >= 0 ? '+' : ''}${(r.mainValLoss - base).toFixed(4)})`,
      r.modules.map((m) => pct(m.acc)).join(' / ') || '-',
      r.agreement.map(pct).join(' / ') || '-',
      r.tau.toFixed(2),
      r.alpha.map(pct).join(' / ') || '-',
      r.arTokensPerSec.toFixed(1),
      Number.isNaN(r.seqTokensPerSec) ? '-' : r.seqTokensPerSec.toFixed(1),
      Number.isNaN(r.speedup) ? '-' : `${r.speedup.toFixed(2)}×`,
    ]),
  );
  const command = `npm run bench:sequential -- ${process.argv.slice(2).join(' ')}`.trim();
  const file = writeResults('sequential', {
    machine: machine(),
    command,
    backend: { name: backend.name, detail: backend.detail },
    steps: argv.steps,
    evalBatches: argv.evalBatches,
    decode: { prompts: argv.prompts, promptLength: argv.promptLength, tokens: argv.tokens, runs: argv.runs, promptStarts: 'Rng(2024) windows of the code validation split' },
    prompts: prompts.map((p) => Buffer.from(p).toString('utf8')),
    configs,
    rows,
  });
  console.log(`\n${table}\n\nresults: ${file}`);
}

main().catch((e) => {
  console.error(`error: ${(e as Error).message}`);
  process.exit(1);
});
