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
export type { GenerateOptions, SamplingOptions } from './decode/ar';
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
export { MedusaModel } from './model/medusa';
export { headRankAccuracies } from './eval/head_accuracy';
export { combTree, draftRankAccuracies, optimisedTree } from './eval/draft_accuracy';
export type { DraftAccuracyOptions } from './eval/draft_accuracy';
export { SequentialModel } from './model/sequential';
export { CacheSet } from './model/cache_set';
export { forwardFlopsPerToken, trainFlopsPerToken } from './model/flops';
export type { BackwardMode } from './config';

export * from './decode/tree';
export * from './decode/draft_tree';
export * from './decode/acceptance';
export { DecodeSession, decode, stepMask } from './decode/engine';
export type { EngineOptions, EngineResult, EngineStats, StepProfile, StepRecord } from './decode/engine';
export type { CommitInfo, DraftContext, Drafter, DrafterOptions, VerifyTarget } from './decode/drafter';
export { HeadsDrafter } from './decode/heads_drafter';
export type { HeadsSource } from './decode/heads_drafter';
export { TreeShape, pickChildren, topIndices } from './decode/tree_shape';
export { PromptLookupDrafter, lookupContinuations, LOOKUP_DEFAULTS } from './decode/lookup';
export type { LookupOptions } from './decode/lookup';
export { selfSpeculative, blockwiseGenerate, sequentialGenerate, medusaGenerate, speculativeSample, unverifiedGenerate, lookupGenerate } from './decode/decoders';
export type { DecoderOptions, MedusaOptions, SpecSamplingOptions } from './decode/decoders';

export * from './eval/quality';
export * from './eval/theory';
export { compareWithAR } from './eval/speed';
export type { Decoder, SpeedRow, SpeedOptions } from './eval/speed';

export * from './plot/theme';
export * from './plot/figures';
export * from './plot/tokens';
