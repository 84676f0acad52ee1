/**
 * The zoo's reference models: per corpus, the plain next-token model (`<corpus>-ar`), parallel heads with k = 2, 4, 8
 * (`<corpus>-parallel-k<k>`), sequential modules with D = 1, 2, 3 (`<corpus>-sequential-d<D>`), and, trained on the
 * frozen trunk of that corpus's `-ar` model (so they start when that one has finished), Medusa-1 with K = 5 heads
 * (`<corpus>-medusa1-k5`) and the feature drafter on the last hidden state and on fused states (`<corpus>-feature`,
 * `<corpus>-feature-fused`). Every model of a corpus starts from the same base config (preset, steps, backend).
 */
import type { Config, MtpConfig } from '../src/config';
import { MTP_DEFAULTS, resolveConfig } from '../src/config';
import type { CorpusName } from '../src/data/corpora';

export const ZOO_PARALLEL_K = [2, 4, 8];
export const ZOO_SEQUENTIAL_D = [1, 2, 3];
export const ZOO_MEDUSA_HEADS = 5;

export interface ZooModelSpec {
  /** Zoo name, also the run folder's name. */
  name: string;
  config: Config;
  /** Zoo name of the model whose trained weights start this one (`mtp train --init`). */
  initFrom?: string;
}

/** Every reference model for these corpora, from `base` (its mtp and corpus replaced per model). */
export function zooModels(base: Config, corpora: readonly CorpusName[]): ZooModelSpec[] {
  const out: ZooModelSpec[] = [];
  for (const corpus of corpora) {
    const make = (name: string, mtp: MtpConfig, initFrom?: string) =>
      out.push({ name, config: resolveConfig(undefined, { model: { ...base.model, mtp }, train: { ...base.train, corpus } }), ...(initFrom ? { initFrom } : {}) });
    make(`${corpus}-ar`, { kind: 'none' });
    for (const k of ZOO_PARALLEL_K) make(`${corpus}-parallel-k${k}`, { ...MTP_DEFAULTS.parallel, k });
    for (const depth of ZOO_SEQUENTIAL_D) make(`${corpus}-sequential-d${depth}`, { ...MTP_DEFAULTS.sequential, depth });
    make(`${corpus}-medusa1-k${ZOO_MEDUSA_HEADS}`, { ...MTP_DEFAULTS.medusa, heads: ZOO_MEDUSA_HEADS, frozenTrunk: true }, `${corpus}-ar`);
    make(`${corpus}-feature`, { ...MTP_DEFAULTS.feature, features: 'last' }, `${corpus}-ar`);
    make(`${corpus}-feature-fused`, { ...MTP_DEFAULTS.feature, features: 'fused' }, `${corpus}-ar`);
  }
  return out;
}

/**
 * The models to train for `only` (undefined = all): the named ones plus the models they start from, in list order;
 * `needed` names those added for another's sake. Unknown names are an error listing the known ones.
 */
export function selectZooModels(all: ZooModelSpec[], only?: string[]): { train: ZooModelSpec[]; needed: Map<string, string> } {
  const byName = new Map(all.map((m) => [m.name, m]));
  const wanted = new Set(only ?? all.map((m) => m.name));
  const unknown = [...wanted].filter((n) => !byName.has(n));
  if (unknown.length) throw new Error(`--only: unknown model${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')}; the zoo's models: ${all.map((m) => m.name).join(', ')}`);
  const needed = new Map<string, string>();
  for (const name of [...wanted]) {
    for (let m = byName.get(name)!; m.initFrom !== undefined; m = byName.get(m.initFrom)!) {
      if (!wanted.has(m.initFrom) && !needed.has(m.initFrom)) needed.set(m.initFrom, m.name);
    }
  }
  return { train: all.filter((m) => wanted.has(m.name) || needed.has(m.name)), needed };
}
