/**
 * The page's decoding choices → the library's pieces: a drafter (the model's own heads or modules, prompt lookup, or
 * none) and an acceptance rule. The same drafters and rules the CLI's `mtp generate` uses; nothing is re-implemented.
 */
import { MTP_DECODER, MTP_DEFAULTS, MtpConfig, MtpKind } from '../../../src/config';
import { acceptanceRule, AcceptanceRule } from '../../../src/decode/acceptance';
import type { Drafter } from '../../../src/decode/drafter';
import { PromptLookupDrafter } from '../../../src/decode/lookup';
import { denseTree, sparseTree } from '../../../src/decode/tree';
import type { MtpModel } from '../../../src/model/mtp_model';
import type { DecodeRequest } from '../protocol';

/** Nodes expanded per level, children per expanded node and nodes verified of the page's dynamic trees (EAGLE-2). */
export const DYNAMIC_TREE = { expand: 4, branch: 4, nodes: 24 } as const;

/**
 * The drafter the request names (null: plain AR), checked against the model's variant. Trees are as deep as the
 * drafter's own chain (k − 1 with k given); the library refuses a shape a drafter cannot draft, with its reason.
 */
export function drafterFor(model: MtpModel, req: Pick<DecodeRequest, 'decoder' | 'tree' | 'k'>): Drafter | null {
  const { k } = req;
  if (k !== undefined && !(Number.isInteger(k) && k >= 1)) throw new Error(`tokens per step k must be an integer ≥ 1, got ${k}`);
  if (req.decoder === 'ar') return null;
  if (req.decoder === 'lookup') return new PromptLookupDrafter({ k });
  if (MTP_DECODER[model.config.mtp.kind] === null) {
    throw new Error(`this model is a plain next-token model (mtp.kind 'none'): it has no heads to draft with; choose prompt lookup or AR`);
  }
  const chain = model.drafter({ k });
  if (req.tree === 'chain') return chain;
  const depth = chain.maxDepth;
  chain.dispose();
  if (depth === 0) return model.drafter({ k });
  if (req.tree === 'dynamic') return model.drafter({ dynamic: { depth, ...DYNAMIC_TREE } });
  return model.drafter({ tree: req.tree === 'dense' ? denseTree(depth) : sparseTree(depth) });
}

/** The acceptance rule and sampling options of the request. */
export function ruleFor(req: Pick<DecodeRequest, 'acceptance' | 'temperature' | 'topK' | 'topP'>): AcceptanceRule {
  return acceptanceRule(req.acceptance, { temperature: req.temperature, topK: req.topK, topP: req.topP });
}

/** Human name of the draft lane: the variant's decoder, lookup or AR, with the rule. */
export function laneName(model: MtpModel, req: Pick<DecodeRequest, 'decoder' | 'tree' | 'acceptance'>): string {
  const base = req.decoder === 'own' ? `${MTP_DECODER[model.config.mtp.kind]} (${req.tree})` : req.decoder === 'lookup' ? 'prompt lookup' : 'AR';
  return `${base}, ${req.acceptance}`;
}

/** An mtp config for a nano model of `kind` predicting `k` tokens per position (k ≥ 2 for the MTP kinds). */
export function nanoMtp(kind: MtpKind, k: number): MtpConfig {
  switch (kind) {
    case 'none':
      return { kind: 'none' };
    case 'parallel':
      return { ...MTP_DEFAULTS.parallel, k };
    case 'medusa':
      return { ...MTP_DEFAULTS.medusa, heads: k - 1, frozenTrunk: false }; // Medusa-2: the trunk trains too (nothing to freeze from scratch)
    case 'sequential':
      return { ...MTP_DEFAULTS.sequential, depth: k - 1 };
    default:
      throw new Error(`unknown variant ${JSON.stringify(kind)}`);
  }
}
