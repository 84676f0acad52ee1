/**
 * One entry point for lossless self-speculative greedy decoding with whatever variant a model is:
 * experiments and notebooks call this and read the same statistics (τ, αᵢ, forwards, tokens/s).
 */
import type { MtpModel } from '../model/create';
import type { SequentialModel } from '../model/sequential';
import { blockwiseGenerate, BlockwiseResult } from './blockwise';
import { medusaGenerate } from './medusa';
import { chainTree } from './tree';
import { sequentialGenerate } from './sequential';

export interface SelfSpeculativeOptions {
  maxNewTokens: number;
  /** Draft tokens per step (parallel: heads used; default all). */
  k?: number;
}

/** Greedy self-speculative decoding: the output equals plain greedy decoding of the model's trunk. */
export function selfSpeculative(model: MtpModel, prompt: number[], opts: SelfSpeculativeOptions): Promise<BlockwiseResult> {
  const kind = model.config.mtp.kind;
  switch (kind) {
    case 'none':
    case 'parallel':
      return blockwiseGenerate(model, prompt, opts);
    case 'sequential':
      return sequentialGenerate(model as SequentialModel, prompt, opts);
    case 'medusa':
      return medusaGenerate(model, prompt, { maxNewTokens: opts.maxNewTokens, tree: chainTree((opts.k ?? model.k) - 1) });
    default:
      throw new Error(`no self-speculative decoder for mtp.kind '${kind}' in this build`);
  }
}
