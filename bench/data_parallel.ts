/**
 * Data-parallel training throughput: tokens/s of one training run against its number of workers (train.workers:
 * threads, one wasm engine each), with the speedup over one worker and the scaling efficiency (speedup ÷ workers),
 * beside the PyTorch twin (bench/torch_twin.py) training the same shape with the same number of threads, in the
 * same run. Each point is a short real run (trainRun on the code corpus): the median step time after warm-up.
 *
 *   npm run bench:parallel -- --presets=small --workers=1,2
 *   npm run bench:parallel -- --presets=small,medium --workers=1,2,4,8,12,16 --name=gpu/data_parallel
 *
 * MTP_PYTHON names the Python with torch (default /usr/bin/python3).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { initBackend } from '../src/backend/index';
import { PRESET_NAMES, PresetName, resolveConfig } from '../src/config';
import { trainRun } from '../src/train/run';
import { machine, markdownTable, median, updateReadme, writeResults } from './common';
import { runTwin, torchUnavailable } from './torch';

interface Row {
  preset: string;
  workers: number;
  msPerStep: number;
  msAll: number[];
  tokensPerSec: number;
  speedup: number;
  efficiency: number;
  torchTokensPerSec?: number;
  /** PyTorch tokens/s ÷ ours at the same thread count. */
  torchRatio?: number;
}

async function main() {
  const argv = yargs(hideBin(process.argv))
    .option('presets', { type: 'string', default: 'small', describe: `comma list of ${PRESET_NAMES.join(', ')}` })
    .option('workers', { type: 'string', default: '1,2', describe: 'comma list of worker counts' })
    .option('steps', { type: 'number', default: 6, describe: 'timed steps per point (median reported)' })
    .option('warmup', { type: 'number', default: 2, describe: 'untimed steps first' })
    .option('torch', { type: 'boolean', default: true, describe: 'also train the PyTorch twin with the same thread counts' })
    .option('name', { type: 'string', default: 'data_parallel', describe: 'results file under bench/results/ (without .json)' })
    .option('readme', { type: 'boolean', default: true, describe: 'write the table into README.md' })
    .strict()
    .parseSync();
  const presets = argv.presets.split(',') as PresetName[];
  const workers = argv.workers.split(',').map(Number);
  if (workers.some((w) => !(Number.isInteger(w) && w >= 1))) throw new Error(`--workers must be a comma list of integers ≥ 1, got '${argv.workers}'`);
  await initBackend('wasm');
  const m = machine();
  const rows: Row[] = [];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mtp-bench-dp-'));
  for (const preset of presets) {
    for (const w of workers) {
      const base = resolveConfig(preset);
      if (w > base.train.batchSize) continue;
      const steps = argv.warmup + argv.steps;
      const config = resolveConfig(preset, { train: { corpus: 'code', maxCorpusBytes: 2_000_000, steps, evalEvery: steps, evalBatches: 1, workers: w, backend: 'wasm' } });
      const ms: number[] = [];
      const run = await trainRun({ config, outDir: path.join(dir, `${preset}-${w}`), backend: 'wasm', onStep: (s) => s.step > argv.warmup && ms.push(s.ms) });
      run.model.dispose();
      const msPerStep = median(ms);
      const tokensPerSec = (base.train.batchSize * base.model.blockSize * 1000) / msPerStep;
      const one = rows.find((r) => r.preset === preset && r.workers === 1);
      const speedup = one ? tokensPerSec / one.tokensPerSec : 1;
      rows.push({ preset, workers: w, msPerStep, msAll: ms, tokensPerSec, speedup, efficiency: speedup / w });
      console.log(`${preset}, ${w} worker(s): ${msPerStep.toFixed(0)} ms/step, ${tokensPerSec.toFixed(0)} tokens/s, ×${speedup.toFixed(2)}`);
    }
  }
  fs.rmSync(dir, { recursive: true, force: true });
  const unavailable: Record<string, string> = {};
  const noTorch = argv.torch ? torchUnavailable() : 'not requested';
  if (noTorch === null) {
    for (const w of workers) {
      const twin = runTwin(['--configs', presets.join(','), '--train-runs', String(argv.steps), '--train-warm', String(argv.warmup), '--skip-decode'], w);
      for (const r of twin.results) {
        const row = rows.find((x) => x.preset === r.config && x.workers === w);
        if (row && r.train) {
          row.torchTokensPerSec = r.train.tokensPerSec;
          row.torchRatio = r.train.tokensPerSec / row.tokensPerSec;
        }
      }
    }
  } else {
    unavailable.PyTorch = noTorch;
  }
  const table = markdownTable(
    ['preset', 'workers', 'ms/step (median)', 'tokens/s', 'speedup', 'efficiency', 'PyTorch tokens/s (same threads)', 'PyTorch is … faster'],
    rows.map((r) => [r.preset, r.workers, r.msPerStep.toFixed(0), r.tokensPerSec.toFixed(0), `×${r.speedup.toFixed(2)}`, `${(100 * r.efficiency).toFixed(0)} %`, r.torchTokensPerSec?.toFixed(0) ?? '–', r.torchRatio ? `${r.torchRatio.toFixed(2)}×` : '–']),
  );
  const command = `npm run bench:parallel -- ${process.argv.slice(2).join(' ')}`.trim();
  const file = writeResults(argv.name, { machine: m, command, steps: argv.steps, warmup: argv.warmup, rows, unavailable });
  const gone = Object.entries(unavailable).map(([b, why]) => `\`${b}\` not measured: ${why.split('.')[0]}.`);
  const note = `Data-parallel training, ${m.cpu} (${m.cores} cores, load ${m.load}), Node ${m.node}, tfjs ${m.tfjs}, wasm; \`${command}\`, median of ${argv.steps} steps after ${argv.warmup} warm-up.`;
  console.log(`\n${table}\n\nresults: ${file}`);
  if (argv.readme) updateReadme(argv.name.replace(/\//g, '_'), [note, '', table, '', ...gone].join('\n'));
}

main().catch((e) => {
  console.error(`error: ${(e as Error).message}`);
  process.exit(1);
});
