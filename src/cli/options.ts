/**
 * Command-line flags generated from the typed config: every field of ModelConfig / TrainConfig
 * becomes `--model.<field>` / `--train.<field>`, with its DEFAULTS value and its one-line reason as
 * help text. Unknown flags are errors (yargs strict mode); values go through validate().
 */
import type { Argv } from 'yargs';
import {
  Config,
  MODEL_DEFAULTS,
  MODEL_DOCS,
  ModelConfig,
  MTP_DEFAULTS,
  MTP_DOCS,
  MTP_KINDS,
  MtpConfig,
  MtpKind,
  PRESETS,
  PRESET_NAMES,
  PresetName,
  resolveConfig,
  TRAIN_DEFAULTS,
  TRAIN_DOCS,
  TrainConfig,
} from '../config';

/** Fields that are objects, set through their own sub-flags, not one flag. */
const NESTED = new Set(['mtp']);

function addSection<T extends object>(y: Argv, section: string, defaults: T, docs: { [K in keyof T]: string }, preset?: string): Argv {
  for (const key of Object.keys(defaults) as (keyof T & string)[]) {
    if (NESTED.has(key)) continue;
    const def = defaults[key];
    y = y.option(`${section}.${key}`, {
      describe: `${docs[key]} [${preset ? `${preset}` : 'default'}: ${JSON.stringify(def)}]`,
      type: typeof def === 'number' ? 'number' : typeof def === 'boolean' ? 'boolean' : 'string',
      group: `${section} config:`,
    });
  }
  return y;
}

/** `--mtp.kind` and every variant field, each documented with the kinds it belongs to. */
function addMtp(y: Argv): Argv {
  y = y.option('mtp.kind', { describe: 'multi-token-prediction variant [default: none]', choices: MTP_KINDS as unknown as string[], type: 'string', group: 'mtp config:' });
  const fields = new Map<string, { doc: string; kinds: string[]; def: unknown }>();
  for (const kind of MTP_KINDS) {
    const docs = MTP_DOCS[kind] as Record<string, string>;
    for (const [field, doc] of Object.entries(docs)) {
      const entry = fields.get(field) ?? { doc, kinds: [], def: (MTP_DEFAULTS[kind] as unknown as Record<string, unknown>)[field] };
      entry.kinds.push(kind);
      fields.set(field, entry);
    }
  }
  for (const [field, { doc, kinds, def }] of fields) {
    const list = Array.isArray(def);
    y = y.option(`mtp.${field}`, {
      describe: `(${kinds.join(', ')}) ${doc} [default: ${list ? (def as unknown[]).join(',') || 'empty' : JSON.stringify(def)}]`,
      type: typeof def === 'number' ? 'number' : typeof def === 'boolean' ? 'boolean' : 'string',
      group: 'mtp config:',
    });
  }
  return y;
}

/** The --preset given on the command line, if any (so --help can show that preset's values). */
function presetInArgs(args: readonly string[]): PresetName | undefined {
  for (let i = 0; i < args.length; i++) {
    const name = args[i].startsWith('--preset=') ? args[i].slice(9) : args[i] === '--preset' ? args[i + 1] : undefined;
    if (name !== undefined && (PRESET_NAMES as readonly string[]).includes(name)) return name as PresetName;
  }
  return undefined;
}

/** Adds --preset and every config field as a flag; the help shows the values of the --preset given (`args`), if any. */
export function withConfigOptions(y: Argv, args: readonly string[] = process.argv.slice(2)): Argv {
  const preset = presetInArgs(args);
  const p = preset ? PRESETS[preset] : { model: {}, train: {} };
  y = y.option('preset', { describe: 'starting point before overrides (--help shows its values when given)', choices: PRESET_NAMES as unknown as string[], type: 'string' });
  y = addSection(y, 'model', { ...MODEL_DEFAULTS, ...p.model }, MODEL_DOCS, preset);
  y = addMtp(y);
  return addSection(y, 'train', { ...TRAIN_DEFAULTS, ...p.train }, TRAIN_DOCS, preset);
}

/** Parses a comma list of numbers ('' = empty list). */
function numberList(flag: string, v: unknown): number[] {
  const text = String(v).trim();
  if (text === '') return [];
  return text.split(',').map((x) => {
    const n = Number(x);
    if (x.trim() === '' || !Number.isFinite(n)) throw new Error(`--${flag} must be a comma list of numbers, got '${text}'`);
    return n;
  });
}

/** The mtp config from `--mtp.*` flags on top of the preset's (or none). */
function mtpFromArgs(argv: Record<string, unknown>, base: MtpConfig): MtpConfig | undefined {
  const given = Object.entries(argv).filter(([flag, v]) => flag.startsWith('mtp.') && v !== undefined);
  if (given.length === 0) return undefined;
  const kind = (argv['mtp.kind'] as MtpKind | undefined) ?? base.kind;
  const start: Record<string, unknown> = kind === base.kind ? { ...base } : { ...MTP_DEFAULTS[kind] };
  for (const [flag, v] of given) {
    const field = flag.slice(4);
    if (field === 'kind') continue;
    const def = (MTP_DEFAULTS as unknown as Record<string, Record<string, unknown>>)[kind]?.[field];
    start[field] = Array.isArray(def) ? numberList(flag, v) : v;
  }
  return start as unknown as MtpConfig;
}

/**
 * DEFAULTS ← preset ← the flags the user gave; throws the validation message on bad values.
 * Flags keep their dotted names (yargs runs with dot-notation off so strict mode can check them).
 */
export function configFromArgs(argv: Record<string, unknown>): Config {
  const model: Record<string, unknown> = {};
  const train: Record<string, unknown> = {};
  for (const [flag, value] of Object.entries(argv)) {
    if (value === undefined) continue;
    if (flag.startsWith('model.')) model[flag.slice(6)] = value;
    if (flag.startsWith('train.')) train[flag.slice(6)] = value;
  }
  const preset = argv.preset as PresetName | undefined;
  const base = (model.mtp as MtpConfig | undefined) ?? (preset ? PRESETS[preset].model.mtp : undefined) ?? MODEL_DEFAULTS.mtp;
  const mtp = mtpFromArgs(argv, base);
  if (mtp) model.mtp = mtp;
  return resolveConfig(preset, { model: model as Partial<ModelConfig>, train: train as Partial<TrainConfig> });
}

/** Runs `read` and prefixes any error with the flag it came from (`--prompt: …`). */
export function fromFlag<T>(flag: string, read: () => T): T {
  try {
    return read();
  } catch (e) {
    throw new Error(`--${flag}: ${(e as Error).message}`, { cause: e });
  }
}
