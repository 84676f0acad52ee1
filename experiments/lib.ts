/**
 * What every experiment script shares: the command line (`--quick`, config overrides, output folder),
 * the run folder (resolved config, results as JSON + CSV, figures beside their data), training or
 * reusing a model, prompts from the validation split, and a progress bar.
 *
 * Models: by default an experiment loads the model zoo's trained models (models/, src/zoo/) for the models it has
 * there (ModelSpec.zoo); `--train` trains every model from scratch with the preset and flags given, and `--quick`
 * always trains (nano models, so CI exercises the training path in minutes).
 *
 * Output: full runs write results and figures to figures/<experiment>/ (committed); `--quick` runs
 * write to runs/experiments-quick/<experiment>/ so they never overwrite committed results. Trained
 * models go to runs/experiments[-quick]/<experiment>/models/<label>/ and are reused when the same
 * config was trained before (pass --fresh to retrain).
 *
 * Models in parallel: an experiment declares the models it trains (declareModels) before it trains
 * any. With `--jobs=N` the job pool (jobs.ts) trains the missing ones N at a time, each in its own
 * process, and the experiment then finds them trained; with `--plan=<file>` it only writes them to
 * the file and exits (run_all.ts collects every experiment's models this way and trains them all
 * first). Without either, trainOrLoad trains each model in this process when it is needed. Either
 * way a model is the same bit for bit: the same config trained by the same code on the same backend
 * (`train.backend` is the experiment's `--backend`, and `train.workers` is 1 unless given, so the
 * numbers do not depend on the machine's core count).
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
export { valPrompts } from '../src/data/batch';
import { splitTrainVal } from '../src/data/corpus';
import type { MtpModel } from '../src/model/create';
import type { Tokenizer } from '../src/data/tokenizer';
import { evaluate, EvalResult } from '../src/train/evaluate';
import { initFromCheckpoint, readCheckpoint } from '../src/train/checkpoint';
import { makeDir, writeFileDurable } from '../src/util/files';
import { CHECKPOINT_FILE, loadModel, prepareData, trainRun } from '../src/train/run';
import { FigureWriter, writeCsv } from '../src/plot/write';
import { parseJobs, runJobs, TrainJob } from './jobs';
import { runState } from './run_state';
import { loadZooModel } from '../src/zoo/load';

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
  /** Train the models (`--train`, or `--quick`) rather than load the zoo's. */
  train: boolean;
  fresh: boolean;
  /** `--jobs`: train the declared models in this many processes first (undefined: train each here when needed). */
  jobs?: number;
  /** `--plan`: write the declared models to this file and exit. */
  planFile?: string;
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
      .option('png', { type: 'boolean', default: true, describe: 'write each figure as PNG too (needs Chromium); --png=false writes HTML + data only (render the PNGs later: npx tsx experiments/render_pngs.ts FOLDER)' })
      .option('train', { type: 'boolean', default: false, describe: "train every model from scratch (the preset and flags given) instead of loading the zoo's trained models; --quick always trains" })
      .option('fresh', { type: 'boolean', default: false, describe: 'retrain models even if a matching one was trained before' })
      .option('jobs', { type: 'number', describe: 'train the models this experiment needs first, in this many processes at a time (one wasm engine each) [default: in this process, one after another]' })
      .option('plan', { type: 'string', describe: 'only write the models this experiment trains (JSON job list) to this file, then exit (used by run_all)' }),
  )
    .strict()
    .help()
    .parseAsync()) as Record<string, unknown>;
  const quick = argv.quick as boolean;
  if (argv.preset === undefined) argv.preset = quick ? 'nano' : 'tiny';
  if (argv['train.backend'] !== undefined && argv['train.backend'] !== argv.backend) {
    throw new Error(`--train.backend=${argv['train.backend']} differs from --backend=${argv.backend}: an experiment trains and measures on --backend; pass that one only`);
  }
  argv['train.backend'] = argv.backend; // the backend its models train on, also in a training process of their own
  if (argv['train.workers'] === undefined) argv['train.workers'] = 1; // one engine per model: parallelism is --jobs
  const base = configFromArgs(argv);
  const jobs = argv.jobs === undefined ? undefined : parseJobs(argv.jobs);
  const planFile = argv.plan as string | undefined;
  const train = quick || (argv.train as boolean);
  const root = quick ? path.join('runs', 'experiments-quick', name) : path.join('runs', 'experiments', name);
  const outDir = (argv.out as string | undefined) ?? (quick ? root : path.join('figures', name));
  const workDir = path.join(root, 'models');
  if (planFile !== undefined) {
    const backend: BackendInfo = { name: argv.backend as string, platform: 'node', detail: 'not started (--plan)' };
    return { name, quick, outDir, workDir, backend, base, args: argv, train, fresh: argv.fresh as boolean, jobs, planFile };
  }
  makeDir(outDir, 'the output folder');
  makeDir(workDir, 'the models folder');
  const backend = await initBackend(argv.backend as BackendName);
  const exp: Experiment = { name, quick, outDir, workDir, backend, base, args: argv, train, fresh: argv.fresh as boolean, jobs };
  const options = Object.fromEntries(Object.entries(argv).filter(([k]) => !['_', '$0', 'jobs', 'plan'].includes(k) && !k.includes('.')));
  writeFileDurable(path.join(outDir, 'config.json'), JSON.stringify({ experiment: name, options, base }, null, 2) + '\n');
  return exp;
}

