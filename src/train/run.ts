/**
 * A whole training run on disk (Node only): corpus → tokenizer → model → steps, with evaluation,
 * a JSONL metrics log and atomic checkpoints in one run folder. Used by the CLI, the experiment
 * scripts and the benchmarks; reports progress through callbacks and never prints.
 *
 * Run folder: config.json (the resolved config), metrics.jsonl (one JSON object per step and per
 * evaluation), model.ckpt (weights + optimiser state, written at every evaluation).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Config } from '../config';
import { validate } from '../config';
import { loadCorpus, splitTrainVal } from '../data/corpus';
import { makeTokenizer, Tokenizer, tokenizerFromSpec } from '../data/tokenizer';
import { createModel, MtpModel } from '../model/create';
import { loadParams, readCheckpoint, saveCheckpoint, trainerStateOf } from './checkpoint';
import { EvalResult, StepResult, Trainer } from './trainer';

export interface RunOptions {
  config: Config;
  /** Run folder; created if missing. */
  outDir: string;
  /** Continue from outDir/model.ckpt (same config required). */
  resume?: boolean;
  /** Start afresh even if outDir already holds a checkpoint (it is replaced at the first evaluation). */
  overwrite?: boolean;
  /** Sets weights of a fresh model before training (e.g. copies a trained trunk under new heads); not called on resume. */
  init?: (model: MtpModel) => void;
  onStep?: (r: StepResult) => void;
  onEval?: (step: number, r: EvalResult) => void;
}

export interface RunResult {
  model: MtpModel;
  tokenizer: Tokenizer;
  config: Config;
  /** Validation metrics at the last evaluation. */
  val: EvalResult;
  /** Median training throughput over the steps of this run (tokens/s). */
  tokensPerSec: number;
  steps: number;
  checkpoint: string;
}

export const CHECKPOINT_FILE = 'model.ckpt';

/** Tokenizer and token stream for a config's corpus (char vocab size is resolved into the config). */
export function prepareData(config: Config): { tokenizer: Tokenizer; tokens: Int32Array | Uint8Array; config: Config } {
  const corpus = loadCorpus(config.train.corpus, { maxBytes: config.train.maxCorpusBytes || undefined });
  const tokenizer = makeTokenizer(config.train.tokenizer, corpus.text);
  const tokens = config.train.tokenizer === 'byte' ? corpus.bytes : tokenizer.encode(corpus.text);
  const resolved: Config = { ...config, model: { ...config.model, vocabSize: tokenizer.vocabSize } };
  validate(resolved);
  return { tokenizer, tokens, config: resolved };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : 0;
}

/** Lets timers and I/O run between steps (tfjs reads resolve as microtasks and would starve them). */
function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Writes a file atomically (temp + rename). */
export function writeFileAtomic(file: string, text: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

/** Trains per the config, evaluating and checkpointing every evalEvery steps and at the end. */
export async function trainRun(opts: RunOptions): Promise<RunResult> {
  const { tokenizer, tokens, config } = prepareData(opts.config);
  const ckptPath = path.join(opts.outDir, CHECKPOINT_FILE);
  const metricsPath = path.join(opts.outDir, 'metrics.jsonl');
  const exists = fs.existsSync(ckptPath);
  if (opts.resume && !exists) throw new Error(`--resume: no checkpoint at ${ckptPath}`);
  if (!opts.resume && exists && !opts.overwrite) {
    throw new Error(`${opts.outDir} already holds a checkpoint; pass --resume to continue it, --overwrite to start afresh, or --out to use another folder`);
  }
  const checkpoint = opts.resume ? readCheckpoint(ckptPath) : undefined;
  const { train, val } = splitTrainVal(tokens);
  const model = createModel(config.model);
  const trainer = new Trainer(model, config.train, { train, val });
  try {
    if (checkpoint) {
      loadParams(checkpoint, config.model, model.params, ckptPath);
      trainer.restore(trainerStateOf(checkpoint, ckptPath));
    } else {
      opts.init?.(model);
    }
    fs.mkdirSync(opts.outDir, { recursive: true });
    writeFileAtomic(path.join(opts.outDir, 'config.json'), JSON.stringify(config, null, 2) + '\n');
    if (checkpoint && fs.existsSync(metricsPath)) {
      // Drop log lines of steps after the checkpoint: they are about to be rerun.
      const kept = fs.readFileSync(metricsPath, 'utf8').split('\n').filter((l) => l && JSON.parse(l).step <= trainer.step);
      writeFileAtomic(metricsPath, kept.map((l) => l + '\n').join(''));
    } else if (!checkpoint) {
      writeFileAtomic(metricsPath, '');
    }
    const log = (obj: object) => fs.appendFileSync(metricsPath, JSON.stringify(obj) + '\n');
    const throughput: number[] = [];
    let valResult: EvalResult | undefined;
    const evaluateAndSave = async () => {
      valResult = await trainer.evaluate();
      log({ type: 'eval', step: trainer.step, valLoss: valResult.loss, heads: valResult.heads });
      opts.onEval?.(trainer.step, valResult);
      const meta = { config, tokenizer: tokenizer.toJSON(), step: trainer.step, valLoss: valResult.loss };
      await saveCheckpoint(ckptPath, meta, model.params, await trainer.state());
    };
    const { steps, evalEvery } = config.train;
    while (trainer.step < steps) {
      let r: StepResult;
      try {
        r = await trainer.trainStep();
      } catch (e) {
        log({ type: 'error', step: trainer.step + 1, message: (e as Error).message });
        throw e;
      }
      const tokPerSec = (r.tokens * 1000) / r.ms;
      throughput.push(tokPerSec);
      log({ type: 'train', step: r.step, loss: r.loss, lr: r.lr, gradNorm: r.gradNorm, tokPerSec, heads: r.heads });
      opts.onStep?.(r);
      await yieldToEventLoop();
      if (r.step % evalEvery === 0 || r.step === steps) await evaluateAndSave();
    }
    if (!valResult) await evaluateAndSave();
    trainer.dispose();
    return { model, tokenizer, config, val: valResult!, tokensPerSec: median(throughput), steps: trainer.step, checkpoint: ckptPath };
  } catch (e) {
    trainer.dispose();
    model.dispose();
    throw e;
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
