/**
 * mtp-lab command line: `train`, `generate`, `eval`.
 *
 *   npm run mtp -- train --preset=tiny --sample=300
 *   npm run mtp -- generate --ckpt=runs/tiny/model.ckpt --prompt="function " --tokens=200
 *   npm run mtp -- generate --ckpt=runs/medusa/model.ckpt --decoder=medusa --tree=sparse63 --compare
 *   npm run mtp -- eval --ckpt=runs/tiny/model.ckpt
 *
 * Flags: see `--help` of each command; unknown flags and bad values are errors.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import yargs from 'yargs';
import type { Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import * as tf from '@tensorflow/tfjs';
import { Config, countParams } from '../config';
import { initBackend, BACKEND_NAMES, BackendName } from '../backend/index';
import { loadCorpus, splitTrainVal } from '../data/corpus';
import { evalBatches } from '../data/batch';
import { generate } from '../decode/ar';
import type { Tokenizer } from '../data/tokenizer';
import type { Transformer } from '../model/transformer';
import { evaluate } from '../train/evaluate';
import { Checkpoint, initFromCheckpoint, readCheckpoint } from '../train/checkpoint';
import { loadZooModel, zooCheckpoint } from '../zoo/load';
import type { MtpModel } from '../model/create';
import { CHECKPOINT_FILE, loadModel, trainRun } from '../train/run';
import { decoderOptions, runGenerate } from './generate';
import { configFromArgs, fromFlag, withConfigOptions } from './options';
import { progressBar } from './progress';

const LN2 = Math.log(2);
const DEFAULT_PROMPTS: Record<string, string> = { code: 'function ', prose: 'Call me ' };

function fmt(x: number, digits = 3): string {
  return x.toFixed(digits);
}

function samplingOptions(y: Argv): Argv {
  return y
    .option('prompt', { type: 'string', describe: 'text to continue [default: per corpus]' })
    .option('temperature', { type: 'number', default: 0, describe: '0 = greedy; > 0 samples' })
    .option('topK', { type: 'number', default: 0, describe: 'sample among the k most likely tokens (0 = off)' })
    .option('topP', { type: 'number', default: 1, describe: 'nucleus sampling mass (1 = off)' })
    .option('seed', { type: 'number', default: 0, describe: 'seed of the sampling stream' });
}

async function printSample(model: Transformer, tokenizer: Tokenizer, prompt: string, tokens: number, argv: Record<string, unknown>): Promise<void> {
  const ids = Array.from(fromFlag('prompt', () => tokenizer.encode(prompt)));
  const out = await generate(model, ids, {
    maxNewTokens: tokens,
    temperature: argv.temperature as number,
    topK: argv.topK as number,
    topP: argv.topP as number,
    seed: argv.seed as number,
  });
  const s = out.stats;
  console.log(`--- sample (${s.method}, ${s.newTokens} tokens, ${fmt(s.tokensPerSec, 1)} tokens/s, ${s.forwards} forwards) ---`);
  console.log(prompt + tokenizer.decode(out.tokens));
  console.log('---');
}

/**
 * Ctrl-C / SIGTERM (and the parent process going away, e.g. a killed `tsx` or `npm` wrapper) ask the run to stop
 * after its current step with a checkpoint; a second signal exits at once.
 */
function stopController(): { controller: AbortController; dispose: () => void } {
  const controller = new AbortController();
  const onSignal = (sig: NodeJS.Signals) => {
    if (controller.signal.aborted) process.exit(sig === 'SIGINT' ? 130 : 143);
    console.error(`\n${sig}: stopping after the current step and writing a checkpoint (again to quit at once)`);
    controller.abort(sig);
  };
  const ppid = process.ppid;
  const watch = setInterval(() => {
    if (process.ppid !== ppid && !controller.signal.aborted) controller.abort('parent process exited');
  }, 1000);
  watch.unref();
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    controller,
    dispose: () => {
      clearInterval(watch);
      process.removeListener('SIGINT', onSignal);
      process.removeListener('SIGTERM', onSignal);
    },
  };
}

/** 'loss 1.234 nats = 1.780 bits/token (next token; heads 1.23/2.34)' for validation metrics. */
function describeVal(r: { loss: number; heads: { loss: number }[] }): string {
  const next = r.heads[0]?.loss ?? r.loss;
  const heads = r.heads.length > 1 ? `; heads ${r.heads.map((h) => fmt(h.loss, 2)).join('/')}, training objective ${fmt(r.loss)}` : '';
  return `next-token loss ${fmt(next)} nats = ${fmt(next / LN2)} bits/token${heads}`;
}

