/**
 * The two builds of the wasm kernels side by side (src/backend/wasm_simd.ts): plain SIMD and relaxed SIMD (fused
 * multiply-adds), in one process, on the same tensors and models. Every measurement alternates the builds round by
 * round (plain first in even rounds, relaxed first in odd ones), so that the load of a shared machine hits both alike;
 * each row reports medians over rounds, of wall time and of this process's CPU time, and the median of the per-round
 * ratios relaxed ÷ plain.
 *  - GEMM GFLOP/s through tf.matMul (the package's GEMM): the n³ peak, a training layer and its weight gradient, and
 *    the decoding shapes of the zoo models (1 row, and a verification block of 6);
 *  - training tokens/s of a preset (AdamW steps, random tokens, as bench/train_throughput.ts);
 *  - greedy AR tokens/s and one speculative decoder's tokens/s on a zoo model, validation prompts; every output is
 *    checked identical to AR's on the same build (the bench stops otherwise), and whether the two builds' texts agree
 *    is reported.
 *
 * Relaxed SIMD must be available: in Node 20, `npx tsx --experimental-wasm-relaxed-simd bench/wasm_simd.ts` (this is
 * what `npm run bench:simd` runs).
 *
 *   npm run bench:simd -- [--runs=7] [--preset=small] [--steps=2] [--model=code-medusa1-k5] [--k=6] [--prompts=4] [--tokens=64]
 */
import * as tf from '@tensorflow/tfjs';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { backendInfo, initBackend } from '../src/backend/index';
import { wasmSimdVariant } from '../src/backend/wasm_native';
import { RELAXED_SIMD_HOWTO, relaxedSimdSupported, type WasmSimdVariant } from '../src/backend/wasm_simd';
import { PRESET_NAMES, PresetName, resolveConfig } from '../src/config';
import { valPrompts } from '../src/data/batch';
import { loadCorpus, splitTrainVal } from '../src/data/corpus';
import { generate } from '../src/decode/ar';
import { decode } from '../src/decode/engine';
import { createModel } from '../src/model/create';
import { Trainer } from '../src/train/trainer';
import { Rng } from '../src/util/rng';
import { loadZooModel } from '../src/zoo/load';
import { machine, markdownTable, median, writeResults } from './common';

const VARIANTS: WasmSimdVariant[] = ['plain', 'relaxed'];

/** One quantity measured on both builds: per round, a value per build (higher is better), from wall and CPU time. */
interface Series {
  metric: string;
  unit: string;
  wall: Record<WasmSimdVariant, number[]>;
  cpu: Record<WasmSimdVariant, number[]>;
}

interface Row {
  metric: string;
  unit: string;
  plain: number;
  relaxed: number;
  /** Median over rounds of relaxed ÷ plain (wall time). */
  ratio: number;
  plainCpu: number;
  relaxedCpu: number;
  /** Median over rounds of relaxed ÷ plain (CPU time of this process). */
  ratioCpu: number;
}

function series(metric: string, unit: string): Series {
  return { metric, unit, wall: { plain: [], relaxed: [] }, cpu: { plain: [], relaxed: [] } };
}

/** Runs fn once; `work / seconds` by wall clock and by this process's CPU time. */
async function rate(work: number, fn: () => Promise<void> | void): Promise<{ wall: number; cpu: number }> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  await fn();
  const wall = (performance.now() - t0) / 1000;
  const c = process.cpuUsage(c0);
  return { wall: work / wall, cpu: work / ((c.user + c.system) / 1e6) };
}

function summarize(s: Series): Row {
  const ratios = (k: 'wall' | 'cpu') => median(s[k].plain.map((p, i) => s[k].relaxed[i] / p));
  return {
    metric: s.metric,
    unit: s.unit,
    plain: median(s.wall.plain),
    relaxed: median(s.wall.relaxed),
    ratio: ratios('wall'),
    plainCpu: median(s.cpu.plain),
    relaxedCpu: median(s.cpu.relaxed),
    ratioCpu: ratios('cpu'),
  };
}

/** The builds in this round's order: plain first in even rounds, relaxed first in odd ones. */
const order = (round: number): WasmSimdVariant[] => (round % 2 === 0 ? VARIANTS : [...VARIANTS].reverse());

async function use(variant: WasmSimdVariant): Promise<void> {
  await initBackend('wasm', { wasmSimd: variant });
  if (wasmSimdVariant() !== variant) throw new Error(`the ${variant} kernels did not bind`);
}

interface MatMulCase {
  label: string;
  a: [number, number];
  b: [number, number];
  transposeA?: boolean;
}

