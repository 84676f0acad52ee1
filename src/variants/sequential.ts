/** D sequential modules chained after the trunk (DeepSeek-V3 Technical Report §2.2); model: src/model/sequential.ts. */
import { isInt, isNum, VariantSpec } from './spec';

export interface SequentialMtp {
  kind: 'sequential';
  depth: number;
  lambda: number;
  lambdaLate: number;
  lambdaSwitch: number;
}

export const sequential: VariantSpec<SequentialMtp> = {
  defaults: { kind: 'sequential', depth: 1, lambda: 0.3, lambdaLate: 0.1, lambdaSwitch: 0.7 },
  docs: {
    depth: 'D modules; module m predicts x[t+m+1] from module m−1’s state and the embedding of x[t+m] (DeepSeek-V3: D = 1)',
    lambda: 'weight λ of the modules’ mean loss early in training: L = L_main + (λ/D)·Σ Lᵐ (DeepSeek-V3: 0.3)',
    lambdaLate: 'λ after lambdaSwitch of the steps (DeepSeek-V3: 0.1); equal to lambda for a constant weight',
    lambdaSwitch: 'fraction of training after which λ becomes lambdaLate (DeepSeek-V3: 10T of 14.8T tokens ≈ 0.7)',
  },
  errors(m) {
    const errors: string[] = [];
    if (!isInt(m.depth, 1)) errors.push(`mtp.depth must be an integer ≥ 1, got ${String(m.depth)}`);
    for (const f of ['lambda', 'lambdaLate'] as const) if (!isNum(m[f], 0)) errors.push(`mtp.${f} must be a number ≥ 0, got ${String(m[f])}`);
    if (!(typeof m.lambdaSwitch === 'number' && m.lambdaSwitch >= 0 && m.lambdaSwitch <= 1)) {
      errors.push(`mtp.lambdaSwitch must be a fraction in [0, 1], got ${String(m.lambdaSwitch)}`);
    }
    return errors;
  },
  // per module: two RMSNorm gains, the 2C×C projection, one block
  blockParams: (m, t) => t.nLayer * t.block + m.depth * (2 * t.nEmbd + 2 * t.nEmbd * t.nEmbd + t.block),
  tokens: (m) => 1 + m.depth,
  decoder: 'sequential',
};
