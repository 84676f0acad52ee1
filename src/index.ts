/**
 * mtp-lab public API (browser-safe: no file I/O). Node-only parts — corpus loading from npm
 * packages, checkpoints, whole training runs — are in './node', which re-exports this file too.
 */
export * from './config';
export { initBackend, backendInfo, BACKEND_NAMES } from './backend/index';
export type { BackendName, BackendInfo, InitBackendOptions } from './backend/index';
export { Rng } from './util/rng';

export * from './data/tokenizer';
export * from './data/batch';
export * from './data/synthetic';
export { CORPORA, CORPUS_NAMES } from './data/corpora';
export type { CorpusName, CorpusSource } from './data/corpora';

export { createModel } from './model/create';
export type { MtpModel, LossOutput } from './model/create';
export { Transformer, crossEntropy, causalMask, MASKED } from './model/transformer';
export type { ForwardOptions } from './model/transformer';
export { KVCache } from './model/kv_cache';

export { generate, ContextFeeder } from './decode/ar';
export type { GenerateOptions } from './decode/ar';
export * from './decode/sampling';
export * from './decode/context';
export * from './decode/stats';

export { Trainer, NonFiniteLossError } from './train/trainer';
export type { StepResult, TrainerState } from './train/trainer';
export { evaluate } from './train/evaluate';
export type { EvalResult, HeadMetrics } from './train/evaluate';
export { AdamW } from './train/adamw';
export type { AdamWConfig, AdamWState } from './train/adamw';
export { lrAt } from './train/schedule';

export { ParallelModel } from './model/parallel';
export { MedusaModel, headRankAccuracies } from './model/medusa';
export { SequentialModel } from './model/sequential';
export { CacheSet } from './model/cache_set';
export { forwardFlopsPerToken, trainFlopsPerToken } from './model/flops';
export type { BackwardMode } from './config';

export { blockwiseGenerate } from './decode/blockwise';
export type { BlockwiseOptions, BlockwiseResult } from './decode/blockwise';
export { sequentialGenerate } from './decode/sequential';
export { medusaGenerate, TYPICAL_DEFAULTS } from './decode/medusa';
export type { MedusaOptions, MedusaResult } from './decode/medusa';
export * from './decode/tree';
export { selfSpeculative } from './decode/speculative';
export { speculativeSample, leviathanAcceptance, naiveAcceptance, residual } from './decode/spec_sampling';
export type { AcceptanceRule, SpecSamplingOptions, SpecSamplingResult } from './decode/spec_sampling';
export { unverifiedGenerate } from './decode/unverified';
export type { UnverifiedOptions } from './decode/unverified';

export * from './eval/quality';
export * from './eval/theory';
export { compareWithAR } from './eval/speed';
export type { Decoder, SpeedRow, SpeedOptions } from './eval/speed';

export * from './plot/theme';
export * from './plot/figures';
export * from './plot/tokens';
export { sequentialSpeculativeSample, sequentialUnverified } from './decode/sequential_sampling';