async function main() {
  const argv = yargs(hideBin(process.argv))
    .option('runs', { type: 'number', default: 7, describe: 'rounds (each measures both builds; medians over rounds)' })
    .option('preset', { type: 'string', default: 'small', choices: PRESET_NAMES as unknown as string[], describe: 'training preset' })
    .option('steps', { type: 'number', default: 2, describe: 'training steps per build and round' })
    .option('model', { type: 'string', default: 'code-medusa1-k5', describe: 'zoo model for decoding (its own drafter)' })
    .option('k', { type: 'number', default: 6, describe: 'tokens per speculative step (chain of k - 1 drafts)' })
    .option('prompts', { type: 'number', default: 4, describe: 'validation prompts' })
    .option('promptLength', { type: 'number', default: 32, describe: 'tokens per prompt' })
    .option('tokens', { type: 'number', default: 64, describe: 'tokens generated per prompt' })
    .strict()
    .parseSync();
  if (!relaxedSimdSupported()) throw new Error(`this bench compares both kernel builds, and this engine rejects relaxed SIMD. ${RELAXED_SIMD_HOWTO}.`);
  await use('plain');
  const m = machine();
  const command = `npm run bench:simd -- ${process.argv.slice(2).join(' ')}`.trim();
  console.log(`${backendInfo().detail.replace(/, kernels: .*$/, '')}; ${m.cpu}, ${m.cores} cores, load ${m.load}; ${argv.runs} rounds`);
  const all: Series[] = [];

  // GEMM through tf.matMul: inputs made once, on the wasm backend, used by both builds
  const cases: MatMulCase[] = [
    { label: 'GEMM 1024³', a: [1024, 1024], b: [1024, 1024] },
    { label: 'GEMM [2048,128]·[128,512] (training layer)', a: [2048, 128], b: [128, 512] },
    { label: 'GEMM [2048,128]ᵀ·[2048,512] (its weight gradient)', a: [2048, 128], b: [2048, 512], transposeA: true },
    { label: 'GEMM [1,96]·[96,384] (decoding, 1 row)', a: [1, 96], b: [96, 384] },
    { label: 'GEMM [6,96]·[96,384] (verifying 6 rows)', a: [6, 96], b: [96, 384] },
  ];
  for (const c of cases) {
    const a = tf.randomNormal(c.a, 0, 1, 'float32', 1);
    const b = tf.randomNormal(c.b, 0, 1, 'float32', 2);
    const [M, K] = c.transposeA ? [c.a[1], c.a[0]] : c.a;
    const flops = 2 * M * K * c.b[1];
    const reps = Math.max(1, Math.round(2e8 / flops)); // ≥ 0.2 GFLOP per timing: 1-row products run thousands of times
    const product = () => {
      for (let r = 0; r < reps; r++) tf.matMul(a, b, c.transposeA ?? false, false).dispose();
    };
    const s = series(c.label, 'GFLOP/s');
    for (const v of VARIANTS) {
      await use(v);
      product(); // warm-up: compilation, allocator growth
    }
    for (let round = 0; round < argv.runs; round++) {
      for (const v of order(round)) {
        await use(v);
        const r = await rate((flops * reps) / 1e9, product);
        s.wall[v].push(r.wall);
        s.cpu[v].push(r.cpu);
      }
    }
    tf.dispose([a, b]);
    all.push(s);
    console.log(`  ${c.label}: plain ${median(s.wall.plain).toFixed(1)}, relaxed ${median(s.wall.relaxed).toFixed(1)} GFLOP/s`);
  }

  // training: one trainer, the builds alternating between its steps
  {
    const cfg = resolveConfig(argv.preset as PresetName);
    const rng = new Rng(5);
    const tokens = Int32Array.from({ length: 200_000 }, () => rng.int(cfg.model.vocabSize));
    const model = createModel(cfg.model);
    const trainer = new Trainer(model, { ...cfg.train, evalBatches: 1 }, { train: tokens, val: tokens.subarray(0, 20_000) });
    const s = series(`training, ${argv.preset} preset`, 'tokens/s');
    for (const v of VARIANTS) {
      await use(v);
      await trainer.trainStep();
    }
    for (let round = 0; round < argv.runs; round++) {
      for (const v of order(round)) {
        await use(v);
        const r = await rate(trainer.tokensPerStep * argv.steps, async () => {
          for (let i = 0; i < argv.steps; i++) await trainer.trainStep();
        });
        s.wall[v].push(r.wall);
        s.cpu[v].push(r.cpu);
      }
    }
    trainer.dispose();
    model.dispose();
    tf.disposeVariables();
    all.push(s);
    console.log(`  ${s.metric}: plain ${median(s.wall.plain).toFixed(0)}, relaxed ${median(s.wall.relaxed).toFixed(0)} tokens/s`);
  }

  // decoding: greedy AR and the model's drafter, each output checked against AR's on the same build
  const { model, config, tokenizer } = loadZooModel(argv.model);
  const corpus = loadCorpus(config.train.corpus, { maxBytes: config.train.maxCorpusBytes || undefined });
  const text = config.train.tokenizer === 'byte' ? corpus.bytes : tokenizer.encode(corpus.text);
  const prompts = valPrompts(splitTrainVal(text).val, argv.prompts, argv.promptLength);
  const ar = series(`greedy AR, zoo:${argv.model}`, 'tokens/s');
  const spec = series(`${config.model.mtp.kind} chain k=${argv.k}, zoo:${argv.model}`, 'tokens/s');
  const reference: Record<WasmSimdVariant, number[][]> = { plain: [], relaxed: [] };
  const taus: number[] = [];
  for (const v of VARIANTS) {
    await use(v);
    for (const p of prompts) reference[v].push((await generate(model.trunk, p, { maxNewTokens: argv.tokens })).tokens);
    await decode(model, model.drafter({ k: argv.k }), prompts[0], { maxNewTokens: 8 });
  }
  for (let round = 0; round < argv.runs; round++) {
    for (const v of order(round)) {
      await use(v);
      const arRates = { wall: [] as number[], cpu: [] as number[] };
      const specRates = { wall: [] as number[], cpu: [] as number[] };
      for (let i = 0; i < prompts.length; i++) {
        let out: number[] = [];
        let r = await rate(argv.tokens, async () => void (out = (await generate(model.trunk, prompts[i], { maxNewTokens: argv.tokens })).tokens));
        if (JSON.stringify(out) !== JSON.stringify(reference[v][i])) throw new Error(`${v}: AR gave another text on prompt ${i}`);
        arRates.wall.push(r.wall);
        arRates.cpu.push(r.cpu);
        let forwards = 0;
        r = await rate(argv.tokens, async () => {
          const res = await decode(model, model.drafter({ k: argv.k }), prompts[i], { maxNewTokens: argv.tokens });
          out = res.tokens;
          forwards = res.stats.forwards;
        });
        if (JSON.stringify(out) !== JSON.stringify(reference[v][i])) throw new Error(`${v}: the speculative decoder's text differs from AR's on prompt ${i}`);
        specRates.wall.push(r.wall);
        specRates.cpu.push(r.cpu);
        taus.push(argv.tokens / forwards);
      }
      // per round: tokens/s over all prompts (total tokens ÷ total time)
      const pooled = (xs: number[]) => xs.length / xs.reduce((acc, x) => acc + 1 / x, 0);
      ar.wall[v].push(pooled(arRates.wall));
      ar.cpu[v].push(pooled(arRates.cpu));
      spec.wall[v].push(pooled(specRates.wall));
      spec.cpu[v].push(pooled(specRates.cpu));
    }
  }
  model.dispose();
  all.push(ar, spec);
  const sameText = reference.plain.every((t, i) => JSON.stringify(t) === JSON.stringify(reference.relaxed[i]));
  console.log(`  decoding: τ ${median(taus).toFixed(2)}; plain and relaxed give the same greedy text on every prompt: ${sameText}`);

  const rows = all.map(summarize);
  const fmt = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(1));
  const table = markdownTable(
    ['', 'unit', 'plain', 'relaxed', 'relaxed ÷ plain', 'plain (CPU time)', 'relaxed (CPU time)', 'relaxed ÷ plain (CPU time)'],
    rows.map((r) => [r.metric, r.unit, fmt(r.plain), fmt(r.relaxed), `${r.ratio.toFixed(2)}×`, fmt(r.plainCpu), fmt(r.relaxedCpu), `${r.ratioCpu.toFixed(2)}×`]),
  );
  const file = writeResults('wasm_simd', {
    machine: m,
    command,
    backend: backendInfo().detail.replace(/, kernels: .*$/, ''),
    runs: argv.runs,
    settings: { preset: argv.preset, steps: argv.steps, model: argv.model, k: argv.k, prompts: argv.prompts, promptLength: argv.promptLength, tokens: argv.tokens },
    tau: median(taus),
    sameGreedyText: sameText,
    rows,
    series: all,
  });
  console.log(`\n${table}\n\nresults: ${file}`);
}

main().catch((e) => {
  console.error(`error: ${(e as Error).message}`);
  process.exit(1);
});