/** Writes rows as results.json (with context) and results.csv. */
export function saveResults(exp: Experiment, rows: object[], extra: object = {}, name = 'results'): void {
  const payload = { experiment: exp.name, quick: exp.quick, backend: exp.backend, date: new Date().toISOString(), ...extra, rows };
  writeFileDurable(path.join(exp.outDir, `${name}.json`), JSON.stringify(payload, null, 2) + '\n');
  writeCsv(rows, path.join(exp.outDir, `${name}.csv`));
}

/** Quick-mode overrides applied on top of the experiment's base config. */
export function quickTrain(exp: Experiment, cfg: Config): Config {
  if (!exp.quick) return cfg;
  return resolveConfig(undefined, { model: cfg.model, train: { ...cfg.train, steps: Math.min(cfg.train.steps, 30), maxCorpusBytes: 300_000, evalEvery: 30, evalBatches: 2 } });
}

/** A model an experiment trains: its folder under the work folder, its config, and where its first weights come from. */
export interface ModelSpec {
  /** Folder name under the experiment's work folder (unique within it). */
  label: string;
  config: Config;
  /**
   * Label of another declared model whose trained weights start this one: its same-named, same-shaped tensors are
   * copied, and Medusa heads then start from the LM head (as `mtp train --init`; e.g. Medusa-1 on a trained trunk).
   */
  initFrom?: string;
  /** The zoo model that stands for this one unless the experiment trains (`--train`, `--quick`): trainOrLoad loads it. */
  zoo?: string;
}

/** True when trainOrLoad loads `spec` from the zoo rather than training it. */
export function fromZoo(exp: Experiment, spec: ModelSpec): boolean {
  return !exp.train && spec.zoo !== undefined;
}

/** The job-pool name of a model: '<experiment folder>/<label>' (the same for experiments sharing a work folder). */
function jobName(exp: Experiment, label: string): string {
  return `${path.basename(path.dirname(exp.workDir))}/${label}`;
}

/** The pool jobs that train an experiment's declared models. */
export function modelJobs(exp: Experiment, specs: ModelSpec[]): TrainJob[] {
  const labels = new Set(specs.map((s) => s.label));
  return specs.map((s) => {
    if (s.initFrom !== undefined && !labels.has(s.initFrom)) {
      throw new Error(`model '${s.label}' starts from '${s.initFrom}', which the experiment does not declare (declared: ${[...labels].join(', ')})`);
    }
    return {
      name: jobName(exp, s.label),
      config: s.config,
      dir: path.resolve(exp.workDir, s.label),
      ...(s.initFrom !== undefined ? { init: path.resolve(exp.workDir, s.initFrom, CHECKPOINT_FILE), after: [jobName(exp, s.initFrom)] } : {}),
    };
  });
}

/**
 * Declares the models the experiment trains, before it trains any (experiments that train none declare []). With
 * `--plan` writes them to the plan file and exits; with `--jobs` trains the missing ones in the job pool (throws if
 * any fails); else returns and trainOrLoad trains them here.
 */
export async function declareModels(exp: Experiment, specs: ModelSpec[]): Promise<void> {
  const jobs = modelJobs(exp, specs.filter((s) => !fromZoo(exp, s))); // zoo models are loaded, not trained
  if (exp.planFile !== undefined) {
    writeFileDurable(exp.planFile, JSON.stringify({ experiment: exp.name, jobs }, null, 2) + '\n');
    process.exit(0);
  }
  if (exp.jobs === undefined || jobs.length === 0) return;
  const r = await runJobs(jobs, { jobs: exp.jobs, fresh: exp.fresh, replace: true });
  if (!r.ok) {
    const failed = r.results.filter((x) => x.status !== 'trained' && x.status !== 'skipped').map((x) => x.name);
    throw new Error(`training failed for ${failed.join(', ')} (reports above; each run folder keeps its train.log)`);
  }
  exp.fresh = false; // trained just now: reuse them
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
  /** Median training tokens/s over the steps of its run (read from its metrics log when reused). */
  trainTokensPerSec: number;
  /** Folder with model.ckpt and metrics.jsonl (undefined for a zoo model: the zoo keeps weights only). */
  dir?: string;
  /** The zoo model it is, when loaded from the zoo. */
  zoo?: string;
}

