/**
 * Synthetic tasks with known answers, for lessons and tests where the truth is known: each batch marks the positions
 * whose next token follows from the context by the task's rule (`scoreMask`), so accuracy there measures whether the
 * model learned the capability (copying, induction, arithmetic) rather than guessing random tokens.
 *
 * Batches have the same layout as corpus batches (batch.ts): each row is a stream of T + k tokens; inputs are its first
 * T, head i (0-based) targets the stream shifted by i + 1. `scoreMask` concerns the next token (head 0) only.
 *
 * Browser-safe: plain typed arrays, randomness only from the given Rng.
 */
import type { Rng } from '../util/rng';
import { Batch, batchFromWindows } from './batch';

export interface SyntheticBatch extends Batch {
  /** [B, T]: 1 where the next token x[t+1] is determined by x[0..t] under the task's rule, else 0. */
  scoreMask: Uint8Array;
}

export interface SyntheticTask {
  /** Registry name of the task ('copy', 'induction', 'modular'). */
  readonly name: SyntheticTaskName;
  /** The options the task was built with, defaults filled in (for logs and result files). */
  readonly options: Readonly<Record<string, number | string>>;
  readonly vocabSize: number;
  /** B rows of T + k tokens (k defaults to 1). Deterministic given the rng state. */
  sample(rng: Rng, B: number, T: number, k?: number): SyntheticBatch;
  /** Token ids as readable text, e.g. "3 1 4 | 3 1 4". */
  format(ids: ArrayLike<number>): string;
}

/** One row being built: tokens and, per position, whether the task's rule fixes that token given everything before. */
interface Row {
  tokens: Int32Array; // [L]
  determined: Uint8Array; // [L]
}

function checkInt(value: number, name: string, min: number): void {
  if (!Number.isInteger(value) || value < min) throw new Error(`${name} must be an integer >= ${min}, got ${value}`);
}

function checkKeys(task: string, opts: object, allowed: readonly string[]): void {
  for (const key of Object.keys(opts)) {
    if (!allowed.includes(key)) {
      throw new Error(`${task} task: unknown option ${JSON.stringify(key)}; allowed: ${allowed.join(', ')}`);
    }
  }
}

/** Sample B rows of length T + k with `makeRow` and lay them out as a batch with its score mask. */
function assemble(makeRow: (L: number) => Row, B: number, T: number, k: number): SyntheticBatch {
  checkInt(B, 'B (batch size)', 1);
  checkInt(T, 'T (sequence length)', 1);
  checkInt(k, 'k (number of predicted tokens)', 1);
  const L = T + k;
  const stream = new Int32Array(B * L); // [B, T + k]
  const starts = new Int32Array(B); // [B]
  const scoreMask = new Uint8Array(B * T); // [B, T]
  for (let b = 0; b < B; b++) {
    const row = makeRow(L);
    stream.set(row.tokens, b * L);
    starts[b] = b * L;
    for (let t = 0; t < T; t++) scoreMask[b * T + t] = row.determined[t + 1];
  }
  return { ...batchFromWindows(stream, starts, T, k), scoreMask };
}

/**
 * A row cut from a stream of fixed-length episodes, starting at a random phase inside the first episode so absolute
 * position tells the model nothing. `write(tokens, need, e)` fills one episode at offset e: tokens, and for each
 * position the earliest stream position its value depends on (-1: not determined). A token counts as determined only
 * if everything it depends on lies inside the row.
 */
type WriteEpisode = (tokens: Int32Array, need: Int32Array, e: number) => void;

function episodeRow(rng: Rng, L: number, episodeLen: number, write: WriteEpisode): Row {
  const phase = rng.int(episodeLen);
  const total = Math.ceil((phase + L) / episodeLen) * episodeLen;
  const tokens = new Int32Array(total);
  const need = new Int32Array(total).fill(-1);
  for (let e = 0; e < total; e += episodeLen) write(tokens, need, e);
  const determined = new Uint8Array(L);
  for (let p = 0; p < L; p++) determined[p] = need[phase + p] >= phase ? 1 : 0;
  return { tokens: tokens.slice(phase, phase + L), determined };
}

export interface CopyOptions {
  /** Number of content symbols, ids 0 .. vocab-1 (default 16). */
  vocab?: number;
  /** Length of the span to copy (default 8). */
  span?: number;
}

