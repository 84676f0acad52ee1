/**
 * The decoders by name, each one (drafter × acceptance rule) on the decoding engine (decode/engine.ts).
 * They are what lessons, experiments and the CLI call; each is a few lines because the loop is not
 * here. Greedy ones are lossless: their output equals plain greedy decoding of the model token for token.
 *
 * | decoder              | drafter                                   | acceptance rule              |
 * |----------------------|-------------------------------------------|------------------------------|
 * | generate (AR)        | none                                      | greedy, or sampling          |
 * | selfSpeculative      | the variant's own (heads / modules), chain | greedy                       |
 * | blockwiseGenerate    | the variant's own, chain                  | greedy                       |
 * | medusaGenerate       | Medusa heads, any tree shape              | greedy or typical            |
 * | speculativeSample    | the variant's own, sampled drafts         | speculative sampling         |
 * | unverifiedGenerate   | the variant's own, chain                  | unverified (lossy)           |
 * | lookupGenerate       | prompt lookup (n-gram match, no model)    | greedy                       |
 */
import type { MtpModel } from '../model/mtp_model';
import type { AcceptProbability } from './acceptance';
import { greedyAcceptance, leviathanAcceptance, speculativeAcceptance, typicalAcceptance, unverifiedAcceptance } from './acceptance';
import type { SamplingOptions } from './ar';
import type { VerifyTarget } from './drafter';
import { decode, EngineResult } from './engine';
import { LookupOptions, PromptLookupDrafter } from './lookup';
import { resolveSampling } from './sampling';
import type { TreeChoices } from './tree';

export { generate } from './ar';
export type { GenerateOptions, SamplingOptions } from './ar';

/** Tokens to generate, and (for the drafting decoders) tokens per step k = 1 + draft depth (default: all the model offers). */
export interface DecoderOptions {
  maxNewTokens: number;
  k?: number;
}

/**
 * Lossless greedy self-speculative decoding with the variant's own drafter as a chain: blockwise
 * parallel decoding for parallel heads (Stern et al. 2018; Gloeckle et al. 2024 §3.2), sequential
 * modules drafting (DeepSeek-V3 §2.2), a Medusa chain.
 */
export async function selfSpeculative(model: MtpModel, prompt: readonly number[], opts: DecoderOptions): Promise<EngineResult> {
  return decode(model, model.drafter({ k: opts.k }), prompt, { maxNewTokens: opts.maxNewTokens });
}

/** Blockwise parallel decoding: the name lessons use for self-speculative decoding with a chain. */
export const blockwiseGenerate = selfSpeculative;

/** Sequential modules drafting a chain; the same as selfSpeculative on a sequential model. */
export const sequentialGenerate = selfSpeculative;

export interface MedusaOptions extends SamplingOptions {
  maxNewTokens: number;
  /** Tree shape as paths of top-k ranks (decode/tree.ts); its depth is at most the model's heads. */
  tree: TreeChoices;
  /** greedy (lossless, default) or typical (Cai et al. 2024 §2.3.1). */
  acceptance?: 'greedy' | 'typical';
  /** Typical only: hard threshold ε (default 0.09). */
  epsilon?: number;
  /** Typical only: entropy-scaled threshold δ (default 0.3). */
  delta?: number;
}

/** Medusa tree decoding (Cai et al. 2024): the tree's drafts verified in one forward with tree attention. */
export async function medusaGenerate(model: MtpModel, prompt: readonly number[], opts: MedusaOptions): Promise<EngineResult> {
  const name = opts.acceptance ?? 'greedy';
  if (name !== 'greedy' && name !== 'typical') throw new Error(`medusa: acceptance must be 'greedy' or 'typical', got ${JSON.stringify(name)}`);
  const acceptance = name === 'greedy' ? greedyAcceptance() : typicalAcceptance({ ...resolveSampling(opts), epsilon: opts.epsilon, delta: opts.delta });
  if (name === 'greedy' && (opts.temperature ?? 0) > 0) throw new Error("medusa: temperature applies to acceptance 'typical' only; greedy acceptance is deterministic");
  return decode(model, model.drafter({ tree: opts.tree }), prompt, { maxNewTokens: opts.maxNewTokens, acceptance, seed: opts.seed });
}

export interface SpecSamplingOptions extends DecoderOptions, SamplingOptions {
  /** Probability of keeping a draft (default Leviathan's min(1, p/q); `naiveAcceptance` shows the bias without it). */
  acceptance?: AcceptProbability;
}

/**
 * Speculative sampling (Leviathan et al. 2023; Chen et al. 2023) with the variant's drafter: lossless
 * at temperature > 0 (default temperature 1) — the output is distributed exactly as sampling from the
 * next-token head alone. At temperature 0 it is greedy verification.
 */
export async function speculativeSample(model: MtpModel, prompt: readonly number[], opts: SpecSamplingOptions): Promise<EngineResult> {
  const s = resolveSampling(opts, { temperature: 1, topK: 0, topP: 1 });
  const acceptance = speculativeAcceptance(s, opts.acceptance ?? leviathanAcceptance);
  return decode(model, model.drafter({ k: opts.k }), prompt, { maxNewTokens: opts.maxNewTokens, acceptance, seed: opts.seed });
}

/**
 * Unverified parallel emission — LOSSY, for contrast: every forward emits the drafted chain without
 * checking it (the seed article's "several tokens at once"); τ = k by construction, quality pays.
 */
export async function unverifiedGenerate(model: MtpModel, prompt: readonly number[], opts: DecoderOptions & SamplingOptions): Promise<EngineResult> {
  const acceptance = unverifiedAcceptance(resolveSampling(opts));
  return decode(model, model.drafter({ k: opts.k }), prompt, { maxNewTokens: opts.maxNewTokens, acceptance, seed: opts.seed });
}

/** Prompt-lookup decoding (Saxena 2023): drafts copied from earlier in the text, verified greedily. Any target. */
export async function lookupGenerate(model: VerifyTarget, prompt: readonly number[], opts: DecoderOptions & Omit<LookupOptions, 'k'>): Promise<EngineResult> {
  return decode(model, new PromptLookupDrafter({ k: opts.k, maxNgram: opts.maxNgram, branches: opts.branches }), prompt, { maxNewTokens: opts.maxNewTokens });
}
