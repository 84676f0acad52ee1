/**
 * How often a drafter's rank-r guess at depth d is the token greedy decoding will write: the input of
 * `optimizeTree` (decode/tree.ts; Cai et al. 2024 §2.3.3), measured on the model's own greedy text,
 * the text a lossless decoder must match (validation text under-states it: the model is more
 * predictable than the corpus).
 *
 * The drafter proposes a "comb": the rank-0 chain with `ranks` alternatives at every depth, so each
 * step shows its top candidates for every depth along its own best path. accuracies[d − 1][r] =
 * P(the rank-r candidate at depth d is the greedy token | the rank-0 chain matched up to depth d − 1),
 * the per-depth acceptance a tree built from these ranks would see. Any drafter of a variant works.
 */
import { generate } from '../decode/ar';
import type { CommitInfo, DraftContext, Drafter } from '../decode/drafter';
import type { DraftTree } from '../decode/draft_tree';
import { treeChildren } from '../decode/draft_tree';
import { decode } from '../decode/engine';
import { optimizeTree, TreeChoices } from '../decode/tree';
import type { MtpModel } from '../model/mtp_model';

export interface DraftAccuracyOptions {
  /** Tokens decoded per prompt. */
  tokens: number;
  /** Candidates per depth (default 4). */
  ranks?: number;
  /** Depths measured (default: all the model drafts). */
  depth?: number;
}

/** The comb shape: [r] for every rank, then [0, r], [0, 0, r], … down to `depth`. */
export function combTree(depth: number, ranks: number): number[][] {
  return Array.from({ length: depth }, (_, d) => Array.from({ length: ranks }, (_, r) => [...new Array<number>(d).fill(0), r])).flat();
}

/** [depth][ranks] accuracies of the model's own drafter on its greedy continuations of `prompts` (see the file comment). */
export async function draftRankAccuracies(model: MtpModel, prompts: number[][], opts: DraftAccuracyOptions): Promise<number[][]> {
  const depth = opts.depth ?? model.k - 1;
  const ranks = opts.ranks ?? 4;
  if (!Number.isInteger(depth) || depth < 1 || depth > model.k - 1) throw new Error(`draftRankAccuracies: depth must be an integer in [1, ${model.k - 1}], got ${depth}`);
  if (!Number.isInteger(ranks) || ranks < 1 || ranks > model.config.vocabSize) throw new Error(`draftRankAccuracies: ranks must be an integer in [1, ${model.config.vocabSize}], got ${ranks}`);
  const hits = Array.from({ length: depth }, () => new Array<number>(ranks).fill(0));
  const attempts = new Array<number>(depth).fill(0);
  for (const prompt of prompts) {
    const full = [...prompt, ...(await generate(model, prompt, { maxNewTokens: opts.tokens })).tokens];
    const seen: { L: number; tree: DraftTree }[] = [];
    const inner = model.drafter({ tree: combTree(depth, ranks) });
    const recording: Drafter = {
      name: inner.name,
      maxDepth: inner.maxDepth,
      get draftForwards() {
        return inner.draftForwards;
      },
      propose: async (ctx: DraftContext) => {
        const tree = await inner.propose(ctx);
        seen.push({ L: ctx.seq.length, tree });
        return tree;
      },
      commit: (info: CommitInfo) => inner.commit(info),
      dispose: () => inner.dispose(),
    };
    await decode(model, recording, prompt, { maxNewTokens: opts.tokens });
    for (const { L, tree } of seen) {
      const children = treeChildren(tree);
      let node = 0;
      for (let d = 1; d <= depth && L - 1 + d < full.length && children[node].length > 0; d++) {
        const truth = full[L - 1 + d];
        const candidates = children[node].map((c) => tree.tokens[c]); // ranks 0.. in order
        attempts[d - 1] += 1;
        const r = candidates.indexOf(truth);
        if (r >= 0) hits[d - 1][r] += 1;
        if (r !== 0) break;
        node = children[node][0];
      }
    }
  }
  return hits.map((row, d) => row.map((h) => (attempts[d] > 0 ? h / attempts[d] : 0)));
}

/**
 * The optimised tree of `nodes` nodes for the model's own drafter (Cai et al. 2024 §2.3.3): rank accuracies of its
 * top-4 candidates per depth, measured on the model's greedy continuations of `prompts`, then optimizeTree.
 */
export async function optimisedTree(model: MtpModel, prompts: number[][], nodes: number, depth: number): Promise<{ tree: TreeChoices; accuracies: number[][] }> {
  const accuracies = await draftRankAccuracies(model, prompts, { tokens: 64, ranks: 4, depth });
  const capacity = accuracies.reduce((acc, _, d) => acc + 4 ** (d + 1), 0);
  return { tree: optimizeTree(accuracies, Math.min(nodes, capacity)), accuracies };
}