/**
 * Copy: `a1 … aS SEP a1 … aS`, repeated. The ai are uniform over the `vocab` content symbols (ids 0 .. vocab-1),
 * SEP = vocab, S = span; vocabSize = vocab + 1. Episodes of 2S + 1 tokens follow each other; a row starts at a random
 * point inside the first one. Scored: every token of a repeat whose source lies inside the row (it equals the token
 * S + 1 places back). SEP and the first halves are not scored: SEP is fixed by counting, the first halves are random.
 */
export function copyTask(opts: CopyOptions = {}): SyntheticTask {
  checkKeys('copy', opts, ['vocab', 'span']);
  const { vocab = 16, span = 8 } = opts;
  checkInt(vocab, 'copy task: vocab', 2);
  checkInt(span, 'copy task: span', 1);
  const SEP = vocab;
  const write = (rng: Rng): WriteEpisode => (tokens, need, e) => {
    for (let j = 0; j < span; j++) {
      const a = rng.int(vocab);
      tokens[e + j] = a;
      tokens[e + span + 1 + j] = a;
      need[e + span + 1 + j] = e + j;
    }
    tokens[e + span] = SEP;
  };
  return {
    name: 'copy',
    options: { vocab, span },
    vocabSize: vocab + 1,
    sample: (rng, B, T, k = 1) => assemble((L) => episodeRow(rng, L, 2 * span + 1, write(rng)), B, T, k),
    format: (ids) => Array.from(ids, (id) => (id === SEP ? '|' : String(id))).join(' '),
  };
}

export interface InductionOptions {
  /** Number of filler / name-body symbols, ids 0 .. vocab-1 (default 32). */
  vocab?: number;
  /** Tokens per name: one key token, then nameLength - 1 body tokens (default 3, at least 2). */
  nameLength?: number;
  /** Distinct names per row (default 2). */
  names?: number;
  /** Occurrences of each name per row (default 2, at least 2). */
  occurrences?: number;
  /** Number of key symbols, ids vocab .. vocab+keys-1 (default 16, at least `names`). */
  keys?: number;
}

/**
 * Induction (the classic induction-head setup, with multi-token names): each row is uniform random filler over ids
 * 0 .. vocab-1 with `names` random names placed in it, each `occurrences` times, at random non-overlapping places.
 * A name is a key token (ids vocab .. vocab+keys-1, distinct per row, never used as filler) followed by nameLength - 1
 * body tokens (ids 0 .. vocab-1). vocabSize = vocab + keys.
 * Since a key appears only where its name starts, a second (or later) occurrence of a key determines the rest of the
 * name: scored are the body tokens of every occurrence after the first. Keys and filler are random and not scored.
 * Needs names · occurrences · nameLength <= T + k.
 */
export function inductionTask(opts: InductionOptions = {}): SyntheticTask {
  checkKeys('induction', opts, ['vocab', 'nameLength', 'names', 'occurrences', 'keys']);
  const { vocab = 32, nameLength = 3, names = 2, occurrences = 2, keys = 16 } = opts;
  checkInt(vocab, 'induction task: vocab', 1);
  checkInt(nameLength, 'induction task: nameLength', 2);
  checkInt(names, 'induction task: names', 1);
  checkInt(occurrences, 'induction task: occurrences', 2);
  checkInt(keys, 'induction task: keys', names);
  const nameTokens = names * occurrences * nameLength;

  const makeRow = (rng: Rng, L: number): Row => {
    if (nameTokens > L) {
      throw new Error(
        `induction task: ${names} names × ${occurrences} occurrences × ${nameLength} tokens = ${nameTokens} tokens ` +
          `do not fit in a row of T + k = ${L}; use a larger T or fewer/shorter names`,
      );
    }
    const keyPool = Array.from({ length: keys }, (_, i) => vocab + i);
    shuffle(rng, keyPool);
    const bodies = Array.from({ length: names }, () => Array.from({ length: nameLength - 1 }, () => rng.int(vocab)));
    const order: number[] = [];
    for (let n = 0; n < names; n++) for (let o = 0; o < occurrences; o++) order.push(n);
    shuffle(rng, order);
    const filler = L - nameTokens;
    const cuts = Array.from({ length: order.length }, () => rng.int(filler + 1)).sort((a, b) => a - b);

    const tokens = new Int32Array(L);
    const determined = new Uint8Array(L);
    const seen = new Uint8Array(names);
    let p = 0;
    let placedFiller = 0;
    const fillTo = (count: number): void => {
      for (; placedFiller < count; placedFiller++) tokens[p++] = rng.int(vocab);
    };
    order.forEach((n, slot) => {
      fillTo(cuts[slot]);
      tokens[p++] = keyPool[n];
      for (const body of bodies[n]) {
        determined[p] = seen[n];
        tokens[p++] = body;
      }
      seen[n] = 1;
    });
    fillTo(filler);
    return { tokens, determined };
  };

  return {
    name: 'induction',
    options: { vocab, nameLength, names, occurrences, keys },
    vocabSize: vocab + keys,
    sample: (rng, B, T, k = 1) => assemble((L) => makeRow(rng, L), B, T, k),
    format: (ids) => Array.from(ids, (id) => (id >= vocab ? `K${id - vocab}` : String(id))).join(' '),
  };
}

