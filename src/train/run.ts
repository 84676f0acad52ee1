/**
 * A whole training run on disk (Node only): corpus → tokenizer → model → steps, with evaluation,
 * a JSONL metrics log and durable checkpoints in one run folder. Used by the CLI, the experiment
 * scripts and the benchmarks; reports progress through callbacks and never prints.
 *
 * Run folder: config.json (the resolved config), metrics.jsonl (one JSON object per step and per
 * evaluation), model.ckpt (weights + optimiser state, written at every evaluation and when the run
 * is stopped), model.prev.ckpt (the one before), run.lock (held while training: one writer per folder).
 *
 * Nothing saved is lost: a failed write (disk full, read-only, permission) stops the run with the
 * previous checkpoint intact; `resume` refuses a checkpoint whose data or model settings differ from
 * the config, naming each field; a stop request (`signal`) ends the run after the current step with
 * a checkpoint, from which `resume` continues bit for bit.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import type { Config, TrainConfig } from '../config';
import { validate } from '../config';
import { loadCorpus, splitTrainVal } from '../data/corpus';
import { makeTokenizer, Tokenizer, tokenizerFromSpec } from '../data/tokenizer';
import { createModel, MtpModel } from '../model/create';
import { removeStaleTemps, writeFileDurable } from '../util/files';
import { Checkpoint, configDiff, loadParams, previousCheckpointPath, readCheckpoint, saveCheckpoint, trainerStateOf } from './checkpoint';
import { resolveWorkers, WorkerGroup } from './data_parallel';
import { checkFits } from './memory';
import { MetricsLog } from './metrics_log';
import { RunLock } from './run_lock';
import { EvalResult, StepResult, Trainer } from './trainer';
import { median } from '../util/median';

export interface RunOptions {
  config: Config;
  /** Run folder; created if missing. */
  outDir: string;
  /** Continue from outDir/model.ckpt (same data and model settings required). */
  resume?: boolean;
  /** Start afresh even if outDir already holds a checkpoint (the old checkpoints are deleted at the start). */
  overwrite?: boolean;
  /** Skip the estimate of training memory against what the machine (or the wasm heap) has. */
  allowLarge?: boolean;
  /** Backend the run trains on (memory limits, data-parallel workers); default: the active tfjs backend. */
  backend?: string;
  /** When aborted, the run stops after the current step, writes a checkpoint and resolves with `stopped` set. */
  signal?: AbortSignal;
  /** Sets weights of a fresh model before training (e.g. copies a trained trunk under new heads); not called on resume. */
  init?: (model: MtpModel) => void;
  /** Called once the model is built (resolved config: e.g. the char tokenizer's vocabulary size). */
  onStart?: (info: { config: Config; model: MtpModel; resumedFrom?: number; workers: number }) => void;
  /** Things the user should know that do not stop the run (settings changed on resume, repaired log lines). */
  onNotice?: (message: string) => void;
  onStep?: (r: StepResult) => void;
  onEval?: (step: number, r: EvalResult) => void;
}

export interface RunResult {
  model: MtpModel;
  tokenizer: Tokenizer;
  config: Config;
  /** Validation metrics at the last evaluation (absent when stopped before the first one). */
  val?: EvalResult;
  /** Median training throughput over the steps of this run (tokens/s). */
  tokensPerSec: number;
  steps: number;
  checkpoint: string;
  /** Set when the run was stopped early through `signal` (the reason given to abort()). */
  stopped?: string;
}

export const CHECKPOINT_FILE = 'model.ckpt';
const METRICS_FILE = 'metrics.jsonl';
const CONFIG_FILE = 'config.json';

/** Train settings that change the data a run sees or how it is measured: a resume must keep them. */
const DATA_FIELDS: (keyof TrainConfig)[] = ['corpus', 'tokenizer', 'maxCorpusBytes', 'batchSize', 'evalBatches'];

/** Tokenizer and token stream for a config's corpus (char vocab size is resolved into the config). */
export function prepareData(config: Config): { tokenizer: Tokenizer; tokens: Int32Array | Uint8Array; config: Config } {
  const corpus = loadCorpus(config.train.corpus, { maxBytes: config.train.maxCorpusBytes || undefined });
  const tokenizer = makeTokenizer(config.train.tokenizer, corpus.text);
  const tokens = config.train.tokenizer === 'byte' ? corpus.bytes : tokenizer.encode(corpus.text);
  const resolved: Config = { ...config, model: { ...config.model, vocabSize: tokenizer.vocabSize } };
  validate(resolved);
  return { tokenizer, tokens, config: resolved };
}

