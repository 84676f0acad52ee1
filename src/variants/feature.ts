/**
 * A feature-level autoregressive drafter on a frozen trunk (EAGLE, Li et al. 2024; EAGLE-3, 2025): a small transformer
 * that reads the trunk's hidden state at position t with the embedding of token t+1, predicts the hidden state at
 * t+1 (and through the trunk's own output head, token t+2), and drafts further by feeding its own predictions back;
 * model: src/model/feature.ts.
 */
import { isInt, isNum, VariantSpec } from './spec';

export interface FeatureMtp {
  kind: 'feature';
  /** Transformer blocks of the drafter. */
  layers: number;
  /** Which trunk states the drafter reads: the last block's output, or low/mid/high blocks fused (EAGLE-3). */
  features: 'last' | 'fused';
  /** Training-time test: drafting steps unrolled in training, each reading the previous step's predictions. */
  unroll: number;
  /** Weight of the feature regression (smooth L1 to the trunk's next hidden state) beside the tokens' cross-entropy. */
  featureWeight: number;
  /** Tokens drafted per step by default (any depth works: the drafter is autoregressive). */
  draftDepth: number;
}

export const FEATURE_SOURCES = ['last', 'fused'] as const;

export const feature: VariantSpec<FeatureMtp> = {
  defaults: { kind: 'feature', layers: 1, features: 'last', unroll: 3, featureWeight: 1, draftDepth: 5 },
  docs: {
    layers: 'transformer blocks of the drafter (EAGLE: 1, the Gemma 4 assistant drafters: 4)',
    features: 'last = the trunk’s last hidden state (EAGLE-1/2); fused = its low, middle and last blocks’ states projected together (EAGLE-3)',
    unroll: 'training-time test: drafting steps unrolled in training, step s reading step s−1’s predicted states (1 = teacher forcing only, EAGLE-1; EAGLE-3 unrolls)',
    featureWeight: 'weight of the smooth-L1 regression to the trunk’s next hidden state, beside the tokens’ cross-entropy (EAGLE-1 regresses, EAGLE-3: 0)',
    draftDepth: 'tokens drafted per step by default, `--k` = 1 + depth overrides it (EAGLE: 5–7)',
  },
  errors(m) {
    const errors: string[] = [];
    for (const f of ['layers', 'unroll', 'draftDepth'] as const) if (!isInt(m[f], 1)) errors.push(`mtp.${f} must be an integer ≥ 1, got ${String(m[f])}`);
    if (!(FEATURE_SOURCES as readonly string[]).includes(m.features)) errors.push(`mtp.features must be one of ${FEATURE_SOURCES.join(', ')}, got ${JSON.stringify(m.features)}`);
    if (!isNum(m.featureWeight, 0)) errors.push(`mtp.featureWeight must be a number ≥ 0, got ${String(m.featureWeight)}`);
    return errors;
  },
  // the drafter: two RMSNorm gains, the 2C×C projection, its blocks, and for fused states the 3C×C projection
  blockParams: (m, t) => t.nLayer * t.block + 2 * t.nEmbd + 2 * t.nEmbd * t.nEmbd + m.layers * t.block + (m.features === 'fused' ? 3 * t.nEmbd * t.nEmbd : 0),
  // training reads x[t+1] (the drafter's input token) and x[t+2] (its target)
  tokens: () => 2,
  decoder: 'feature',
};
