/**
 * Configuration: one typed interface per concern, a DEFAULTS constant whose every field carries a
 * one-line reason (the same text is the CLI's --help), presets for tests, lessons and benchmarks,
 * and validate() with messages that say what is wrong and what is allowed.
 *
 * Resolution order (nanoGPT style): DEFAULTS → preset → `--model.x=…` / `--train.x=…` overrides.
 */
import { BACKEND_NAMES, BackendName } from './backend/index';
import { CORPUS_NAMES, CorpusName } from './data/corpora';
import { TOKENIZER_NAMES } from './data/tokenizer';

import { MtpConfig, mtpBlockParams, mtpErrors } from './mtp_config';

/** How gradients are computed: one joint backward, or head by head (Gloeckle Fig. 2). */
export const BACKWARD_MODES = ['joint', 'memory-efficient'] as const;
export type BackwardMode = (typeof BACKWARD_MODES)[number];

export * from './mtp_config';

/** The reference decoder-only transformer (the trunk every variant shares). */
export interface ModelConfig {
  vocabSize: number;
  blockSize: number;
  nLayer: number;
  nHead: number;
  nEmbd: number;
  mlpRatio: number;
  tieEmbeddings: boolean;
  normEps: number;
  initStd: number;
  seed: number;
  mtp: MtpConfig;
}

/** The training loop. */
export interface TrainConfig {
  corpus: CorpusName;
  tokenizer: 'byte' | 'char';
  maxCorpusBytes: number;
  batchSize: number;
  steps: number;
  lr: number;
  minLrRatio: number;
  warmupSteps: number;
  weightDecay: number;
  beta1: number;
  beta2: number;
  eps: number;
  gradClip: number;
  evalEvery: number;
  evalBatches: number;
  seed: number;
  backend: BackendName;
  backward: BackwardMode;
  workers: number;
}

export interface Config {
  model: ModelConfig;
  train: TrainConfig;
}

type Docs<T> = { [K in keyof T]: string };

export const MODEL_DEFAULTS: ModelConfig = {
  vocabSize: 256,
  blockSize: 128,
  nLayer: 4,
  nHead: 4,
  nEmbd: 128,
  mlpRatio: 4,
  tieEmbeddings: false,
  normEps: 1e-5,
  initStd: 0.02,
  seed: 1234,
  mtp: { kind: 'none' },
};

export const MODEL_DOCS: Docs<ModelConfig> = {
  vocabSize: 'tokens in the vocabulary; 256 = raw UTF-8 bytes, no tokenizer training needed',
  blockSize: 'context length in tokens = rows of the learned position table; decoding slides beyond it',
  nLayer: 'transformer blocks in the trunk; depth buys quality at linear cost',
  nHead: 'attention heads per block; nEmbd must be divisible by it',
  nEmbd: 'model width C; the main lever on parameters (~12·nLayer·C²) and speed',
  mlpRatio: 'MLP hidden width as a multiple of nEmbd; 4 as in GPT-2',
  tieEmbeddings: 'share the token embedding with the unembedding; false matches the PyTorch twin',
  normEps: 'LayerNorm epsilon; 1e-5 as in PyTorch',
  initStd: 'std of the normal weight init (residual projections get std/sqrt(2·nLayer)), GPT-2',
  seed: 'seed of the weight init; same seed + backend → same weights and numbers',
  mtp: "multi-token-prediction variant on the trunk; 'none' = plain next-token model",
};

export const TRAIN_DEFAULTS: TrainConfig = {
  corpus: 'code',
  tokenizer: 'byte',
  maxCorpusBytes: 0,
  batchSize: 16,
  steps: 1000,
  lr: 3e-3,
  minLrRatio: 0.1,
  warmupSteps: 50,
  weightDecay: 0.1,
  beta1: 0.9,
  beta2: 0.95,
  eps: 1e-8,
  gradClip: 1.0,
  evalEvery: 100,
  evalBatches: 8,
  seed: 1337,
  backend: 'auto',
  backward: 'joint',
  workers: 0,
};

