/**
 * Where a decoding step's time goes, per decoder, on the engine (src/decode/engine.ts): step ms, the
 * AR step ms on the same model, the verification forward alone over the same number of tokens, and the
 * step's shares — target forward, drafting (the drafter's own networks and bookkeeping), acceptance,
 * KV cache, host read, and the rest (the loop itself). Random weights (drafts rarely accepted: every
 * step verifies a full draft), and, with --ckpt, trained models.
 *
 *   npm run bench:step [-- --presets=small,medium --tokens=96 --runs=5 --ckpt=runs/a/model.ckpt,runs/b/model.ckpt --readme]
 */
import * as tf from '@tensorflow/tfjs';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { BACKEND_NAMES, BackendName, initBackend } from '../src/backend/index';
import { ModelConfig, MtpConfig, MTP_DEFAULTS, PRESET_NAMES, PresetName, resolveConfig } from '../src/config';
import { greedyAcceptance } from '../src/decode/acceptance';
import { DecodeSession, StepProfile } from '../src/decode/engine';
import type { Drafter } from '../src/decode/drafter';
import { PromptLookupDrafter } from '../src/decode/lookup';
import { createModel } from '../src/model/create';
import type { MtpModel } from '../src/model/mtp_model';
import { loadModel } from '../src/train/run';
import { Rng } from '../src/util/rng';
import { machine, markdownTable, median, updateReadme, writeResults } from './common';

interface Case {
  label: string;
  mtp: MtpConfig;
  drafter: (m: MtpModel) => Drafter | null;
}

const CASES: Case[] = [
  { label: 'AR', mtp: { kind: 'none' }, drafter: () => null },
  { label: 'blockwise k=4 (parallel heads)', mtp: { ...MTP_DEFAULTS.parallel, k: 4 }, drafter: (m) => m.drafter() },
  { label: 'Medusa chain K=5', mtp: { ...MTP_DEFAULTS.medusa, heads: 5 }, drafter: (m) => m.drafter() },
  { label: 'sequential D=1', mtp: { ...MTP_DEFAULTS.sequential, depth: 1 }, drafter: (m) => m.drafter() },
  { label: 'sequential D=3', mtp: { ...MTP_DEFAULTS.sequential, depth: 3 }, drafter: (m) => m.drafter() },
  { label: 'prompt lookup k=5', mtp: { kind: 'none' }, drafter: () => new PromptLookupDrafter({ k: 5 }) },
];

interface Row {
  model: string;
  decoder: string;
  /** Median ms per step (one verification forward). */
  stepMs: number;
  /** Median ms per AR step on the same model (its next-token head alone). */
  arStepMs: number;
  /** Median ms of the verification forward alone over the step's mean fed tokens, logits read back. */
  forwardMs: number;
  /** Tokens a full draft feeds (1 + draft depth): what `forwardMs` runs. */
  fed: number;
  tau: number;
  /** Shares of the step (sum 1). */
  shares: { forward: number; drafting: number; acceptance: number; cache: number; read: number; other: number };
}

/** One decode of `tokens` tokens with the engine's profiler on; returns per-step ms, phase sums and τ. */
async function profiled(model: MtpModel, drafter: Drafter | null, prompt: number[], tokens: number): Promise<{ stepMs: number; profile: StepProfile; tau: number; fed: number }> {
  const session = new DecodeSession(model, drafter, prompt, { acceptance: greedyAcceptance(), profile: true });
  try {
    await session.run(tokens);
    const steps = session.forwards - 1; // the prefill is not a decoding step
    const p = session.profile;
    const fed = session.steps.slice(1).reduce((a, b) => a + b, 0) / Math.max(1, steps);
    return { stepMs: p.total / session.forwards, profile: p, tau: session.generated / session.forwards, fed };
  } finally {
    session.dispose();
  }
}

/** Median ms of a verification forward over n tokens after a `past`-token cache, logits read back. */
async function forwardMs(model: MtpModel, n: number, past: number, runs: number): Promise<number> {
  const cache = model.newCache();
  const rng = new Rng(5);
  const prefix = Array.from({ length: past }, () => rng.int(model.config.vocabSize));
  tf.tidy(() => tf.dispose(model.verifyForward(prefix, cache)));
  const ms: number[] = [];
  for (let r = 0; r < runs + 3; r++) {
    const t0 = performance.now();
    const out = tf.tidy(() => tf.argMax(model.verifyForward(prefix.slice(0, n), cache).logits, 1));
    await out.data();
    out.dispose();
    if (r >= 3) ms.push(performance.now() - t0);
    cache.truncate(past);
  }
  cache.dispose();
  return median(ms);
}

