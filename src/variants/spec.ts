/**
 * What every multi-token-prediction variant declares about its configuration, one module per variant
 * (none.ts, parallel.ts, sequential.ts, medusa.ts) gathered in mtp_config.ts. Pure data and checks,
 * importing nothing above them, so config validation needs no model code. Each variant's model and
 * drafter live in src/model/<variant>.ts and are built through src/model/create.ts.
 */

/** Sizes of the trunk a variant's parameter count depends on. */
export interface TrunkShape {
  nLayer: number;
  nEmbd: number;
  vocabSize: number;
  /** Parameters of one transformer block of this width. */
  block: number;
}

export interface VariantSpec<M extends { kind: string }> {
  /** Fields and their defaults (the CLI's --mtp.* flags). */
  defaults: M;
  /** A one-line reason per field (the CLI's --help text). */
  docs: { [F in keyof Omit<M, 'kind'>]: string };
  /** Problems with a config of this kind as messages that say what is allowed (empty = valid). */
  errors(m: M, nLayer: number): string[];
  /** Parameters of the trunk blocks plus everything the variant adds (embeddings and unembedding excluded). */
  blockParams(m: M, t: TrunkShape): number;
  /** Future tokens each position is trained to predict (1 for the plain model). */
  tokens(m: M): number;
  /** The `mtp generate --decoder=…` name under which its own drafter runs (null: it has none). */
  decoder: string | null;
}

/** True for an integer ≥ min. */
export function isInt(v: unknown, min: number): boolean {
  return typeof v === 'number' && Number.isInteger(v) && v >= min;
}

/** True for a finite number ≥ min (> min when open). */
export function isNum(v: unknown, min: number, open = false): boolean {
  return typeof v === 'number' && Number.isFinite(v) && (open ? v > min : v >= min);
}