/** In-place Fisher–Yates shuffle driven by rng. */
function shuffle<T>(rng: Rng, xs: T[]): void {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = rng.int(i + 1);
    const tmp = xs[i];
    xs[i] = xs[j];
    xs[j] = tmp;
  }
}

export const MODULAR_OPS = ['+', '-', '*'] as const;
export type ModularOp = (typeof MODULAR_OPS)[number];

export interface ModularOptions {
  /** The modulus m; numbers are ids 0 .. m-1 (default 23). */
  modulus?: number;
  /** The operation (default '+'). */
  op?: ModularOp;
}

/** (a op b) mod m, always in [0, m). */
export function modularResult(a: number, b: number, op: ModularOp, m: number): number {
  const r = op === '+' ? a + b : op === '-' ? a - b : a * b;
  return ((r % m) + m) % m;
}

/**
 * Modular arithmetic: `a OP b = c`, repeated, with a, b uniform in [0, m) and c = (a op b) mod m. Numbers are single
 * tokens (ids 0 .. m-1), OP = m, '=' = m + 1; vocabSize = m + 2. Episodes of 5 tokens follow each other; a row starts at
 * a random point inside the first one. Scored: each c whose a and b lie inside the row. OP and '=' are fixed by
 * position and a, b are random, so they are not scored.
 */
export function modularArithmeticTask(opts: ModularOptions = {}): SyntheticTask {
  checkKeys('modular', opts, ['modulus', 'op']);
  const { modulus = 23, op = '+' } = opts;
  checkInt(modulus, 'modular task: modulus', 2);
  if (!MODULAR_OPS.includes(op)) {
    throw new Error(`modular task: unknown op ${JSON.stringify(op)}; allowed: ${MODULAR_OPS.join(' ')}`);
  }
  const OP = modulus;
  const EQ = modulus + 1;
  const write = (rng: Rng): WriteEpisode => (tokens, need, e) => {
    const a = rng.int(modulus);
    const b = rng.int(modulus);
    tokens.set([a, OP, b, EQ, modularResult(a, b, op, modulus)], e);
    need[e + 4] = e;
  };
  return {
    name: 'modular',
    options: { modulus, op },
    vocabSize: modulus + 2,
    sample: (rng, B, T, k = 1) => assemble((L) => episodeRow(rng, L, 5, write(rng)), B, T, k),
    format: (ids) => Array.from(ids, (id) => (id === OP ? op : id === EQ ? '=' : String(id))).join(' '),
  };
}

export const SYNTHETIC_TASK_NAMES = ['copy', 'induction', 'modular'] as const;
export type SyntheticTaskName = (typeof SYNTHETIC_TASK_NAMES)[number];

/** Task factories by name; every option has a default, so `SYNTHETIC_TASKS.copy()` works. */
export const SYNTHETIC_TASKS: {
  copy: (opts?: CopyOptions) => SyntheticTask;
  induction: (opts?: InductionOptions) => SyntheticTask;
  modular: (opts?: ModularOptions) => SyntheticTask;
} = {
  copy: copyTask,
  induction: inductionTask,
  modular: modularArithmeticTask,
};

/** Build a task by registry name (e.g. from a CLI flag); unknown names and options throw, listing the allowed ones. */
export function makeSyntheticTask(name: string, opts: Record<string, number | string> = {}): SyntheticTask {
  switch (name) {
    case 'copy':
      return copyTask(opts as CopyOptions);
    case 'induction':
      return inductionTask(opts as InductionOptions);
    case 'modular':
      return modularArithmeticTask(opts as ModularOptions);
    default:
      throw new Error(`unknown synthetic task ${JSON.stringify(name)}; allowed: ${SYNTHETIC_TASK_NAMES.join(', ')}`);
  }
}