export const TRAIN_DOCS: Docs<TrainConfig> = {
  corpus: `training text shipped in an npm package: ${CORPUS_NAMES.join(' | ')}`,
  tokenizer: `byte (vocab 256, any text) or char (vocab = distinct characters of the corpus)`,
  maxCorpusBytes: 'use only the first N bytes of the corpus (0 = all); for fast lessons and tests',
  batchSize: 'sequences per step B; tokens per step = B · blockSize',
  steps: 'optimizer steps to run',
  lr: 'peak learning rate after warm-up; small models tolerate ~3e-3',
  minLrRatio: 'cosine decay floor as a fraction of lr (nanoGPT: 0.1)',
  warmupSteps: 'linear warm-up steps; keeps early Adam steps from blowing up',
  weightDecay: 'AdamW decoupled weight decay on matrices (rank ≥ 2), not on norms and biases',
  beta1: 'Adam first-moment decay',
  beta2: 'Adam second-moment decay; 0.95 is steadier than 0.999 for small batches (nanoGPT)',
  eps: 'Adam epsilon, explicit: the webgl backend would otherwise silently use 1e-4',
  gradClip: 'clip the global gradient norm to this value (0 = off)',
  evalEvery: 'validate (and checkpoint) every N steps, and at the end',
  evalBatches: 'validation batches per evaluation (fixed, evenly spaced windows)',
  seed: 'seed of batch sampling; same seed → same batches',
  backend: `tfjs backend: ${BACKEND_NAMES.join(' | ')}`,
  backward: 'joint (one backward through all heads) or memory-efficient (head by head, Gloeckle Fig. 2; recomputes the trunk forward)',
  workers: 'data-parallel training threads, each with its own engine and a shard of every batch (wasm or cpu backend); 0 = one per core but one, at most batchSize',
};

export const PRESET_NAMES = ['nano', 'tiny', 'deep', 'small', 'medium'] as const;
export type PresetName = (typeof PRESET_NAMES)[number];

export interface Preset {
  model: Partial<ModelConfig>;
  train: Partial<TrainConfig>;
}

/**
 * nano: ≤ 50 k parameters, for tests. tiny: a useful byte-level code model in ~5 minutes on 2 CPU
 * cores. deep: the zoo's shape for multi-token prediction: 8 blocks, so one extra head block costs
 * 1/8 of the trunk (tiny's 3 blocks make k − 1 heads cost as much as the trunk); 0.95 M parameters. small / medium: the benchmark shapes of docs/performance.md (same as the PyTorch twin).
 */
export const PRESETS: Record<PresetName, Preset> = {
  nano: {
    model: { blockSize: 32, nLayer: 2, nHead: 2, nEmbd: 32 },
    train: { batchSize: 4, steps: 20, evalEvery: 10, evalBatches: 2, warmupSteps: 2 },
  },
  tiny: {
    model: { blockSize: 64, nLayer: 3, nHead: 4, nEmbd: 96 },
    train: { batchSize: 16, steps: 800, evalEvery: 100, warmupSteps: 30, lr: 3e-3 },
  },
  deep: {
    model: { blockSize: 128, nLayer: 8, nHead: 4, nEmbd: 96 },
    train: { batchSize: 16, steps: 2000, evalEvery: 250, warmupSteps: 100, lr: 2e-3 },
  },
  small: {
    model: { blockSize: 128, nLayer: 4, nHead: 4, nEmbd: 128 },
    train: { batchSize: 16 },
  },
  medium: {
    model: { blockSize: 256, nLayer: 6, nHead: 8, nEmbd: 256 },
    train: { batchSize: 8, lr: 1e-3 },
  },
};

/** Merge DEFAULTS ← preset ← overrides, then validate. */
export function resolveConfig(preset: PresetName | undefined, overrides: Partial<{ model: Partial<ModelConfig>; train: Partial<TrainConfig> }> = {}): Config {
  if (preset !== undefined && !(PRESET_NAMES as readonly string[]).includes(preset)) {
    throw new Error(`unknown preset '${preset}'; allowed: ${PRESET_NAMES.join(', ')}`);
  }
  const p = preset ? PRESETS[preset] : { model: {}, train: {} };
  const cfg: Config = {
    model: { ...MODEL_DEFAULTS, ...p.model, ...overrides.model },
    train: { ...TRAIN_DEFAULTS, ...p.train, ...overrides.train },
  };
  validate(cfg);
  return cfg;
}

/** A value as a user would type it (NaN and Infinity stay readable). */
function show(v: unknown): string {
  return typeof v === 'number' ? String(v) : JSON.stringify(v);
}

function checkInt(errors: string[], name: string, v: unknown, min: number): void {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
    errors.push(`${name} must be an integer ≥ ${min}, got ${show(v)}`);
  }
}

function checkNum(errors: string[], name: string, v: unknown, min: number, max: number, minOpen = false): void {
  const below = minOpen ? (v as number) <= min : (v as number) < min;
  if (typeof v !== 'number' || !Number.isFinite(v) || below || v > max) {
    errors.push(`${name} must be a number in ${minOpen ? '(' : '['}${min}, ${max}], got ${show(v)}`);
  }
}

function checkOneOf(errors: string[], name: string, v: unknown, allowed: readonly string[]): void {
  if (typeof v !== 'string' || !allowed.includes(v)) {
    errors.push(`unknown ${name} ${JSON.stringify(v)}; allowed: ${allowed.join(', ')}`);
  }
}

function checkKeys(errors: string[], section: string, obj: object, known: object): void {
  for (const key of Object.keys(obj)) {
    if (!(key in known)) errors.push(`unknown config key ${section}.${key}; allowed: ${Object.keys(known).join(', ')}`);
  }
}