/** Lets timers, signals and I/O run between steps (tfjs reads resolve as microtasks and would starve them). */
function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Why `checkpoint` cannot be resumed with `config` and `tokenizer`: one line per differing model field, data field
 * or tokenizer (empty = it can). Other train fields (steps, lr, …) may change; `changedTrainFields` lists them.
 */
export function resumeMismatches(checkpoint: Checkpoint, config: Config, tokenizer: Tokenizer): string[] {
  const saved = checkpoint.header.config;
  const out = configDiff(saved.model, config.model);
  for (const key of DATA_FIELDS) {
    const a = JSON.stringify(saved.train[key]);
    const b = JSON.stringify(config.train[key]);
    if (a !== b) out.push(`train.${key}: checkpoint has ${a}, requested ${b}`);
  }
  if (JSON.stringify(checkpoint.header.tokenizer) !== JSON.stringify(tokenizer.toJSON())) {
    out.push('tokenizer: the checkpoint’s vocabulary differs from the one built from the corpus now');
  }
  return out;
}

/** Train fields other than the data fields that differ between the checkpoint and the config, as 'field: a → b'. */
export function changedTrainFields(checkpoint: Checkpoint, config: Config): string[] {
  const saved = checkpoint.header.config.train;
  return (Object.keys(config.train) as (keyof TrainConfig)[])
    .filter((key) => !DATA_FIELDS.includes(key) && JSON.stringify(saved[key]) !== JSON.stringify(config.train[key]))
    .map((key) => `train.${key}: ${JSON.stringify(saved[key])} → ${JSON.stringify(config.train[key])}`);
}

/** Reads the checkpoint to resume, with the previous one named when the newest is missing. */
function checkpointToResume(ckptPath: string): Checkpoint {
  if (!fs.existsSync(ckptPath)) {
    const prev = previousCheckpointPath(ckptPath);
    const hint = fs.existsSync(prev) ? `; the previous checkpoint ${prev} exists: move it to ${ckptPath} to resume from it` : '';
    throw new Error(`--resume: no checkpoint at ${ckptPath}${hint}`);
  }
  return readCheckpoint(ckptPath);
}

