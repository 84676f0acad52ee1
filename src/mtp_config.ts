/**
 * Multi-token-prediction variants as a discriminated union (one `kind` per variant), gathered from one
 * module per variant (src/variants/): its typed fields, defaults with a one-line reason each (the CLI's
 * --help text), validation, parameter count, tokens per position and decoder name. Nothing else
 * branches on the kind: callers look the variant up here. Set from the command line as
 * `--mtp.kind=parallel --mtp.k=4`.
 */
import { feature, FeatureMtp } from './variants/feature';
import { medusa, MedusaMtp } from './variants/medusa';
import { none, NoMtp } from './variants/none';
import { parallel, ParallelMtp } from './variants/parallel';
import { sequential, SequentialMtp } from './variants/sequential';
import type { TrunkShape, VariantSpec } from './variants/spec';

export type { FeatureMtp } from './variants/feature';
export type { MedusaMtp } from './variants/medusa';
export type { NoMtp } from './variants/none';
export type { ParallelMtp } from './variants/parallel';
export type { SequentialMtp } from './variants/sequential';
export type { TrunkShape, VariantSpec } from './variants/spec';
export { parallelSharedLayers } from './variants/parallel';

export type MtpConfig = NoMtp | ParallelMtp | SequentialMtp | MedusaMtp | FeatureMtp;
export type MtpKind = MtpConfig['kind'];

/** Every variant's declarations, by kind. */
export const VARIANTS: { [K in MtpKind]: VariantSpec<Extract<MtpConfig, { kind: K }>> } = { none, parallel, sequential, medusa, feature };

export const MTP_KINDS = ['none', 'parallel', 'sequential', 'medusa', 'feature'] as const satisfies readonly MtpKind[];

export const MTP_DEFAULTS: { [K in MtpKind]: Extract<MtpConfig, { kind: K }> } = {
  none: none.defaults,
  parallel: parallel.defaults,
  sequential: sequential.defaults,
  medusa: medusa.defaults,
  feature: feature.defaults,
};

export const MTP_DOCS: { [K in MtpKind]: VariantSpec<Extract<MtpConfig, { kind: K }>>['docs'] } = {
  none: none.docs,
  parallel: parallel.docs,
  sequential: sequential.docs,
  medusa: medusa.docs,
  feature: feature.docs,
};

/** The decoder name under which each variant's own drafter runs (`mtp generate --decoder=…`); none for the plain model. */
export const MTP_DECODER: { [K in MtpKind]: string | null } = {
  none: none.decoder,
  parallel: parallel.decoder,
  sequential: sequential.decoder,
  medusa: medusa.decoder,
  feature: feature.decoder,
};

/** The variant's declarations, typed for its config. */
function spec<M extends MtpConfig>(m: M): VariantSpec<M> {
  return VARIANTS[m.kind] as unknown as VariantSpec<M>;
}

/** Problems with an mtp config as messages (empty = valid); nLayer is the trunk depth asked for. */
export function mtpErrors(m: MtpConfig, nLayer: number): string[] {
  if (typeof m !== 'object' || m === null) return [`model.mtp must be an object like { kind: 'none' }`];
  if (!(MTP_KINDS as readonly string[]).includes(m.kind)) {
    return [`unknown model.mtp.kind ${JSON.stringify(m.kind)}; allowed: ${MTP_KINDS.join(', ')}`];
  }
  const known = Object.keys(MTP_DEFAULTS[m.kind]);
  const unknown = Object.keys(m)
    .filter((key) => !known.includes(key))
    .map((key) => `mtp.${key} is not a field of kind '${m.kind}'; its fields: ${known.filter((k) => k !== 'kind').join(', ') || 'none'}`);
  return [...unknown, ...spec(m).errors(m, nLayer)];
}

/** Number of future tokens a config's model predicts per position (1 for the plain model). */
export function mtpTokens(m: MtpConfig): number {
  return spec(m).tokens(m);
}

/** Parameters of the trunk's blocks plus the variant's own (embeddings and unembedding excluded). */
export function mtpBlockParams(m: MtpConfig, t: TrunkShape): number {
  return spec(m).blockParams(m, t);
}