/** Throws one error listing every problem in the model config. */
export function validateModel(m: ModelConfig): void {
  const errors: string[] = [];
  checkKeys(errors, 'model', m, MODEL_DEFAULTS);
  checkInt(errors, 'model.vocabSize', m.vocabSize, 2);
  checkInt(errors, 'model.blockSize', m.blockSize, 1);
  checkInt(errors, 'model.nLayer', m.nLayer, 1);
  checkInt(errors, 'model.nHead', m.nHead, 1);
  checkInt(errors, 'model.nEmbd', m.nEmbd, 1);
  checkInt(errors, 'model.mlpRatio', m.mlpRatio, 1);
  checkNum(errors, 'model.normEps', m.normEps, 0, 1, true);
  checkNum(errors, 'model.initStd', m.initStd, 0, 10, true);
  checkNum(errors, 'model.seed', m.seed, -(2 ** 52), 2 ** 52);
  if (typeof m.tieEmbeddings !== 'boolean') errors.push(`model.tieEmbeddings must be true or false, got ${show(m.tieEmbeddings)}`);
  if (Number.isInteger(m.nEmbd) && Number.isInteger(m.nHead) && m.nHead > 0 && m.nEmbd % m.nHead !== 0) {
    errors.push(`model.nEmbd (${m.nEmbd}) must be divisible by model.nHead (${m.nHead})`);
  }
  errors.push(...mtpErrors(m.mtp, m.nLayer));
  if (errors.length) throw new Error(`invalid model config:\n  - ${errors.join('\n  - ')}`);
}

/** Throws one error listing every problem in the whole config. */
export function validate(cfg: Config): void {
  validateModel(cfg.model);
  const t = cfg.train;
  const errors: string[] = [];
  checkKeys(errors, 'train', t, TRAIN_DEFAULTS);
  checkOneOf(errors, 'train.corpus', t.corpus, CORPUS_NAMES);
  checkOneOf(errors, 'train.tokenizer', t.tokenizer, TOKENIZER_NAMES);
  checkOneOf(errors, 'train.backend', t.backend, BACKEND_NAMES);
  checkOneOf(errors, 'train.backward', t.backward, BACKWARD_MODES);
  checkInt(errors, 'train.workers', t.workers, 0);
  if (Number.isInteger(t.workers) && Number.isInteger(t.batchSize) && t.workers > t.batchSize) {
    errors.push(`train.workers = ${t.workers} exceeds train.batchSize = ${t.batchSize}: each worker needs at least one sequence of the batch`);
  }
  checkInt(errors, 'train.maxCorpusBytes', t.maxCorpusBytes, 0);
  checkInt(errors, 'train.batchSize', t.batchSize, 1);
  checkInt(errors, 'train.steps', t.steps, 0);
  checkNum(errors, 'train.lr', t.lr, 0, 10, true);
  checkNum(errors, 'train.minLrRatio', t.minLrRatio, 0, 1);
  checkInt(errors, 'train.warmupSteps', t.warmupSteps, 0);
  checkNum(errors, 'train.weightDecay', t.weightDecay, 0, 10);
  checkNum(errors, 'train.beta1', t.beta1, 0, 1);
  checkNum(errors, 'train.beta2', t.beta2, 0, 1);
  checkNum(errors, 'train.eps', t.eps, 0, 1, true);
  checkNum(errors, 'train.gradClip', t.gradClip, 0, 1e9);
  checkInt(errors, 'train.evalEvery', t.evalEvery, 1);
  checkInt(errors, 'train.evalBatches', t.evalBatches, 1);
  checkNum(errors, 'train.seed', t.seed, -(2 ** 52), 2 ** 52);
  if (t.tokenizer === 'byte' && cfg.model.vocabSize !== 256) {
    errors.push(`model.vocabSize must be 256 with the byte tokenizer, got ${cfg.model.vocabSize}`);
  }
  if (errors.length) throw new Error(`invalid train config:\n  - ${errors.join('\n  - ')}`);
}

/** Number of parameters of a model config, embeddings and every MTP head or module included. */
/** Parameters of one transformer block of the model's width. */
export function blockParamCount(m: Pick<ModelConfig, 'nEmbd' | 'mlpRatio'>): number {
  const C = m.nEmbd;
  const hidden = m.mlpRatio * C;
  return 2 * 2 * C + C * 3 * C + C * C + C * hidden + hidden + hidden * C + C;
}

export function countParams(m: ModelConfig): number {
  const C = m.nEmbd;
  const block = blockParamCount(m);
  const unembed = m.tieEmbeddings ? 0 : C * m.vocabSize;
  const trunk = m.vocabSize * C + m.blockSize * C + 2 * C + unembed;
  return trunk + mtpBlockParams(m.mtp, { nLayer: m.nLayer, nEmbd: C, vocabSize: m.vocabSize, block });
}
