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
  PRESET_NAMES,
  PresetName,
  resolveConfig,
  TRAIN_DEFAULTS,
  TRAIN_DOCS,
  TrainConfig,
} from '../config';

/** Fields that are objects, set through their own sub-flags, not one flag. */
const NESTED = new Set(['mtp']);

function addSection<T extends object>(y: Argv, section: string, defaults: T, docs: { [K in keyof T]: string }): Argv {
  for (const key of Object.keys(defaults) as (keyof T & string)[]) {
    if (NESTED.has(key)) continue;
    const def = defaults[key];
    y = y.option(`${section}.${key}`, {
      describe: `${docs[key]} [default: ${JSON.stringify(def)}]`,
      type: typeof def === 'number' ? 'number' : typeof def === 'boolean' ? 'boolean' : 'string',
      group: `${section} config:`,
    });
  }
  return y;
}

/** Adds --preset and every config field as a flag. */
export function withConfigOptions(y: Argv): Argv {
  y = y.option('preset', { describe: 'starting point before overrides', choices: PRESET_NAMES as unknown as string[], type: 'string' });
  y = addSection(y, 'model', MODEL_DEFAULTS, MODEL_DOCS);
  return addSection(y, 'train', TRAIN_DEFAULTS, TRAIN_DOCS);
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
  return resolveConfig(argv.preset as PresetName | undefined, {
    model: model as Partial<ModelConfig>,
    train: train as Partial<TrainConfig>,
  });
}