/** Median of the per-step training tokens/s in a run folder's metrics.jsonl (NaN when it has none). */
function loggedTokensPerSec(dir: string): number {
  const file = path.join(dir, 'metrics.jsonl');
  const tps: number[] = [];
  if (fs.existsSync(file)) {
    for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
      if (!line.includes('"train"')) continue;
      try {
        const r = JSON.parse(line);
        if (r.type === 'train' && typeof r.tokPerSec === 'number') tps.push(r.tokPerSec);
      } catch {
        // a torn last line
      }
    }
  }
  tps.sort((a, b) => a - b);
  return tps.length ? tps[Math.floor(tps.length / 2)] : NaN;
}

/** Sets a fresh model's weights from a checkpoint, as `mtp train --init` does (same-named, same-shaped tensors; Medusa heads from the LM head). */
function initFrom(file: string): (m: MtpModel) => void {
  return (m) => {
    initFromCheckpoint(readCheckpoint(file), m, file);
  };
}

/**
 * Trains the model of `spec` under workDir/<label>, or loads the one trained there before with the same config
 * (by this process, an earlier run or the job pool); an interrupted run of the same config is resumed.
 */
export async function trainOrLoad(exp: Experiment, spec: ModelSpec): Promise<TrainedModel> {
  if (fromZoo(exp, spec)) return loadFromZoo(spec.label, spec.zoo!);
  const { label, config } = spec;
  const dir = path.join(exp.workDir, label);
  const ckpt = path.join(dir, CHECKPOINT_FILE);
  const { val, batches } = validation(config);
  const state = exp.fresh ? { state: 'fresh' as const } : runState(dir, config);
  if (state.state === 'finished') {
    const loaded = loadModel(ckpt);
    return { label, ...loaded, val, eval: await evaluateOn(loaded.model, batches), trainTokensPerSec: loggedTokensPerSec(dir), dir };
  }
  const resume = state.state === 'partial'; // an interrupted run continues from its last checkpoint
  const bar = progressBar(label.padEnd(18), 'loss {loss} | {tps} tok/s');
  bar.start(config.train.steps, resume ? state.step : 0, { loss: '-', tps: '-' });
  const run = await trainRun({
    config,
    outDir: dir,
    resume,
    overwrite: !resume,
    init: spec.initFrom !== undefined ? initFrom(path.join(exp.workDir, spec.initFrom, CHECKPOINT_FILE)) : undefined,
    onStep: (r) => bar.update(r.step, { loss: r.loss.toFixed(3), tps: Math.round((r.tokens * 1000) / r.ms) }),
  }).finally(() => bar.stop());
  return { label, model: run.model, tokenizer: run.tokenizer, config: run.config, val, eval: await evaluateOn(run.model, batches), trainTokensPerSec: run.tokensPerSec, dir };
}

/**
 * A zoo model (hash-checked) with the validation split of its corpus and its metrics on the experiment's fixed
 * validation windows; its training speed is unknown here (NaN): the zoo records where and how long it trained.
 */
async function loadFromZoo(label: string, name: string): Promise<TrainedModel> {
  const { model, tokenizer, config } = loadZooModel(name);
  const { val, batches } = validation(config);
  return { label, model, tokenizer, config, val, eval: await evaluateOn(model, batches), trainTokensPerSec: NaN, zoo: name };
}

/**
 * The validation split of a config's corpus and the experiment's windows on it: the same windows for every model of
 * an experiment, so next-token losses compare across variants and k.
 */
function validation(config: Config): { val: TrainedModel['val']; batches: ReturnType<typeof evalBatches> } {
  const { val } = splitTrainVal(prepareData(config).tokens);
  return { val, batches: evalBatches(val, config.train.batchSize, config.model.blockSize, EVAL_TARGETS, config.train.evalBatches) };
}

/** Targets per validation window (≥ any model's k in the experiments): fixes the windows for all models. */
const EVAL_TARGETS = 9;

/** A model's validation metrics on the experiment's windows (validation), which hold EVAL_TARGETS targets each. */
function evaluateOn(model: MtpModel, batches: ReturnType<typeof evalBatches>): Promise<EvalResult> {
  if (model.k > EVAL_TARGETS) throw new Error(`validation windows hold ${EVAL_TARGETS} targets, the model predicts ${model.k}`);
  return evaluate(model, batches);
}

/** Validation loss per step from a run folder's metrics.jsonl (empty for a zoo model: no run folder). */
export function readCurves(dir: string | undefined): { step: number[]; train: number[]; valStep: number[]; val: number[] } {
  const out = { step: [] as number[], train: [] as number[], valStep: [] as number[], val: [] as number[] };
  if (dir === undefined) return out;
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
  return new FigureWriter({ sharedPlotly: path.join(path.dirname(exp.outDir), 'plotly.min.js'), png: exp.args.png !== false });
}
