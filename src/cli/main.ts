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
import yargs from 'yargs';
import type { Argv } from 'yargs';
import { hideBin } from 'yargs/helpers';
import * as tf from '@tensorflow/tfjs';
import { countParams } from '../config';
import { initBackend, BACKEND_NAMES, BackendName } from '../backend/index';
import { loadCorpus, splitTrainVal } from '../data/corpus';
import { evalBatches } from '../data/batch';
import { generate } from '../decode/ar';
import type { Tokenizer } from '../data/tokenizer';
import type { Transformer } from '../model/transformer';
import { evaluate } from '../train/evaluate';
import { MedusaModel } from '../model/medusa';
import { copyParams, readCheckpoint } from '../train/checkpoint';
import { loadModel, trainRun } from '../train/run';
import { decoderOptions, runGenerate } from './generate';
import { configFromArgs, withConfigOptions } from './options';
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
  const ids = Array.from(tokenizer.encode(prompt));
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

async function trainCommand(argv: Record<string, unknown>): Promise<void> {
  const cfg = configFromArgs(argv);
  const backend = await initBackend(cfg.train.backend);
  const outDir = (argv.out as string | undefined) ?? `runs/${(argv.preset as string | undefined) ?? 'custom'}`;
  console.log(`backend ${backend.name} (${backend.detail}) | ${countParams(cfg.model).toLocaleString('en-US')} parameters | run folder ${outDir}`);
  console.log(`config ${JSON.stringify(cfg)}`);
  const bar = progressBar('train', 'loss {loss} | top-1 per head {acc} | {tps} tok/s | val {val}');
  let val = '-';
  bar.start(cfg.train.steps, 0, { loss: '-', acc: '-', tps: '-', val });
  const initFrom = argv.init as string | undefined;
  const result = await trainRun({
    config: cfg,
    outDir,
    resume: argv.resume as boolean,
    overwrite: argv.overwrite as boolean,
    init: initFrom
      ? (model) => {
          const n = copyParams(readCheckpoint(initFrom), model.params, initFrom);
          if (model instanceof MedusaModel) model.initHeads(); // W2 = a copy of the loaded LM head
          console.log(`initialised ${n} parameter tensors from ${initFrom}`);
        }
      : undefined,
    onStep: (r) =>
      bar.update(r.step, {
        loss: r.heads.length > 1 ? `${fmt(r.loss)} (${r.heads.map((h) => fmt(h.loss, 2)).join('/')})` : fmt(r.loss),
        acc: r.heads.map((h) => fmt(h.acc, 2)).join('/'),
        tps: Math.round((r.tokens * 1000) / r.ms),
        val,
      }),
    onEval: (_, r) => {
      val = fmt(r.loss);
    },
  }).finally(() => bar.stop());
  const bits = result.val.loss / LN2;
  console.log(
    `done: ${result.steps} steps | val loss ${fmt(result.val.loss)} nats = ${fmt(bits)} bits/token | ` +
      `median ${Math.round(result.tokensPerSec)} tokens/s (${backend.name}) | checkpoint ${result.checkpoint}`,
  );
  const sample = argv.sample as number;
  if (sample > 0) {
    await printSample(result.model.trunk, result.tokenizer, (argv.prompt as string | undefined) ?? DEFAULT_PROMPTS[cfg.train.corpus], sample, argv);
  }
  result.model.dispose();
}

async function generateCommand(argv: Record<string, unknown>): Promise<void> {
  const backend = await initBackend(argv.backend as BackendName);
  const { model, tokenizer, config, step } = loadModel(argv.ckpt as string);
  console.log(`backend ${backend.name} | checkpoint ${argv.ckpt} (step ${step}, ${countParams(config.model).toLocaleString('en-US')} parameters)`);
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
  const { model, tokenizer, config } = loadModel(argv.ckpt as string);
  const corpusName = (argv.corpus as string | undefined) ?? config.train.corpus;
  const corpus = loadCorpus(corpusName, { maxBytes: config.train.maxCorpusBytes || undefined });
  const tokens = config.train.tokenizer === 'byte' ? corpus.bytes : tokenizer.encode(corpus.text);
  const { val } = splitTrainVal(tokens);
  const r = await evaluate(model, evalBatches(val, config.train.batchSize, config.model.blockSize, model.k, argv.batches as number));
  console.log(`backend ${backend.name} | ${corpusName} validation | loss ${fmt(r.loss)} nats = ${fmt(r.loss / LN2)} bits/token`);
  r.heads.forEach((h, i) => console.log(`  head ${i + 1}: loss ${fmt(h.loss)}, top-1 accuracy ${fmt(h.acc)}`));
  model.dispose();
}

function checkpointOptions(y: Argv): Argv {
  return y
    .option('ckpt', { type: 'string', demandOption: true, describe: 'checkpoint file (a run folder holds model.ckpt)' })
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
          .option('init', { type: 'string', describe: 'copy same-named, same-shaped weights from this checkpoint first (e.g. a trained trunk under new Medusa heads)' })
          .check(positiveInt('sample')),
      (argv) => trainCommand(argv),
    )
    .command(
      'generate',
      'continue a prompt with a trained model, with any decoder',
      (y) =>
        decoderOptions(samplingOptions(checkpointOptions(y)))
          .option('tokens', { type: 'number', default: 200, describe: 'tokens to generate' })
          .check(positiveInt('tokens')),
      (argv) => generateCommand(argv),
    )
    .command(
      'eval',
      'validation loss of a checkpoint',
      (y) =>
        checkpointOptions(y)
          .option('corpus', { type: 'string', describe: 'corpus to evaluate on [default: the training corpus]' })
          .option('batches', { type: 'number', default: 32, describe: 'validation batches' })
          .check(positiveInt('batches')),
      (argv) => evalCommand(argv),
    )
    .demandCommand(1, 'name a command: train, generate or eval')
    .strict()
    .help()
    .fail((msg, err) => {
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
