/**
 * A config as `mtp train` flags: every field of the resolved config spelled out (`--model.x=…`, `--mtp.x=…`,
 * `--train.x=…`, no preset), so the command trains exactly this config whatever the defaults and presets become.
 * configFromArgs (src/cli/options.ts) of these flags gives the config back (test/jobs.test.ts checks it).
 */
import type { Config } from '../src/config';

/** One flag value as the CLI parses it back: lists as comma lists ('' = empty), numbers in their shortest exact form. */
function flagValue(flag: string, v: unknown): string {
  if (Array.isArray(v)) return v.map((x) => flagValue(flag, x)).join(',');
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new Error(`${flag} is ${v}; a config flag must be a finite number`);
    return String(v);
  }
  if (typeof v === 'boolean' || typeof v === 'string') return String(v);
  throw new Error(`${flag} has a value of type ${typeof v}, which no flag can carry`);
}

/** Every field of `config` as `--section.field=value` flags, in the config's own order (mtp.kind first). */
export function configArgs(config: Config): string[] {
  const out: string[] = [];
  for (const [key, v] of Object.entries(config.model)) if (key !== 'mtp') out.push(`--model.${key}=${flagValue(`model.${key}`, v)}`);
  const { kind, ...fields } = config.model.mtp as unknown as Record<string, unknown>;
  out.push(`--mtp.kind=${flagValue('mtp.kind', kind)}`);
  for (const [key, v] of Object.entries(fields)) out.push(`--mtp.${key}=${flagValue(`mtp.${key}`, v)}`);
  for (const [key, v] of Object.entries(config.train)) out.push(`--train.${key}=${flagValue(`train.${key}`, v)}`);
  return out;
}

/** An argument quoted for a POSIX shell when it needs it. */
export function shellQuote(arg: string): string {
  return /^[A-Za-z0-9_./:=,+@%-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`;
}
