/**
 * What multi-token training costs: step time and peak memory of each MTP variant relative to the
 * plain k = 1 model of the same trunk, same backend, same run. Peak bytes and tensors come from
 * tf.profile over one full training step (loss, gradients, AdamW update).
 *
 *   npm run bench:mtp -- [--preset=tiny] [--steps=5] [--backend=wasm]
 */
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import * as tf from '@tensorflow/tfjs';
import { BACKEND_NAMES, BackendName, initBackend } from '../src/backend/index';
import { BackwardMode, MtpConfig, MTP_DEFAULTS, PRESET_NAMES, PresetName, resolveConfig } from '../src/config';
import { createModel } from '../src/model/create';
import { Trainer } from '../src/train/trainer';
import { Rng } from '../src/util/rng';
import { machine, markdownTable, median, timeRuns, updateReadme, writeResults } from './common';

interface Case {
  label: string;
  mtp: MtpConfig;
  backward: BackwardMode;
}

function cases(): Case[] {
  const out: Case[] = [{ label: 'k = 1 (baseline)', mtp: { kind: 'none' }, backward: 'joint' }];
  for (const k of [2, 4, 8]) {
    for (const backward of ['joint', 'memory-efficient'] as const) {
      out.push({ label: `parallel k = ${k}, ${backward}`, mtp: { ...MTP_DEFAULTS.parallel, k }, backward });
    }
  }
  for (const depth of [1, 3]) out.push({ label: `sequential D = ${depth}`, mtp: { ...MTP_DEFAULTS.sequential, depth }, backward: 'joint' });
  out.push({ label: 'Medusa-1, K = 4', mtp: { ...MTP_DEFAULTS.medusa, heads: 4, frozenTrunk: true }, backward: 'joint' });
  return out;
}

async function main() {
  const argv = yargs(hideBin(process.argv))
    .option('preset', { type: 'string', default: 'tiny', choices: PRESET_NAMES as unknown as string[] })
    .option('steps', { type: 'number', default: 5, describe: 'timed steps per case (median)' })
    .option('warmup', { type: 'number', default: 2 })
    .option('backend', { type: 'string', default: 'wasm', choices: BACKEND_NAMES as unknown as string[] })
    .option('readme', { type: 'boolean', default: true, describe: 'write the table into README.md' })
    .strict()
    .parseSync();
  const backend = await initBackend(argv.backend as BackendName);
  const base = resolveConfig(argv.preset as PresetName);
  const rng = new Rng(5);
  const tokens = Int32Array.from({ length: 200_000 }, () => rng.int(base.model.vocabSize));
  const rows: { label: string; ms: number; ratio: number; peakMB: number; peakTensors: number; peakRatio: number; skipped?: string }[] = [];
  let baseMs = 0;
  let basePeak = 0;
  for (const c of cases()) {
    let model;
    try {
      model = createModel({ ...base.model, nLayer: Math.max(base.model.nLayer, c.mtp.kind === 'parallel' ? 2 : 1), mtp: c.mtp });
    } catch (e) {
      rows.push({ label: c.label, ms: NaN, ratio: NaN, peakMB: NaN, peakTensors: NaN, peakRatio: NaN, skipped: (e as Error).message });
      console.log(`${c.label}: skipped — ${(e as Error).message}`);
      continue;
    }
    const trainer = new Trainer(model, { ...base.train, backward: c.backward, evalBatches: 1 }, { train: tokens, val: tokens.subarray(0, 20_000) });
    const ms = median(await timeRuns(async () => void (await trainer.trainStep()), argv.warmup, argv.steps));
    const resident = tf.memory().numBytes; // weights + optimiser state
    const prof = await tf.profile(async () => void (await trainer.trainStep()));
    const peak = prof.peakBytes - resident; // activations, gradients and temporaries of one step
    if (!baseMs) {
      baseMs = ms;
      basePeak = peak;
    }
    rows.push({ label: c.label, ms, ratio: ms / baseMs, peakMB: peak / 2 ** 20, peakTensors: prof.newTensors, peakRatio: peak / basePeak });
    console.log(`${c.label}: ${ms.toFixed(0)} ms/step (×${(ms / baseMs).toFixed(2)}), step peak ${(peak / 2 ** 20).toFixed(1)} MB`);
    trainer.dispose();
    model.dispose();
  }
  const m = machine();
  const command = `npm run bench:mtp -- ${process.argv.slice(2).join(' ')}`.trim();
  const table = markdownTable(
    ['variant', 'ms/step (median)', '× k = 1', 'step peak MB (above weights)', '× k = 1'],
    rows.map((r) => (r.skipped ? [r.label, 'not available', '', '', ''] : [r.label, r.ms.toFixed(0), `×${r.ratio.toFixed(2)}`, r.peakMB.toFixed(1), `×${r.peakRatio.toFixed(2)}`])),
  );
  const file = writeResults('mtp_overhead', { machine: m, backend, command, preset: argv.preset, rows });
  console.log(`\n${table}\n\nresults: ${file}`);
  const note = `MTP training overhead, preset \`${argv.preset}\`, ${backend.name} on ${m.cpu} (${m.cores} cores); \`${command}\`; median of ${argv.steps} steps; step peak = tf.profile peakBytes of one step minus the resident weights and optimiser state.`;
  if (argv.readme) updateReadme('mtp_overhead', `${note}\n\n${table}`);
}

main().catch((e) => {
  console.error(`error: ${(e as Error).message}`);
  process.exit(1);
});
