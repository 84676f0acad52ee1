/**
 * Training throughput per backend and preset: median ms per AdamW step (loss read back) after
 * warm-up, tokens/s, achieved GFLOP/s (PaLM convention, src/model/flops.ts) and MFU against the
 * backend's measured n³ matMul peak. Random tokens, as the PyTorch twin uses, so shapes match docs/performance.md.
 * Also the peak of live tensors and tensor bytes during one step (weights and optimizer state included). On `wasm`
 * the same run also measures the backend with MTP_WASM_FAST=false (without this package's kernels), on `webgpu` with
 * MTP_WEBGPU_TRAIN=false (the plain tfjs ops instead of the fused training programs), with the GPU programs per step
 * (compute dispatches counted at the WebGPU pass encoder); the PyTorch twin (bench/torch_twin.py, 2 threads) trains
 * the same shapes when /usr/bin/python3 has torch, for ratios.
 *
 *   npm run bench -- --backends=wasm,cpu --presets=tiny,small --steps=5
 *   npm run bench -- --backends=wasm --presets=small,medium --baseline=false --torch=false
 */
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import * as tf from '@tensorflow/tfjs';
import { BACKEND_NAMES, BackendName, initBackend } from '../src/backend/index';
import { FAST_FLAG } from '../src/backend/wasm_native';
import { WEBGPU_TRAIN_FLAG } from '../src/backend/webgpu_train_dispatch';
import { PRESET_NAMES, PresetName, resolveConfig } from '../src/config';
import { createModel } from '../src/model/create';
import { trainFlopsPerToken } from '../src/model/flops';
import { Trainer } from '../src/train/trainer';
import { Rng } from '../src/util/rng';
import { machine, markdownTable, mb, median, peakMatMulGflops, peakMemory, timeRunsCpu, updateReadme, writeResults } from './common';
import { runTwin, torchUnavailable } from './torch';

interface Row {
  /** Backend name, with the variant when not the default (e.g. 'wasm, MTP_WASM_FAST=false'). */
  backend: string;
  preset: string;
  params: number;
  msPerStep: number;
  msAll: number[];
  /** Median CPU time of this process per step (ms): below msPerStep when the machine was busy with other work. */
  cpuMsPerStep: number;
  tokensPerSec: number;
  gflops: number;
  peakGflops: number;
  mfu: number;
  peakTensors: number;
  peakBytes: number;
  /** WebGPU compute dispatches per step (webgpu only). */
  programsPerStep?: number;
}

/** Compute dispatches issued since the counter was installed (tfjs's programs and this package's). */
const dispatches = { count: 0, installed: false };
function countDispatches(): void {
  const proto = (globalThis as { GPUComputePassEncoder?: { prototype: { dispatchWorkgroups: (...a: unknown[]) => void } } }).GPUComputePassEncoder?.prototype;
  if (!proto || dispatches.installed) return;
  const dispatch = proto.dispatchWorkgroups;
  proto.dispatchWorkgroups = function (this: unknown, ...a: unknown[]) {
    dispatches.count += 1;
    return dispatch.apply(this, a);
  };
  dispatches.installed = true;
}

interface TorchRow {
  preset: string;
  msPerStep: number;
  tokensPerSec: number;
}