async function measure(name: string, model: MtpModel, label: string, drafter: () => Drafter | null, argv: { tokens: number; runs: number }): Promise<Row> {
  const rng = new Rng(11);
  const prompt = Array.from({ length: 16 }, () => rng.int(model.config.vocabSize));
  await profiled(model, drafter(), prompt, 16); // warm-up
  await profiled(model, null, prompt, 16);
  const runs = [];
  const ar: number[] = [];
  for (let r = 0; r < argv.runs; r++) {
    ar.push((await profiled(model, null, prompt, argv.tokens)).stepMs);
    runs.push(await profiled(model, drafter(), prompt, argv.tokens));
  }
  const mid = runs.sort((a, b) => a.stepMs - b.stepMs)[Math.floor(runs.length / 2)];
  const p = mid.profile;
  const probe = drafter();
  const fed = 1 + (probe?.maxDepth ?? 0); // tokens a full draft feeds
  probe?.dispose();
  const fwd = await forwardMs(model, fed, Math.min(64, model.config.blockSize - fed), argv.runs * 4);
  const other = Math.max(0, p.total - p.verify - p.draft - p.accept - p.cache - p.read);
  return {
    model: name,
    decoder: label,
    stepMs: mid.stepMs,
    arStepMs: median(ar),
    forwardMs: fwd,
    fed,
    tau: mid.tau,
    shares: { forward: p.verify / p.total, drafting: p.draft / p.total, acceptance: p.accept / p.total, cache: p.cache / p.total, read: p.read / p.total, other: other / p.total },
  };
}

async function main() {
  const argv = yargs(hideBin(process.argv))
    .option('presets', { type: 'string', default: 'small,medium', describe: `model shapes with random weights (comma list of ${PRESET_NAMES.join(', ')})` })
    .option('ckpt', { type: 'string', describe: 'trained checkpoints to profile too (comma list); each with its own drafter and prompt lookup' })
    .option('tokens', { type: 'number', default: 96, describe: 'tokens generated per profiled run' })
    .option('runs', { type: 'number', default: 5, describe: 'runs per decoder (medians)' })
    .option('backend', { type: 'string', default: 'wasm', choices: BACKEND_NAMES as unknown as string[] })
    .option('name', { type: 'string', default: 'step_profile', describe: 'results file (bench/results/<name>.json) and README block name' })
    .option('readme', { type: 'boolean', default: false, describe: 'write the table into README.md' })
    .strict()
    .parseSync();
  const backend = await initBackend(argv.backend as BackendName);
  const rows: Row[] = [];
  const report = (r: Row) => {
    rows.push(r);
    const s = r.shares;
    console.log(`${r.model} ${r.decoder}: step ${r.stepMs.toFixed(2)} ms = ${(r.stepMs / r.arStepMs).toFixed(2)}× AR step (${r.arStepMs.toFixed(2)} ms), forward alone ${r.forwardMs.toFixed(2)} ms | forward ${pct(s.forward)}, drafting ${pct(s.drafting)}, acceptance ${pct(s.acceptance)}, cache ${pct(s.cache)}, read ${pct(s.read)}, other ${pct(s.other)} | τ ${r.tau.toFixed(2)}`);
  };
  for (const preset of argv.presets.split(',').filter(Boolean) as PresetName[]) {
    const base: ModelConfig = resolveConfig(preset).model;
    for (const c of CASES) {
      const model = createModel({ ...base, mtp: c.mtp });
      report(await measure(`${preset} (random weights)`, model, c.label, () => c.drafter(model), argv));
      model.dispose();
    }
  }
  for (const ckpt of (argv.ckpt ?? '').split(',').filter(Boolean)) {
    const { model, config } = loadModel(ckpt);
    const own = model.k > 1 ? [{ label: `${config.model.mtp.kind} k=${model.k}`, make: () => model.drafter() }] : [];
    for (const d of [...own, { label: 'prompt lookup k=5', make: () => new PromptLookupDrafter({ k: 5 }) as Drafter }]) {
      report(await measure(`${ckpt} (trained)`, model, d.label, d.make, argv));
    }
    model.dispose();
  }
  const m = machine();
  const command = `npm run bench:step -- ${process.argv.slice(2).join(' ')}`.trim();
  writeResults(argv.name, { machine: m, backend: backend.name, command, tokens: argv.tokens, runs: argv.runs, rows });
  if (argv.readme) {
    const head = `One decoding step per decoder on the engine, ${backend.name} on ${m.cpu} (${m.cores} cores, load ${m.load}), Node ${m.node}, tfjs ${m.tfjs}; medians of ${argv.runs} runs × ${argv.tokens} tokens. \`${command}\``;
    const table = markdownTable(
      ['model', 'decoder', 'step ms', '÷ AR step', 'forward alone ms', 'forward', 'drafting', 'acceptance', 'cache', 'read', 'other', 'τ'],
      rows.map((r) => [r.model, r.decoder, r.stepMs.toFixed(2), `${(r.stepMs / r.arStepMs).toFixed(2)}×`, r.forwardMs.toFixed(2), pct(r.shares.forward), pct(r.shares.drafting), pct(r.shares.acceptance), pct(r.shares.cache), pct(r.shares.read), pct(r.shares.other), r.tau.toFixed(2)]),
    );
    updateReadme(argv.name, `${head}\n\n${table}`);
  }
}

function pct(x: number): string {
  return `${(100 * x).toFixed(0)} %`;
}

main()
  .then(() => process.exit(0)) // Dawn (WebGPU in Node) can keep the event loop alive after the work is done
  .catch((e: Error) => {
    console.error(`error: ${e.message}`);
    process.exit(1);
  });