async function trainCommand(argv: Record<string, unknown>): Promise<void> {
  const cfg = configFromArgs(argv);
  const backend = await initBackend(cfg.train.backend);
  const outDir = (argv.out as string | undefined) ?? `runs/${(argv.preset as string | undefined) ?? 'custom'}`;
  const bar = progressBar('train', 'loss {loss} | top-1 per head {acc} | {tps} tok/s | val {val}');
  let val = '-';
  const initFrom = argv.init as string | undefined;
  const stop = stopController();
  const result = await trainRun({
    config: cfg,
    outDir,
    resume: argv.resume as boolean,
    overwrite: argv.overwrite as boolean,
    allowLarge: argv['allow-large'] as boolean,
    backend: backend.name,
    signal: stop.controller.signal,
    init: initFrom
      ? (model) => {
          const n = fromFlag('init', () => initFromCheckpoint(openCheckpoint(initFrom), model, initFrom));
          console.log(`initialised ${n} parameter tensors from ${initFrom}`);
        }
      : undefined,
    onStart: ({ config, model, resumedFrom, workers }) => {
      const params = [...model.params.values()].reduce((a, v) => a + v.size, 0);
      console.log(
        `backend ${backend.name} (${backend.detail})${workers > 1 ? ` × ${workers} data-parallel workers` : ''} | vocabulary ${config.model.vocabSize} | ${params.toLocaleString('en-US')} parameters | ` +
          `run folder ${outDir}${resumedFrom !== undefined ? ` | resuming from step ${resumedFrom}` : ''}`,
      );
      console.log(`config ${JSON.stringify(config)}`);
      bar.start(config.train.steps, resumedFrom ?? 0, { loss: '-', acc: '-', tps: '-', val });
    },
    onNotice: (message) => console.error(`note: ${message}`),
    onStep: (r) =>
      bar.update(r.step, {
        loss: r.heads.length > 1 ? `${fmt(r.loss)} (${r.heads.map((h) => fmt(h.loss, 2)).join('/')})` : fmt(r.loss),
        acc: r.heads.map((h) => fmt(h.acc, 2)).join('/'),
        tps: Math.round((r.tokens * 1000) / r.ms),
        val,
      }),
    onEval: (_, r) => {
      val = fmt(r.heads[0]?.loss ?? r.loss);
    },
  }).finally(() => {
    bar.stop();
    stop.dispose();
  });
  const speed = `median ${Math.round(result.tokensPerSec)} tokens/s (${backend.name})`;
  if (result.stopped) {
    console.log(`stopped (${result.stopped}) after step ${result.steps} | ${speed} | checkpoint ${result.checkpoint}; continue with the same flags and --resume`);
    result.model.dispose();
    process.exitCode = result.stopped === 'SIGINT' ? 130 : 143;
    return;
  }
  console.log(`done: ${result.steps} steps | val ${describeVal(result.val!)} | ${speed} | checkpoint ${result.checkpoint}`);
  const sample = argv.sample as number;
  if (sample > 0) {
    await printSample(result.model.trunk, result.tokenizer, (argv.prompt as string | undefined) ?? DEFAULT_PROMPTS[cfg.train.corpus], sample, argv);
  }
  result.model.dispose();
}

/** `zoo:NAME` in --ckpt / --init: a model of the zoo (models/), verified against its manifest. */
const ZOO_PREFIX = 'zoo:';

/** The checkpoint --ckpt or --init names: a file, a run folder (its model.ckpt) or zoo:NAME. */
function openCheckpoint(spec: string): Checkpoint {
  return spec.startsWith(ZOO_PREFIX) ? zooCheckpoint(spec.slice(ZOO_PREFIX.length)).checkpoint : readCheckpoint(checkpointPath(spec));
}

/** The model --ckpt names (see openCheckpoint), built from its own config. */
function openModel(spec: string): { model: MtpModel; tokenizer: Tokenizer; config: Config; step: number; source: string } {
  if (spec.startsWith(ZOO_PREFIX)) {
    const z = loadZooModel(spec.slice(ZOO_PREFIX.length));
    return { model: z.model, tokenizer: z.tokenizer, config: z.config, step: z.entry.steps, source: `zoo model ${z.name}` };
  }
  const file = checkpointPath(spec);
  return { ...loadModel(file), source: `checkpoint ${file}` };
}

/** A checkpoint file from --ckpt: a run folder stands for the model.ckpt inside it. */
function checkpointPath(ckpt: string): string {
  if (fs.existsSync(ckpt) && fs.statSync(ckpt).isDirectory()) {
    const inside = path.join(ckpt, CHECKPOINT_FILE);
    if (!fs.existsSync(inside)) throw new Error(`--ckpt=${ckpt} is a folder without a ${CHECKPOINT_FILE}; pass a checkpoint file or a run folder`);
    return inside;
  }
  return ckpt;
}

async function generateCommand(argv: Record<string, unknown>): Promise<void> {
  const backend = await initBackend(argv.backend as BackendName);
  const { model, tokenizer, config, step, source } = openModel(argv.ckpt as string);
  console.log(`backend ${backend.name} (${backend.detail}) | ${source} (step ${step}, ${countParams(config.model).toLocaleString('en-US')} parameters)`);
  try {
    const validation = () => {
      const corpus = loadCorpus(config.train.corpus, { maxBytes: config.train.maxCorpusBytes || undefined });
      const { val } = splitTrainVal(config.train.tokenizer === 'byte' ? corpus.bytes : tokenizer.encode(corpus.text));
      const gap = Math.max(0, Math.floor((val.length - 32) / 4));
      return Array.from({ length: 4 }, (_, i) => Array.from(val.subarray(i * gap, i * gap + 32))); // 4 windows of 32 tokens
    };
    await runGenerate(model, tokenizer, (argv.prompt as string | undefined) ?? DEFAULT_PROMPTS[config.train.corpus], argv, validation);
  } finally {
    model.dispose();
  }
}

