/**
 * Prompt-lookup drafting (Saxena 2023, "Prompt Lookup Decoding"; Hugging Face's
 * `prompt_lookup_num_tokens`): no network at all. Find the most recent earlier occurrence of the
 * sequence's last n tokens (n from `maxNgram` down to 1) and propose the tokens that followed it. Code
 * and edits repeat themselves, so the guess is often right; when nothing matches the step is a plain
 * one. With `branches` > 1 the continuations of several occurrences (most recent first) share their
 * common prefixes in a tree. Works with any target model: the proof that a drafter is one file.
 */
import type { CommitInfo, DraftContext, Drafter } from './drafter';
import type { DraftTree } from './draft_tree';

export interface LookupOptions {
  /** Tokens per step: 1 + the longest continuation proposed (default 5). */
  k?: number;
  /** Longest suffix matched (default 3, as in Saxena 2023); shorter ones are tried when it does not occur. */
  maxNgram?: number;
  /** Occurrences whose continuations form the tree (default 1: a chain). */
  branches?: number;
}

export const LOOKUP_DEFAULTS = { k: 5, maxNgram: 3, branches: 1 } as const;

export class PromptLookupDrafter implements Drafter {
  readonly name: string;
  readonly maxDepth: number;
  readonly draftForwards = 0;
  private readonly maxNgram: number;
  private readonly branches: number;

  constructor(opts: LookupOptions = {}) {
    const k = opts.k ?? LOOKUP_DEFAULTS.k;
    const maxNgram = opts.maxNgram ?? LOOKUP_DEFAULTS.maxNgram;
    const branches = opts.branches ?? LOOKUP_DEFAULTS.branches;
    for (const [name, v] of [['k', k], ['maxNgram', maxNgram], ['branches', branches]] as const) {
      if (!Number.isInteger(v) || v < 1) throw new Error(`prompt lookup: ${name} must be an integer ≥ 1, got ${v}`);
    }
    this.maxDepth = k - 1;
    this.maxNgram = maxNgram;
    this.branches = branches;
    this.name = `prompt lookup k=${k}${branches > 1 ? ` ×${branches}` : ''}`;
  }

  propose(ctx: DraftContext): DraftTree {
    const tree: DraftTree = { tokens: [ctx.seq[ctx.seq.length - 1]], parents: [-1] };
    for (const cont of lookupContinuations(ctx.seq, Math.min(this.maxDepth, ctx.maxDepth), this.maxNgram, this.branches)) {
      let node = 0;
      for (const t of cont) {
        let child = tree.parents.findIndex((p, i) => p === node && tree.tokens[i] === t);
        if (child < 0) {
          child = tree.tokens.length;
          tree.tokens.push(t);
          tree.parents.push(node);
        }
        node = child;
      }
    }
    return tree;
  }

  commit(_info: CommitInfo): void {}

  dispose(): void {}
}

/**
 * Up to `branches` distinct continuations (each ≤ depth tokens) of the most recent earlier occurrences
 * of seq's last n tokens, for the largest n ≤ maxNgram that occurs; [] when none does.
 */
export function lookupContinuations(seq: readonly number[], depth: number, maxNgram: number, branches: number): number[][] {
  const L = seq.length;
  if (depth < 1) return [];
  for (let n = Math.min(maxNgram, L - 1); n >= 1; n--) {
    const found: number[][] = [];
    const seen = new Set<string>();
    for (let i = L - n - 1; i >= 0 && found.length < branches; i--) {
      let match = true;
      for (let j = 0; j < n && match; j++) match = seq[i + j] === seq[L - n + j];
      if (!match) continue;
      const cont = seq.slice(i + n, Math.min(L, i + n + depth));
      const key = cont.join(',');
      if (cont.length > 0 && !seen.has(key)) {
        seen.add(key);
        found.push(cont);
      }
    }
    if (found.length > 0) return found;
  }
  return [];
}
