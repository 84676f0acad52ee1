/** k independent heads on a shared trunk (Gloeckle et al. 2024, §2); model: src/model/parallel.ts. */
import { isInt, VariantSpec } from './spec';

export interface ParallelMtp {
  kind: 'parallel';
  k: number;
  headLayers: number;
  matchParams: boolean;
  headWeights: number[];
}

/**
 * Blocks of the shared trunk: nLayer − headLayers (head 1 is the last headLayers blocks of the
 * standard model), minus (k−1)·headLayers more with matchParams.
 */
export function parallelSharedLayers(nLayer: number, m: ParallelMtp): number {
  return nLayer - m.headLayers - (m.matchParams ? (m.k - 1) * m.headLayers : 0);
}

export const parallel: VariantSpec<ParallelMtp> = {
  defaults: { kind: 'parallel', k: 4, headLayers: 1, matchParams: false, headWeights: [] },
  docs: {
    k: 'future tokens predicted per position = heads; head i predicts x[t+i] (Gloeckle: n = 4 for code)',
    headLayers: 'transformer blocks in each head; head 1 is the last blocks of the standard model',
    matchParams: 'remove (k−1)·headLayers trunk blocks so the total parameter count equals the k = 1 model',
    headWeights: 'loss weight per head (comma list, k values); empty = uniform mean of the k losses',
  },
  errors(m, nLayer) {
    const errors: string[] = [];
    if (!isInt(m.k, 1)) errors.push(`mtp.k must be an integer ≥ 1, got ${String(m.k)}`);
    if (!isInt(m.headLayers, 1)) errors.push(`mtp.headLayers must be an integer ≥ 1, got ${String(m.headLayers)}`);
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
    return errors;
  },
  blockParams: (m, t) => (parallelSharedLayers(t.nLayer, m) + m.k * m.headLayers) * t.block,
  tokens: (m) => m.k,
  decoder: 'blockwise',
};
