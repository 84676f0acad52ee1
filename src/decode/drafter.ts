/**
 * What the decoding engine (decode/engine.ts) talks to: the target it verifies with, and drafters.
 *
 * A drafter is a plug-in, as in the serving engines (vLLM's proposers, Hugging Face's candidate
 * generators): each step it proposes a draft tree (decode/draft_tree.ts); after the verification
 * forward it hears what was accepted, with the target's features at the committed rows, and updates
 * whatever state it keeps (head caches, module caches, the next proposal). It owns that state and
 * nothing else: the committed sequence, the target's KV cache, the context window and the statistics
 * belong to the engine.
 */
import type * as tf from '@tensorflow/tfjs';
import type { ModelConfig } from '../config';
import type { KVCache } from '../model/kv_cache';
import type { Rng } from '../util/rng';
import type { DraftTree } from './draft_tree';
import type { SamplingConfig } from './sampling';

export interface VerifyOptions {
  /** Position ids of the new tokens (default: contiguous after the cache). */
  positions?: number[];
  /** Additive attention mask [T, S] (default: causal). */
  mask?: tf.Tensor2D;
}

/** The model whose output the engine reproduces: its next-token head decides every token. */
export interface VerifyTarget {
  readonly config: ModelConfig;
  /** An empty KV cache for `verifyForward`. */
  newCache(): KVCache;
  /**
   * Forward over new tokens (batch 1), appending to `cache`: next-token logits [T, V] and the features
   * [T, C] this model's drafter reads (which hidden state that is belongs to the variant). Call inside
   * tf.tidy.
   */
  verifyForward(tokens: number[], cache: KVCache, opts?: VerifyOptions): { logits: tf.Tensor2D; features: tf.Tensor2D };
}

/** What a drafter sees when it proposes. */
export interface DraftContext {
  /** Committed tokens, prompt included; the last one is the tree's root. */
  readonly seq: readonly number[];
  /** Deepest tree the engine will verify this step (window room and tokens left); deeper nodes are pruned. */
  readonly maxDepth: number;
  /** The run's sampling options (what the acceptance rule applies to the target). */
  readonly sampling: SamplingConfig;
  /** True when children should be drawn from the drafter's distribution q (speculative sampling at T > 0), else its top ranks. */
  readonly sample: boolean;
  /** The run's seeded stream (shared with the acceptance rule, so a run repeats exactly). */
  readonly rng: Rng;
}

/** What a drafter hears after each verification forward (the prefill included). */
export interface CommitInfo {
  /** The tree that was verified. */
  readonly tree: DraftTree;
  /** Accepted nodes, path[0] = 0 (the root). */
  readonly path: readonly number[];
  /** Token committed after the path: the next step's root. */
  readonly bonus: number;
  /** Committed tokens after the commit (the bonus last). */
  readonly seq: readonly number[];
  /**
   * Rows of `features` that now hold committed tokens, in sequence order: the committed tokens the
   * forward fed (the root last), then the accepted tree nodes. They are sequence positions
   * `firstPosition` … seq.length − 2 (the bonus is not fed yet).
   */
  readonly rows: readonly number[];
  readonly firstPosition: number;
  /** The target's features [T, C] at every fed row; valid during the call only (the engine disposes it). */
  readonly features: tf.Tensor2D;
  /** True when the context window slid before this forward: caches restart at `windowStart`. */
  readonly reset: boolean;
  /** First sequence position of the current context window. */
  readonly windowStart: number;
}

export interface Drafter {
  /** Name for statistics, e.g. 'parallel heads chain k=4'. */
  readonly name: string;
  /** Deepest tree this drafter proposes (tokens per step = maxDepth + 1 at most). */
  readonly maxDepth: number;
  /** Forwards of the drafter's own network(s) so far (drafting work, not counted in τ). */
  readonly draftForwards: number;
  propose(ctx: DraftContext): DraftTree | Promise<DraftTree>;
  commit(info: CommitInfo): void | Promise<void>;
  /** Releases the drafter's tensors. */
  dispose(): void;
}

/**
 * A dynamic draft tree (EAGLE-2, Li et al. 2024, §4): grown by the drafter's own confidence instead of a fixed shape.
 * Each depth expands the `expand` nodes of highest cumulative draft probability (the product of the probabilities
 * along their path), each into its `branch` most likely children (or draws from q under speculative sampling); after
 * `depth` levels the `nodes` candidates of highest cumulative probability (a node's ancestors always rank above it)
 * are verified. One builder serves every drafter: decode/dynamic_tree.ts.
 */
export interface DynamicTreeOptions {
  /** Levels grown (the deepest draft). */
  depth: number;
  /** Nodes expanded per level. */
  expand: number;
  /** Children drafted per expanded node. */
  branch: number;
  /** Draft nodes kept for verification (the root not counted). */
  nodes: number;
}

/** Options every variant's drafter takes. */
export interface DrafterOptions {
  /** Tokens per step: 1 + the draft depth (default: all the variant offers). */
  k?: number;
  /** Tree shape as paths of top-k ranks (decode/tree.ts); default: a chain k − 1 deep. */
  tree?: readonly (readonly number[])[];
  /** A dynamic tree instead of a fixed shape (every variant's drafter: heads, modules, the feature drafter); not with `tree`. */
  dynamic?: DynamicTreeOptions;
}
