/**
 * Training throughput per backend and preset: median ms per AdamW step (loss read back) after
 * warm-up, tokens/s, achieved GFLOP/s (PaLM convention, src/model/flops.ts) and MFU against the
 * backend's measured n³ matMul peak. Random tokens, as the PyTorch twin uses, so shapes match PERF.md.
 *
 *   npm run bench -- --backends=wasm,cpu --presets=tiny,small --steps=5
 */
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import * as tf from '@tensorflow/tfjs';
import { BACKEND_NAMES, BackendName, initBackend } from '../src/backend/index';
import { PRESET_NAMES, PresetName, resolveConfig } from '../src/config';
import { createModel } from '../src/model/create';
import { trainFlopsPerToken } from '../src/model/flops';
import { Trainer } from '../src/train/trainer';
import { Rng } from '../src/util/rng';
import { machine, markdownTable, median, peakMatMulGflops, timeRuns, updateReadme, writeResults } from './common';

interface Row {
  backend: string;
  preset: string;
  params: number;
  msPerStep: number;
  msAll: number[];
  tokensPerSec: number;
  gflops: number;
  peakGflops: number;
  mfu: number;
}

async function main() {
  const argv = yargs(hideBin(process.argv))
    .option('backends', { type: 'string', default: 'wasm,cpu,webgpu', describe: `comma list of ${BACKEND_NAMES.join(', ')}` })
    .option('presets', { type: 'string', default: 'tiny,small', describe: `comma list of ${PRESET_NAMES.join(', ')}` })
    .option('steps', { type: 'number', default: 5, describe: 'timed steps (median reported)' })
    .option('warmup', { type: 'number', default: 2, describe: 'untimed steps first' })
    .option('readme', { type: 'boolean', default: true, describe: 'write the table into README.md' })
    .strict()
    .parseSync();
  const backends = argv.backends.split(',') as BackendName[];
  const presets = argv.presets.split(',') as PresetName[];
  const rows: Row[] = [];
  const unavailable: Record<string, string> = {};
  for (const name of backends) {
    let info;
    try {
      info = await initBackend(name);
    } catch (e) {
      unavailable[name] = (e as Error).message;
      console.log(`${name}: unavailable — ${(e as Error).message}`);
      continue;
    }
    const peak = await peakMatMulGflops(name === 'cpu' ? 256 : 1024);
    console.log(`${info.name} (${info.detail}): matMul peak ${peak.toFixed(1)} GFLOP/s`);
    for (const preset of presets) {
      const cfg = resolveConfig(preset);
      const rng = new Rng(5);
      const tokens = Int32Array.from({ length: 200_000 }, () => rng.int(cfg.model.vocabSize));
      const model = createModel(cfg.model);
      const trainer = new Trainer(model, { ...cfg.train, evalBatches: 1 }, { train: tokens, val: tokens.subarray(0, 20_000) });
      const ms = await timeRuns(async () => void (await trainer.trainStep()), argv.warmup, argv.steps);
      const msPerStep = median(ms);
      const tokensPerSec = (trainer.tokensPerStep * 1000) / msPerStep;
      const gflops = (trainFlopsPerToken(cfg.model) * tokensPerSec) / 1e9;
      const params = model.trainableVariables().reduce((a, v) => a + v.size, 0);
      rows.push({ backend: info.name, preset, params, msPerStep, msAll: ms, tokensPerSec, gflops, peakGflops: peak, mfu: gflops / peak });
      console.log(`  ${preset}: ${msPerStep.toFixed(0)} ms/step, ${tokensPerSec.toFixed(0)} tokens/s, ${gflops.toFixed(2)} GFLOP/s`);
      trainer.dispose();
      model.dispose();
      tf.disposeVariables();
    }
  }
  const table = markdownTable(
    ['backend', 'preset', 'params', 'ms/step (median)', 'tokens/s', 'GFLOP/s', 'matMul peak GFLOP/s', 'MFU'],
    rows.map((r) => [r.backend, r.preset, r.params, r.msPerStep.toFixed(0), r.tokensPerSec.toFixed(0), r.gflops.toFixed(2), r.peakGflops.toFixed(1), `${(100 * r.mfu).toFixed(1)} %`]),
  );
  const m = machine();
  const command = `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim();
  const file = writeResults('train_throughput', { machine: m, command, steps: argv.steps, warmup: argv.warmup, rows, unavailable });
  const gone = Object.entries(unavailable).map(([b, why]) => `\`${b}\` not measured: ${why.split('.')[0]}.`);
  const note = `Training throughput, ${m.cpu} (${m.cores} cores), Node ${m.node}, tfjs ${m.tfjs}; \`${command}\`, median of ${argv.steps} steps after ${argv.warmup} warm-up.`;
  console.log(`\n${table}\n\nresults: ${file}`);
  if (argv.readme) updateReadme('train_throughput', [note, '', table, '', ...gone].join('\n'));
}

main().catch((e) => {
  console.error(`error: ${(e as Error).message}`);
  process.exit(1);
});