/** Trains per the config, evaluating and checkpointing every evalEvery steps, at the end, and when stopped. */
export async function trainRun(opts: RunOptions): Promise<RunResult> {
  if (opts.resume && opts.overwrite) throw new Error('--resume and --overwrite contradict each other: --resume continues the run folder’s checkpoint, --overwrite deletes it; pass one');
  const { tokenizer, tokens, config } = prepareData(opts.config);
  const backend = opts.backend ?? tf.getBackend();
  checkFits(config, backend, opts.allowLarge);
  const ranks = resolveWorkers(config.train, backend);
  const ckptPath = path.join(opts.outDir, CHECKPOINT_FILE);
  const prevPath = previousCheckpointPath(ckptPath);
  const metrics = new MetricsLog(path.join(opts.outDir, METRICS_FILE));
  const lock = RunLock.acquire(opts.outDir);
  let model: MtpModel | undefined;
  let trainer: Trainer | undefined;
  let group: WorkerGroup | undefined;
  try {
    const removed = removeStaleTemps(opts.outDir, [CHECKPOINT_FILE, path.basename(prevPath), METRICS_FILE, CONFIG_FILE]);
    if (removed.length) opts.onNotice?.(`removed ${removed.length} temporary file(s) left by an interrupted run: ${removed.map((f) => path.basename(f)).join(', ')}`);
    const exists = fs.existsSync(ckptPath);
    if (!opts.resume && exists && !opts.overwrite) {
      throw new Error(`${opts.outDir} already holds a checkpoint; pass --resume to continue it, --overwrite to start afresh, or --out to use another folder`);
    }
    const checkpoint = opts.resume ? checkpointToResume(ckptPath) : undefined;
    if (checkpoint) {
      const problems = resumeMismatches(checkpoint, config, tokenizer);
      if (problems.length) {
        throw new Error(
          `--resume: ${ckptPath} was trained with other settings:\n  - ${problems.join('\n  - ')}\n` +
            `pass the flags of the original run (its resolved config is in ${path.join(opts.outDir, CONFIG_FILE)}), or --overwrite to start afresh`,
        );
      }
      const changed = changedTrainFields(checkpoint, config);
      if (changed.length) opts.onNotice?.(`resuming with changed training settings: ${changed.join(', ')}`);
    }
    const { train, val } = splitTrainVal(tokens);
    model = createModel(config.model);
    trainer = new Trainer(model, config.train, { train, val });
    if (checkpoint) {
      loadParams(checkpoint, config.model, model.params, ckptPath);
      trainer.restore(trainerStateOf(checkpoint, ckptPath));
    } else {
      if (opts.overwrite) for (const f of [ckptPath, prevPath]) fs.rmSync(f, { force: true });
      opts.init?.(model);
    }
    if (ranks > 1) group = await WorkerGroup.start(ranks, config, backend, trainer, tokens);
    opts.onStart?.({ config, model, resumedFrom: checkpoint?.header.step, workers: ranks });
    writeFileDurable(path.join(opts.outDir, CONFIG_FILE), JSON.stringify(config, null, 2) + '\n');
    if (checkpoint) {
      const { dropped, repairedTornLine } = metrics.truncateAfter(trainer.step);
      if (repairedTornLine) opts.onNotice?.(`${metrics.file}: dropped a torn last line (written when a run was killed)`);
      if (dropped) opts.onNotice?.(`${metrics.file}: dropped ${dropped} line(s) of steps after the checkpoint's step ${trainer.step}; they are rerun`);
    } else {
      metrics.reset();
    }
    const throughput: number[] = [];
    let valResult: EvalResult | undefined;
    let savedStep = checkpoint ? checkpoint.header.step : -1;
    const save = async (valLoss?: number) => {
      if (savedStep === trainer!.step && valLoss === undefined) return;
      const meta = { config, tokenizer: tokenizer.toJSON(), step: trainer!.step, valLoss };
      try {
        await saveCheckpoint(ckptPath, meta, model!.params, await trainer!.state());
      } catch (e) {
        const kept = savedStep >= 0 ? `the checkpoint of step ${savedStep} at ${ckptPath} is intact` : 'no earlier checkpoint exists';
        throw new Error(`${(e as Error).message}; training stopped at step ${trainer!.step}, ${kept}`, { cause: e });
      }
      savedStep = trainer!.step;
    };
    const evaluateAndSave = async () => {
      valResult = await trainer!.evaluate();
      metrics.append({ type: 'eval', step: trainer!.step, valLoss: valResult.loss, heads: valResult.heads });
      opts.onEval?.(trainer!.step, valResult);
      await save(valResult.loss);
    };
    const { steps, evalEvery } = config.train;
    let stopped: string | undefined;
    while (trainer.step < steps) {
      if (opts.signal?.aborted) {
        stopped = String(opts.signal.reason ?? 'stopped');
        await save();
        break;
      }
      let r: StepResult;
      try {
        r = await trainer.trainStep();
      } catch (e) {
        const err = (group ? await group.explain(e) : e) as Error;
        metrics.append({ type: 'error', step: trainer.step + 1, message: err.message });
        throw err;
      }
      const tokPerSec = (r.tokens * 1000) / r.ms;
      throughput.push(tokPerSec);
      metrics.append({ type: 'train', step: r.step, loss: r.loss, lr: r.lr, gradNorm: r.gradNorm, tokPerSec, heads: r.heads });
      opts.onStep?.(r);
      await yieldToEventLoop();
      if (r.step % evalEvery === 0 || r.step === steps) await evaluateAndSave();
    }
    await group?.finish(trainer);
    group = undefined;
    if (!valResult && !stopped) {
      if (savedStep === trainer.step) valResult = await trainer.evaluate(); // resumed at the end: already logged and saved
      else await evaluateAndSave();
    }
    trainer.dispose();
    return { model, tokenizer, config, val: valResult, tokensPerSec: throughput.length ? median(throughput) : 0, steps: trainer.step, checkpoint: ckptPath, stopped };
  } catch (e) {
    await group?.terminate();
    trainer?.dispose();
    model?.dispose();
    throw e;
  } finally {
    lock.release();
  }
}

/** Loads a checkpoint into a fresh model built from the checkpoint's own config. */
export function loadModel(file: string): { model: MtpModel; tokenizer: Tokenizer; config: Config; step: number } {
  const ckpt = readCheckpoint(file);
  const config = ckpt.header.config;
  const model = createModel(config.model);
  try {
    loadParams(ckpt, config.model, model.params, file);
  } catch (e) {
    model.dispose();
    throw e;
  }
  const tokenizer = tokenizerFromSpec(ckpt.header.tokenizer);
  return { model, tokenizer, config, step: ckpt.header.step };
}
