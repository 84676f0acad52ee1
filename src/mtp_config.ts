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

export type MtpConfig = NoMtp | ParallelMtp;
export type MtpKind = MtpConfig['kind'];
export const MTP_KINDS = ['none', 'parallel'] as const satisfies readonly MtpKind[];

type Fields<T> = Omit<T, 'kind'>;

export const MTP_DEFAULTS: { [K in MtpKind]: Extract<MtpConfig, { kind: K }> } = {
  none: { kind: 'none' },
  parallel: { kind: 'parallel', k: 4, headLayers: 1, matchParams: false, headWeights: [] },
};

export const MTP_DOCS: { [K in MtpKind]: { [F in keyof Fields<Extract<MtpConfig, { kind: K }>>]: string } } = {
  none: {},
  parallel: {
    k: 'future tokens predicted per position = heads; head i predicts x[t+i] (Gloeckle: n = 4 for code)',
    headLayers: 'transformer blocks in each head; head 1 is the last blocks of the standard model',
    matchParams: 'remove (k−1)·headLayers trunk blocks so the total parameter count equals the k = 1 model',
    headWeights: 'loss weight per head (comma list, k values); empty = uniform mean of the k losses',
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
  return m.kind === 'parallel' ? m.k : 1;
}
