/**
 * What every experiment script shares: the command line (`--quick`, config overrides, output folder),
 * the run folder (resolved config, results as JSON + CSV, figures beside their data), training or
 * reusing a model, prompts from the validation split, and a progress bar.
 *
 * Output: full runs write results and figures to figures/<experiment>/ (committed); `--quick` runs
 * write to runs/experiments-quick/<experiment>/ so they never overwrite committed results. Trained
 * models go to runs/experiments[-quick]/<experiment>/models/<label>/ and are reused when the same
 * config was trained before (pass --fresh to retrain).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import yargs from 'yargs';
import type { Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import { BACKEND_NAMES, BackendName, BackendInfo, initBackend } from '../src/backend/index';
import { configFromArgs, withConfigOptions } from '../src/cli/options';
import { progressBar } from '../src/cli/progress';
import type { Config } from '../src/config';
import { resolveConfig } from '../src/config';
import { evalBatches } from '../src/data/batch';
import { splitTrainVal } from '../src/data/corpus';
import type { MtpModel } from '../src/model/create';
import type { Tokenizer } from '../src/data/tokenizer';
import { evaluate, EvalResult } from '../src/train/evaluate';
import { readCheckpoint } from '../src/train/checkpoint';
import { makeDir } from '../src/util/files';
import { CHECKPOINT_FILE, loadModel, prepareData, trainRun, writeFileAtomic } from '../src/train/run';
import { FigureWriter, writeCsv } from '../src/plot/write';
import { Rng } from '../src/util/rng';

export interface Experiment {
  name: string;
  quick: boolean;
  /** Results, resolved config and figures. */
  outDir: string;
  /** Trained models. */
  workDir: string;
  backend: BackendInfo;
  /** Base config (preset + overrides) every model of the experiment starts from. */
  base: Config;
  args: Record<string, unknown>;
  fresh: boolean;
}

/** Parses the shared flags (plus `extra`), initialises the backend and the output folders. */
export async function startExperiment(name: string, describe: string, extra: (y: Argv) => Argv = (y) => y): Promise<Experiment> {
  const argv = (await extra(
    withConfigOptions(
      yargs(hideBin(process.argv))
        .scriptName(name)
        .usage(`${describe}\n\nnpx tsx experiments/${name}.ts [--quick] [flags]`)
        .parserConfiguration({ 'dot-notation': false, 'camel-case-expansion': false }),
    )
      .option('quick', { type: 'boolean', default: false, describe: 'nano/short settings for CI (≤ 3 minutes on 2 cores)' })
      .option('out', { type: 'string', describe: 'output folder [default: figures/<experiment>, or runs/experiments-quick/<experiment> with --quick]' })
      .option('backend', { type: 'string', default: 'wasm', choices: BACKEND_NAMES as unknown as string[], describe: 'tfjs backend for training and timing' })
      .option('fresh', { type: 'boolean', default: false, describe: 'retrain models even if a matching one was trained before' }),
  )
    .strict()
    .help()
    .parseAsync()) as Record<string, unknown>;
  const quick = argv.quick as boolean;
  if (argv.preset === undefined) argv.preset = quick ? 'nano' : 'tiny';
  const base = configFromArgs(argv);
  const root = quick ? path.join('runs', 'experiments-quick', name) : path.join('runs', 'experiments', name);
  const outDir = (argv.out as string | undefined) ?? (quick ? root : path.join('figures', name));
  const workDir = path.join(root, 'models');
  makeDir(outDir, 'the output folder');
  makeDir(workDir, 'the models folder');
  const backend = await initBackend(argv.backend as BackendName);
  const exp: Experiment = { name, quick, outDir, workDir, backend, base, args: argv, fresh: argv.fresh as boolean };
  const options = Object.fromEntries(Object.entries(argv).filter(([k]) => !['_', '$0'].includes(k) && !k.includes('.')));
  writeFileAtomic(path.join(outDir, 'config.json'), JSON.stringify({ experiment: name, options, base }, null, 2) + '\n');
  return exp;
}

/** Writes rows as results.json (with context) and results.csv. */
export function saveResults(exp: Experiment, rows: object[], extra: object = {}, name = 'results'): void {
  const payload = { experiment: exp.name, quick: exp.quick, backend: exp.backend, date: new Date().toISOString(), ...extra, rows };
  writeFileAtomic(path.join(exp.outDir, `${name}.json`), JSON.stringify(payload, null, 2) + '\n');
  writeCsv(rows, path.join(exp.outDir, `${name}.csv`));
}

