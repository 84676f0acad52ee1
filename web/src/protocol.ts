/**
 * Messages between the page (main thread) and the lab worker, which owns TensorFlow.js, the model and every decoding
 * and training run, so the page's thread only draws. A request carries an id; the worker answers with any number of
 * `event`s, then one `done` or `error` for that id.
 */
import type { AcceptanceName } from '../../src/decode/acceptance';
import type { TokenizerSpec } from '../../src/data/tokenizer';
import type { MtpKind } from '../../src/config';

/** Backends the page offers (the browser's; 'tensorflow' is Node only). */
export const LAB_BACKENDS = ['webgpu', 'webgl', 'wasm', 'cpu'] as const;
export type LabBackend = (typeof LAB_BACKENDS)[number];

/** ar: plain decoding; own: the model's heads or modules drafting (blockwise / sequential / medusa); lookup: prompt lookup. */
export const LAB_DECODERS = ['own', 'lookup', 'ar'] as const;
export type LabDecoder = (typeof LAB_DECODERS)[number];

/**
 * Draft shapes: a chain, every top-3/top-2 combination, Medusa's 63-node sparse shape, or a dynamic tree grown by the
 * drafter's confidence (EAGLE-2; every drafter, decode/dynamic_tree.ts).
 */
export const LAB_TREES = ['chain', 'dense', 'sparse63', 'dynamic'] as const;
export type LabTree = (typeof LAB_TREES)[number];

/** What the page knows of the loaded model. */
export interface ModelSummary {
  /** e.g. 'zoo:code-medusa1-k5', 'file:model.ckpt', 'nano (trained here)'. */
  label: string;
  kind: MtpKind;
  /** Tokens predicted per position. */
  k: number;
  parameters: number;
  blockSize: number;
  nLayer: number;
  nEmbd: number;
  tokenizer: TokenizerSpec;
  /** The variant's own decoder name (blockwise, sequential, medusa), null for a plain model. */
  ownDecoder: string | null;
  /** The corpus it was trained on, if known (picks a default prompt). */
  corpus?: string;
}

export interface DecodeRequest {
  prompt: string;
  maxNewTokens: number;
  decoder: LabDecoder;
  tree: LabTree;
  acceptance: AcceptanceName;
  /** Tokens per step (1 + draft depth); default all the drafter offers (lookup: 5). */
  k?: number;
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
  /** Also run greedy / sampled AR side by side. */
  compare: boolean;
  /** Time each phase of a step (draft, verify, read, accept, cache); adds a device sync per phase. Default false. */
  profile?: boolean;
}

/** One decoding step of one lane. */
export interface StepEvent {
  kind: 'step';
  lane: 'draft' | 'ar';
  /** 0-based step index in its lane (the prefill is step 0). */
  step: number;
  /** The verified draft tree: tokens[0] is the root (last committed token), parents[0] = −1. */
  tree: { tokens: number[]; parents: number[] };
  /** Accepted nodes from the root. */
  path: number[];
  /** Tokens committed: the accepted drafts, then the bonus. */
  committed: number[];
  /** Wall milliseconds of the step. */
  ms: number;
  /** Live statistics of the lane so far. */
  stats: LaneStats;
}

export interface LaneStats {
  method: string;
  generated: number;
  forwards: number;
  tau: number;
  alpha: number[];
  tokensPerSec: number;
  /** Sum of the steps' wall milliseconds. */
  ms: number;
}

export interface LaneResult extends LaneStats {
  tokens: number[];
  text: string;
  /** Tokens committed per step. */
  steps: number[];
  /** Milliseconds per phase, summed over the steps (DecodeRequest.profile). */
  profile?: Record<string, number>;
}

export interface DecodeResult {
  promptTokens: number[];
  draft: LaneResult;
  ar?: LaneResult;
  /** Whether the two lanes' tokens are identical (null without AR). */
  identical: boolean | null;
  /** True when the rule is lossless and greedy, so identical outputs are required. */
  mustMatch: boolean;
  /** Stopped early by the user. */
  stopped: boolean;
}

/** Model shapes the page trains: nano (the panel's), small (the benchmark shape, to time training as bench:parallel does). */
export const LAB_TRAIN_PRESETS = ['nano', 'small'] as const;
export type LabTrainPreset = (typeof LAB_TRAIN_PRESETS)[number];

export interface TrainRequest {
  corpus: string;
  /** Corpus text to train on (the page fetches it). */
  text: string;
  kind: MtpKind;
  /** Tokens per position for parallel / Medusa / sequential nano models. */
  k: number;
  steps: number;
  lr: number;
  batchSize: number;
  seed: number;
  /** The model's shape. Default 'nano'. */
  preset?: LabTrainPreset;
  /**
   * Data-parallel ranks: the lab worker and workers − 1 more Web Workers, each training its share of every batch.
   * Default 1. More than 1 needs a cross-origin-isolated page and the wasm or cpu backend, and at most batchSize.
   */
  workers?: number;
  /** Fault injection for tests: every rank but the lab worker's throws before this step. Default: never. */
  faultStep?: number;
}

export interface TrainEvent {
  kind: 'train';
  step: number;
  steps: number;
  loss: number;
  /** Wall milliseconds of the step (rank 0's, which waits for every rank). */
  ms: number;
  /** Tokens the step trained on (batch × context, over every rank). */
  tokens: number;
  /** Ranks training. */
  workers: number;
}

/** A finished training run: the model it loaded, and its ranks. */
export interface TrainResult {
  model: ModelSummary;
  workers: number;
  /** sha256 of each rank's weights at the end, rank 0's first (equal: the copies stayed bit-identical); one entry with one rank. */
  weights: string[];
}

/** A nano model's next-token logits and the gradient of every parameter, for comparison across backends. */
export interface CheckResult {
  backend: string;
  detail: string;
  /** Logits [T, V] of the decoding forward, flat. */
  logits: number[];
  loss: number;
  /** Gradient of every trainable parameter by its name, flat. */
  grads: Record<string, number[]>;
}

export type Request =
  | { op: 'init'; backend: LabBackend }
  | { op: 'zoo'; base: string; name: string }
  | { op: 'checkpoint'; name: string; bytes: ArrayBuffer }
  | { op: 'train'; req: TrainRequest }
  | { op: 'decode'; req: DecodeRequest }
  | { op: 'stop' }
  | { op: 'check'; backend: LabBackend; kind: MtpKind; seed: number };

export type WorkerEvent = StepEvent | TrainEvent;

export type Reply =
  | { id: number; type: 'event'; event: WorkerEvent }
  | { id: number; type: 'done'; value: unknown }
  | { id: number; type: 'error'; message: string };