async function main() {
  const argv = yargs(hideBin(process.argv))
    .option('backends', { type: 'string', default: 'wasm,cpu,webgpu', describe: `comma list of ${BACKEND_NAMES.join(', ')}` })
    .option('presets', { type: 'string', default: 'tiny,small', describe: `comma list of ${PRESET_NAMES.join(', ')}` })
    .option('steps', { type: 'number', default: 5, describe: 'timed steps (median reported)' })
    .option('warmup', { type: 'number', default: 2, describe: 'untimed steps first' })
    .option('readme', { type: 'boolean', default: true, describe: 'write the table into README.md' })
    .option('baseline', { type: 'boolean', default: true, describe: `also measure without this package's kernels: wasm with ${FAST_FLAG}=false, webgpu with ${WEBGPU_TRAIN_FLAG}=false` })
    .option('torch', { type: 'boolean', default: true, describe: 'also train the PyTorch twin when available' })
    .option('torchDevice', { type: 'string', choices: ['cpu', 'cuda'], default: 'cpu', describe: 'where the PyTorch twin trains (cuda: beside webgpu on a GPU machine)' })
    .strict()
    .parseSync();
  const m = machine();
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
    const flag = name === 'wasm' ? FAST_FLAG : name === 'webgpu' ? WEBGPU_TRAIN_FLAG : null;
    const variants = flag && argv.baseline ? [true, false] : [true];
    if (name === 'webgpu') countDispatches();
    for (const preset of presets) {
      for (const fast of variants) {
        if (flag) tf.env().set(flag, fast);
        const label = fast ? info.name : `${info.name}, ${flag}=false`;
        const cfg = resolveConfig(preset);
        const rng = new Rng(5);
        const tokens = Int32Array.from({ length: 200_000 }, () => rng.int(cfg.model.vocabSize));
        const model = createModel(cfg.model);
        const trainer = new Trainer(model, { ...cfg.train, evalBatches: 1 }, { train: tokens, val: tokens.subarray(0, 20_000) });
        const d0 = dispatches.count;
        const { wall: ms, cpu } = await timeRunsCpu(async () => void (await trainer.trainStep()), argv.warmup, argv.steps);
        const programsPerStep = name === 'webgpu' ? (dispatches.count - d0) / (argv.warmup + argv.steps) : undefined;
        const mem = await peakMemory(() => trainer.trainStep());
        const msPerStep = median(ms);
        const tokensPerSec = (trainer.tokensPerStep * 1000) / msPerStep;
        const gflops = (trainFlopsPerToken(cfg.model) * tokensPerSec) / 1e9;
        const params = model.trainableVariables().reduce((a, v) => a + v.size, 0);
        rows.push({ backend: label, preset, params, msPerStep, msAll: ms, cpuMsPerStep: median(cpu), tokensPerSec, gflops, peakGflops: peak, mfu: gflops / peak, peakTensors: mem.tensors, peakBytes: mem.bytes, programsPerStep });
        const programs = programsPerStep === undefined ? '' : `, ${programsPerStep.toFixed(0)} programs/step`;
        console.log(`  ${preset} (${label}): ${msPerStep.toFixed(0)} ms/step, ${tokensPerSec.toFixed(0)} tokens/s, ${gflops.toFixed(2)} GFLOP/s${programs}`);
        trainer.dispose();
        model.dispose();
        tf.disposeVariables();
        if (flag) tf.env().set(flag, true);
      }
    }
  }
  const noTorch = argv.torch ? torchUnavailable() : 'not requested';
  const torch: TorchRow[] = [];
  if (noTorch === null) {
    const device = argv.torchDevice as 'cpu' | 'cuda';
    const twin = runTwin(['--configs', presets.join(','), '--train-runs', String(argv.steps), '--train-warm', String(argv.warmup), '--skip-decode'], 2, device);
    for (const r of twin.results) {
      if (r.train) torch.push({ preset: r.config, msPerStep: r.train.ms.median, tokensPerSec: r.train.tokensPerSec });
      else unavailable[`PyTorch ${r.config}`] = r.error ?? 'no result';
    }
  } else {
    unavailable.PyTorch = noTorch;
  }
  const vsTorch = (r: Row) => {
    const t = torch.find((x) => x.preset === r.preset);
    return t ? `${(t.tokensPerSec / r.tokensPerSec).toFixed(2)}×` : '–';
  };
  const gpu = rows.some((r) => r.programsPerStep !== undefined);
  const table = markdownTable(
    ['backend', 'preset', 'params', 'ms/step (median)', 'CPU ms/step', 'tokens/s', 'GFLOP/s', 'matMul peak GFLOP/s', 'MFU', 'peak tensors', 'peak MB', ...(gpu ? ['programs/step'] : []), 'PyTorch is … faster'],
    [
      ...rows.map((r) => [r.backend, r.preset, r.params, r.msPerStep.toFixed(0), r.cpuMsPerStep.toFixed(0), r.tokensPerSec.toFixed(0), r.gflops.toFixed(2), r.peakGflops.toFixed(1), `${(100 * r.mfu).toFixed(1)} %`, r.peakTensors, mb(r.peakBytes), ...(gpu ? [r.programsPerStep?.toFixed(0) ?? ''] : []), vsTorch(r)]),
      ...torch.map((t) => [argv.torchDevice === 'cuda' ? 'PyTorch CUDA, fp32 eager' : 'PyTorch CPU, 2 threads', t.preset, '', t.msPerStep.toFixed(0), '', t.tokensPerSec.toFixed(0), '', '', '', '', '', ...(gpu ? [''] : []), '1×']),
    ],
  );
  const command = `npm run bench -- ${process.argv.slice(2).join(' ')}`.trim();
  const file = writeResults('train_throughput', { machine: m, command, steps: argv.steps, warmup: argv.warmup, rows, torch, unavailable });
  const gone = Object.entries(unavailable).map(([b, why]) => `\`${b}\` not measured: ${why.split('.')[0]}.`);
  const note = `Training throughput, ${m.cpu} (${m.cores} cores, load ${m.load}), Node ${m.node}, tfjs ${m.tfjs}; \`${command}\`, median of ${argv.steps} steps after ${argv.warmup} warm-up.`;
  console.log(`\n${table}\n\nresults: ${file}`);
  if (argv.readme) updateReadme('train_throughput', [note, '', table, '', ...gone].join('\n'));
}

main().catch((e) => {
  console.error(`error: ${(e as Error).message}`);
  process.exit(1);
});