/** Quick-mode overrides applied on top of the experiment's base config. */
export function quickTrain(exp: Experiment, cfg: Config): Config {
  if (!exp.quick) return cfg;
  return resolveConfig(undefined, { model: cfg.model, train: { ...cfg.train, steps: Math.min(cfg.train.steps, 30), maxCorpusBytes: 300_000, evalEvery: 30, evalBatches: 2 } });
}

export interface TrainedModel {
  label: string;
  model: MtpModel;
  tokenizer: Tokenizer;
  config: Config;
  /** Validation split of the model's corpus (tokens). */
  val: Uint8Array | Int32Array;
  /** Validation metrics on fixed windows (head 0 = next token). */
  eval: EvalResult;
  /** Median training tokens/s (NaN when reused from an earlier run). */
  trainTokensPerSec: number;
  /** Folder with model.ckpt and metrics.jsonl. */
  dir: string;
}

/**
 * Trains a model for `config` under workDir/<label>, or loads the one trained there before with the
 * same config. `init` may set weights before training (e.g. copy a trained trunk under Medusa heads).
 */
export async function trainOrLoad(exp: Experiment, label: string, config: Config, init?: (m: MtpModel) => void): Promise<TrainedModel> {
  const dir = path.join(exp.workDir, label);
  const ckpt = path.join(dir, CHECKPOINT_FILE);
  const { tokens } = prepareData(config);
  const { val } = splitTrainVal(tokens);
  // the same windows for every model of an experiment, so next-token losses compare across variants and k
  const batches = evalBatches(val, config.train.batchSize, config.model.blockSize, EVAL_TARGETS, config.train.evalBatches);
  const sameConfig = fs.existsSync(path.join(dir, 'config.json')) && fs.readFileSync(path.join(dir, 'config.json'), 'utf8') === JSON.stringify(config, null, 2) + '\n';
  const saved = !exp.fresh && sameConfig && fs.existsSync(ckpt) ? readCheckpoint(ckpt).header.step : -1;
  if (saved === config.train.steps) {
    const loaded = loadModel(ckpt);
    return { label, ...loaded, val, eval: await evaluate(loaded.model, trimK(batches, loaded.model.k)), trainTokensPerSec: NaN, dir };
  }
  const bar = progressBar(label.padEnd(18), 'loss {loss} | {tps} tok/s');
  bar.start(config.train.steps, Math.max(0, saved), { loss: '-', tps: '-' });
  const run = await trainRun({
    config,
    outDir: dir,
    resume: saved >= 0, // an interrupted run continues from its last checkpoint
    overwrite: true,
    init,
    onStep: (r) => bar.update(r.step, { loss: r.loss.toFixed(3), tps: Math.round((r.tokens * 1000) / r.ms) }),
  }).finally(() => bar.stop());
  return { label, model: run.model, tokenizer: run.tokenizer, config: run.config, val, eval: await evaluate(run.model, trimK(batches, run.model.k)), trainTokensPerSec: run.tokensPerSec, dir };
}

/** Targets per validation window (≥ any model's k in the experiments): fixes the windows for all models. */
const EVAL_TARGETS = 9;

function trimK<T extends { k: number }>(batches: T[], k: number): T[] {
  if (k > EVAL_TARGETS) throw new Error(`validation windows hold ${EVAL_TARGETS} targets, the model predicts ${k}`);
  return batches;
}

/** n prompts of `length` tokens from evenly spaced places in the validation split (seeded). */
export function valPrompts(val: ArrayLike<number>, n: number, length: number, seed = 2024): number[][] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => {
    const s = rng.int(val.length - length);
    return Array.from({ length }, (_, i) => val[s + i]);
  });
}

/** Validation loss per step from a run folder's metrics.jsonl. */
export function readCurves(dir: string): { step: number[]; train: number[]; valStep: number[]; val: number[] } {
  const out = { step: [] as number[], train: [] as number[], valStep: [] as number[], val: [] as number[] };
  const file = path.join(dir, 'metrics.jsonl');
  if (!fs.existsSync(file)) return out;
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!line) continue;
    const r = JSON.parse(line);
    if (r.type === 'train') {
      out.step.push(r.step);
      out.train.push(r.heads[0].loss);
    } else if (r.type === 'eval') {
      out.valStep.push(r.step);
      out.val.push(r.heads[0].loss);
    }
  }
  return out;
}

/** One figure writer per experiment (one Chromium for all PNGs), sharing one plotly.js beside the figure folders. */
export function figureWriter(exp: Experiment): FigureWriter {
  return new FigureWriter({ sharedPlotly: path.join(path.dirname(exp.outDir), 'plotly.min.js') });
}
