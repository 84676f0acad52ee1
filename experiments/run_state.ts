/**
 * What a run folder holds for a config (Node only): nothing yet, a finished run of this config (reuse it), an
 * unfinished one (resume it), or a run of another config (train afresh or refuse). The job pool and the experiments'
 * trainOrLoad decide by this one function, so a model the pool trained is the model the experiments reuse.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Config } from '../src/config';
import { readCheckpoint } from '../src/train/checkpoint';
import { CHECKPOINT_FILE } from '../src/train/run';

export type RunState =
  | { state: 'empty' }
  | { state: 'finished'; step: number; valLoss?: number }
  | { state: 'partial'; step: number }
  | { state: 'other'; step: number; differences: string[] };

/** 'path: saved → wanted' for every leaf that differs between two JSON values (key order ignored). */
function diff(saved: unknown, wanted: unknown, at: string, out: string[]): void {
  const isObj = (v: unknown) => typeof v === 'object' && v !== null && !Array.isArray(v);
  if (isObj(saved) && isObj(wanted)) {
    const a = saved as Record<string, unknown>;
    const b = wanted as Record<string, unknown>;
    for (const key of new Set([...Object.keys(a), ...Object.keys(b)])) diff(a[key], b[key], at ? `${at}.${key}` : key, out);
    return;
  }
  if (JSON.stringify(saved) !== JSON.stringify(wanted)) out.push(`${at}: ${JSON.stringify(saved) ?? 'absent'} → ${JSON.stringify(wanted) ?? 'absent'}`);
}

/**
 * Fields in which a saved config differs from the wanted one ('model.nLayer: 2 → 3'); empty = the same config.
 * With the char tokenizer the vocabulary size is derived from the corpus, so the saved (resolved) one is taken.
 */
export function configDifferences(saved: Config, wanted: Config): string[] {
  const w = wanted.train.tokenizer === 'char' ? { ...wanted, model: { ...wanted.model, vocabSize: saved.model.vocabSize } } : wanted;
  const out: string[] = [];
  diff(saved, w, '', out);
  return out;
}

/** The state of `dir` for `config`, from its checkpoint (verified; a damaged one throws, naming the part and the previous checkpoint). */
export function runState(dir: string, config: Config): RunState {
  const file = path.join(dir, CHECKPOINT_FILE);
  if (!fs.existsSync(file)) return { state: 'empty' };
  const { header } = readCheckpoint(file);
  const differences = configDifferences(header.config, config);
  if (differences.length) return { state: 'other', step: header.step, differences };
  if (header.step >= config.train.steps) return { state: 'finished', step: header.step, valLoss: header.valLoss };
  return { state: 'partial', step: header.step };
}