async function evalCommand(argv: Record<string, unknown>): Promise<void> {
  const backend = await initBackend(argv.backend as BackendName);
  const { model, tokenizer, config } = openModel(argv.ckpt as string);
  const corpusName = (argv.corpus as string | undefined) ?? config.train.corpus;
  const corpus = fromFlag('corpus', () => loadCorpus(corpusName, { maxBytes: config.train.maxCorpusBytes || undefined }));
  const tokens = config.train.tokenizer === 'byte' ? corpus.bytes : tokenizer.encode(corpus.text);
  const { val } = splitTrainVal(tokens);
  const r = await evaluate(model, evalBatches(val, config.train.batchSize, config.model.blockSize, model.k, argv.batches as number));
  console.log(`backend ${backend.name} (${backend.detail}) | ${corpusName} validation | ${describeVal(r)}`);
  r.heads.forEach((h, i) => console.log(`  head ${i + 1}: loss ${fmt(h.loss)}, top-1 accuracy ${fmt(h.acc)}`));
  model.dispose();
}

function checkpointOptions(y: Argv): Argv {
  return y
    .option('ckpt', { type: 'string', demandOption: true, describe: 'checkpoint file, run folder (its model.ckpt), or zoo:NAME (a model of models/, e.g. zoo:code-ar)' })
    .option('backend', { type: 'string', choices: BACKEND_NAMES as unknown as string[], default: 'auto', describe: 'tfjs backend' });
}

function positiveInt(name: string) {
  return (argv: Record<string, unknown>) => {
    const v = argv[name];
    if (v !== undefined && (typeof v !== 'number' || !Number.isInteger(v) || v < 0)) {
      throw new Error(`--${name} must be an integer ≥ 0, got ${String(v)}`);
    }
    return true;
  };
}

/** Set once a command's handler runs: later failures are the run's (exit 1), earlier ones the flags' (exit 2). */
let commandStarted = false;

function running(command: (argv: Record<string, unknown>) => Promise<void>) {
  return (argv: Record<string, unknown>) => {
    commandStarted = true;
    return command(argv);
  };
}

async function main(): Promise<void> {
  await yargs(hideBin(process.argv))
    .scriptName('mtp')
    .parserConfiguration({ 'dot-notation': false, 'camel-case-expansion': false })
    .command(
      'train',
      'train a model on a corpus, checkpointing into a run folder',
      (y) =>
        samplingOptions(withConfigOptions(y))
          .option('out', { type: 'string', describe: 'run folder [default: runs/<preset>]' })
          .option('resume', { type: 'boolean', default: false, describe: 'continue from the run folder’s checkpoint' })
          .option('overwrite', { type: 'boolean', default: false, describe: 'start afresh even if the run folder holds a checkpoint' })
          .option('sample', { type: 'number', default: 0, describe: 'tokens to generate after training (0 = none)' })
          .option('allow-large', { type: 'boolean', default: false, describe: 'train even when the memory estimate exceeds what the machine (or the wasm heap) has' })
          .option('init', { type: 'string', describe: 'copy same-named, same-shaped weights from this checkpoint (file, run folder or zoo:NAME) first (e.g. a trained trunk under new Medusa heads)' })
          .check(positiveInt('sample')),
      (argv) => running(trainCommand)(argv),
    )
    .command(
      'generate',
      'continue a prompt with a trained model, with any decoder',
      (y) =>
        decoderOptions(samplingOptions(checkpointOptions(y)))
          .option('tokens', { type: 'number', default: 200, describe: 'tokens to generate' })
          .check(positiveInt('tokens')),
      (argv) => running(generateCommand)(argv),
    )
    .command(
      'eval',
      'validation loss of a checkpoint',
      (y) =>
        checkpointOptions(y)
          .option('corpus', { type: 'string', describe: 'corpus to evaluate on [default: the training corpus]' })
          .option('batches', { type: 'number', default: 32, describe: 'validation batches' })
          .check(positiveInt('batches')),
      (argv) => running(evalCommand)(argv),
    )
    .demandCommand(1, 'name a command: train, generate or eval')
    .strict()
    .help()
    .fail((msg, err) => {
      if (commandStarted) {
        console.error(`error: ${err ? err.message : msg}`); // a failure of the run, not of its flags
        process.exit(1);
      }
      console.error(`error: ${err ? err.message : msg}\n(see --help for the flags and their defaults)`);
      process.exit(2);
    })
    .parseAsync();
  tf.disposeVariables();
}

main().catch((e: Error) => {
  console.error(`error: ${e.message}`);
  process.exit(1);
});
