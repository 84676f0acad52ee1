/**
 * Multi-token-prediction variants as a discriminated union (DESIGN §3): one `kind` per variant, each
 * with its own typed fields, defaults and a one-line reason per field (the CLI's --help text).
 * Set from the command line as `--mtp.kind=parallel --mtp.k=4`.
 */

/** The plain next-token model: the baseline every variant is compared with. */
export interface NoMtp {
  kind: 'none';
}

/** k independent heads on a shared trunk (Gloeckle et al. 2024, §2). */
export interface ParallelMtp {
  kind: 'parallel';
  k: number;
  headLayers: number;
  matchParams: boolean;
  headWeights: number[];
}

/** D sequential modules chained after the trunk (DeepSeek-V3 Technical Report §2.2). */
export interface SequentialMtp {
  kind: 'sequential';
  depth: number;
  lambda: number;
  lambdaLate: number;
  lambdaSwitch: number;
}

/** K Medusa heads on the final hidden state, verified with tree attention (Cai et al. 2024). */
export interface MedusaMtp {
  kind: 'medusa';
  heads: number;
  frozenTrunk: boolean;
  lambda0: number;
  decay: number;
  headLrMultiplier: number;
}

export type MtpConfig = NoMtp | ParallelMtp | SequentialMtp | MedusaMtp;
export type MtpKind = MtpConfig['kind'];
export const MTP_KINDS = ['none', 'parallel', 'sequential', 'medusa'] as const satisfies readonly MtpKind[];

type Fields<T> = Omit<T, 'kind'>;

export const MTP_DEFAULTS: { [K in MtpKind]: Extract<MtpConfig, { kind: K }> } = {
  none: { kind: 'none' },
  parallel: { kind: 'parallel', k: 4, headLayers: 1, matchParams: false, headWeights: [] },
  sequential: { kind: 'sequential', depth: 1, lambda: 0.3, lambdaLate: 0.1, lambdaSwitch: 0.7 },
  medusa: { kind: 'medusa', heads: 4, frozenTrunk: true, lambda0: 0.2, decay: 0.8, headLrMultiplier: 4 },
};

export const MTP_DOCS: { [K in MtpKind]: { [F in keyof Fields<Extract<MtpConfig, { kind: K }>>]: string } } = {
  none: {},
  parallel: {
    k: 'future tokens predicted per position = heads; head i predicts x[t+i] (Gloeckle: n = 4 for code)',
    headLayers: 'transformer blocks in each head; head 1 is the last blocks of the standard model',
    matchParams: 'remove (k−1)·headLayers trunk blocks so the total parameter count equals the k = 1 model',
    headWeights: 'loss weight per head (comma list, k values); empty = uniform mean of the k losses',
  },
  sequential: {
    depth: 'D modules; module m predicts x[t+m+1] from module m−1’s state and the embedding of x[t+m] (DeepSeek-V3: D = 1)',
    lambda: 'weight λ of the modules’ mean loss early in training: L = L_main + (λ/D)·Σ Lᵐ (DeepSeek-V3: 0.3)',
    lambdaLate: 'λ after lambdaSwitch of the steps (DeepSeek-V3: 0.1); equal to lambda for a constant weight',
    lambdaSwitch: 'fraction of training after which λ becomes lambdaLate (DeepSeek-V3: 10T of 14.8T tokens ≈ 0.7)',
  },
  medusa: {
    heads: 'K Medusa heads; head k predicts x[t+k+1] from the last hidden state (Medusa: 4–5)',
    frozenTrunk: 'true = Medusa-1 (trunk frozen, only heads train); false = Medusa-2 (joint training)',
    lambda0: 'Medusa-2 weight of the heads’ loss: L = L_LM + λ₀·Σ λₖ·CEₖ (Medusa: 0.2)',
    decay: 'λₖ = decay^k, the per-head loss weight (Medusa: 0.8)',
    headLrMultiplier: 'Medusa-2 learning-rate multiplier for the heads (Medusa: 4)',
  },
};

function isPositiveInt(v: unknown, min: number): boolean {
  return typeof v === 'number' && Number.isInteger(v) && v >= min;
}

