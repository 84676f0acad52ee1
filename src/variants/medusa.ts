/** K Medusa heads on the final hidden state, verified with tree attention (Cai et al. 2024); model: src/model/medusa.ts. */
import { isInt, isNum, VariantSpec } from './spec';

export interface MedusaMtp {
  kind: 'medusa';
  heads: number;
  frozenTrunk: boolean;
  lambda0: number;
  decay: number;
  headLrMultiplier: number;
}

export const medusa: VariantSpec<MedusaMtp> = {
  defaults: { kind: 'medusa', heads: 4, frozenTrunk: true, lambda0: 0.2, decay: 0.8, headLrMultiplier: 4 },
  docs: {
    heads: 'K Medusa heads; head k predicts x[t+k+1] from the last hidden state (Medusa: 4–5)',
    frozenTrunk: 'true = Medusa-1 (trunk frozen, only heads train); false = Medusa-2 (joint training)',
    lambda0: 'Medusa-2 weight of the heads’ loss: L = L_LM + λ₀·Σ λₖ·CEₖ (Medusa: 0.2)',
    decay: 'λₖ = decay^k, the per-head loss weight (Medusa: 0.8)',
    headLrMultiplier: 'Medusa-2 learning-rate multiplier for the heads (Medusa: 4)',
  },
  errors(m) {
    const errors: string[] = [];
    if (!isInt(m.heads, 1)) errors.push(`mtp.heads must be an integer ≥ 1, got ${String(m.heads)}`);
    if (typeof m.frozenTrunk !== 'boolean') errors.push(`mtp.frozenTrunk must be true or false, got ${String(m.frozenTrunk)}`);
    for (const f of ['lambda0', 'headLrMultiplier'] as const) if (!isNum(m[f], 0, true)) errors.push(`mtp.${f} must be a number > 0, got ${String(m[f])}`);
    if (!(typeof m.decay === 'number' && m.decay > 0 && m.decay <= 1)) errors.push(`mtp.decay must be in (0, 1], got ${String(m.decay)}`);
    return errors;
  },
  // per head: W1 (C×C) with bias, W2 (C×V)
  blockParams: (m, t) => t.nLayer * t.block + m.heads * (t.nEmbd * t.nEmbd + t.nEmbd + t.nEmbd * t.vocabSize),
  tokens: (m) => 1 + m.heads,
  decoder: 'medusa',
};