/** Problems with an mtp config as messages (empty = valid); nLayer is the trunk depth asked for. */
export function mtpErrors(m: MtpConfig, nLayer: number): string[] {
  if (typeof m !== 'object' || m === null) return [`model.mtp must be an object like { kind: 'none' }`];
  if (!(MTP_KINDS as readonly string[]).includes(m.kind)) {
    return [`unknown model.mtp.kind ${JSON.stringify(m.kind)}; allowed: ${MTP_KINDS.join(', ')}`];
  }
  const errors: string[] = [];
  const known = Object.keys(MTP_DEFAULTS[m.kind]);
  for (const key of Object.keys(m)) {
    if (!known.includes(key)) errors.push(`mtp.${key} is not a field of kind '${m.kind}'; its fields: ${known.filter((k) => k !== 'kind').join(', ') || 'none'}`);
  }
  if (m.kind === 'parallel') {
    if (!isPositiveInt(m.k, 1)) errors.push(`mtp.k must be an integer ≥ 1, got ${String(m.k)}`);
    if (!isPositiveInt(m.headLayers, 1)) errors.push(`mtp.headLayers must be an integer ≥ 1, got ${String(m.headLayers)}`);
    if (typeof m.matchParams !== 'boolean') errors.push(`mtp.matchParams must be true or false, got ${String(m.matchParams)}`);
    const w = m.headWeights;
    if (!Array.isArray(w) || w.some((x) => typeof x !== 'number' || !Number.isFinite(x) || x < 0)) {
      errors.push(`mtp.headWeights must be a list of finite numbers ≥ 0, got ${JSON.stringify(w)}`);
    } else if (w.length > 0 && (w.length !== m.k || w.every((x) => x === 0))) {
      errors.push(`mtp.headWeights must hold k = ${m.k} weights, not all zero (or be empty for uniform), got [${w.join(', ')}]`);
    }
    if (errors.length === 0) {
      const shared = parallelSharedLayers(nLayer, m);
      if (shared < 1) {
        errors.push(
          `model.nLayer = ${nLayer} leaves ${shared} shared trunk blocks with mtp.k = ${m.k}, mtp.headLayers = ${m.headLayers}` +
            `${m.matchParams ? ', matchParams' : ''}; at least 1 is needed (raise nLayer or lower k / headLayers)`,
        );
      }
    }
  }
  if (m.kind === 'sequential') {
    if (!isPositiveInt(m.depth, 1)) errors.push(`mtp.depth must be an integer ≥ 1, got ${String(m.depth)}`);
    for (const f of ['lambda', 'lambdaLate'] as const) {
      if (!(typeof m[f] === 'number' && Number.isFinite(m[f]) && m[f] >= 0)) errors.push(`mtp.${f} must be a number ≥ 0, got ${String(m[f])}`);
    }
    if (!(typeof m.lambdaSwitch === 'number' && m.lambdaSwitch >= 0 && m.lambdaSwitch <= 1)) {
      errors.push(`mtp.lambdaSwitch must be a fraction in [0, 1], got ${String(m.lambdaSwitch)}`);
    }
  }
  if (m.kind === 'medusa') {
    if (!isPositiveInt(m.heads, 1)) errors.push(`mtp.heads must be an integer ≥ 1, got ${String(m.heads)}`);
    if (typeof m.frozenTrunk !== 'boolean') errors.push(`mtp.frozenTrunk must be true or false, got ${String(m.frozenTrunk)}`);
    for (const f of ['lambda0', 'headLrMultiplier'] as const) {
      if (!(typeof m[f] === 'number' && Number.isFinite(m[f]) && m[f] > 0)) errors.push(`mtp.${f} must be a number > 0, got ${String(m[f])}`);
    }
    if (!(typeof m.decay === 'number' && m.decay > 0 && m.decay <= 1)) errors.push(`mtp.decay must be in (0, 1], got ${String(m.decay)}`);
  }
  return errors;
}

/**
 * Blocks of the shared trunk for the parallel variant: nLayer − headLayers (head 1 is the last
 * headLayers blocks of the standard model), minus (k−1)·headLayers more with matchParams.
 */
export function parallelSharedLayers(nLayer: number, m: ParallelMtp): number {
  return nLayer - m.headLayers - (m.matchParams ? (m.k - 1) * m.headLayers : 0);
}

/** Number of future tokens a config's model predicts per position (1 for the plain model). */
export function mtpTokens(m: MtpConfig): number {
  switch (m.kind) {
    case 'none':
      return 1;
    case 'parallel':
      return m.k;
    case 'sequential':
      return 1 + m.depth;
    case 'medusa':
      return 1 + m.heads;
  }
}
