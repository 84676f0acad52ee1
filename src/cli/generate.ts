/**
 * `mtp generate`: continue a prompt with any decoder of the engine, and with --compare, greedy or
 * sampled AR on the same prompt and backend right after, with the speedup and whether the outputs match.
 *
 *   npm run mtp -- generate --ckpt=runs/parallel/model.ckpt --decoder=blockwise --k=4 --compare
 *   npm run mtp -- generate --ckpt=runs/medusa/model.ckpt --decoder=medusa --tree=sparse63 --compare
 *   npm run mtp -- generate --ckpt=runs/medusa/model.ckpt --decoder=medusa --tree=optimised --nodes=25 --compare
 *   npm run mtp -- generate --ckpt=zoo:code-medusa1-k5 --decoder=medusa --tree=dynamic --nodes=12 --compare
 *   npm run mtp -- generate --ckpt=runs/tiny/model.ckpt --decoder=lookup --compare
 */
import type { Argv } from 'yargs';
import { MTP_DECODER } from '../config';
import { ACCEPTANCE_NAMES, acceptanceRule, AcceptanceName } from '../decode/acceptance';
import { generate } from '../decode/ar';
import type { Drafter } from '../decode/drafter';
import { decode, EngineResult } from '../decode/engine';
import { PromptLookupDrafter } from '../decode/lookup';
import { denseTree, sparseTree, TreeChoices } from '../decode/tree';
import { optimisedTree } from '../eval/draft_accuracy';
import type { MtpModel } from '../model/mtp_model';
import type { Tokenizer } from '../data/tokenizer';
import { fromFlag } from './options';
import { progressBar } from './progress';

export const DECODER_NAMES = ['ar', 'blockwise', 'sequential', 'medusa', 'feature', 'lookup'] as const;
export const TREE_NAMES = ['chain', 'dense', 'sparse63', 'optimised', 'dynamic'] as const;

/** The flags `generate` adds to the checkpoint and sampling ones. */
export function decoderOptions(y: Argv): Argv {
  return y
    .option('decoder', { type: 'string', choices: DECODER_NAMES as unknown as string[], default: 'ar', describe: 'ar = plain decoding; blockwise / sequential / medusa / feature = the checkpoint’s own heads, modules or drafter drafting; lookup = prompt lookup (any checkpoint)' })
    .option('acceptance', { type: 'string', choices: ACCEPTANCE_NAMES as unknown as string[], default: 'greedy', describe: 'greedy (lossless), typical (Medusa), sampling (speculative sampling, lossless at T > 0), unverified (lossy)' })
    .option('tree', { type: 'string', choices: TREE_NAMES as unknown as string[], default: 'chain', describe: 'draft shape: chain, dense (top-3 then top-2 per depth), sparse63 (63 nodes, Medusa’s shape), optimised (built from the drafter’s rank accuracies measured on the model’s own greedy text), dynamic (EAGLE-2: grown by the drafter’s confidence, --nodes kept; every drafting decoder)' })
    .option('nodes', { type: 'number', default: 25, describe: '--tree=optimised or dynamic: draft nodes (the root not counted)' })
    .option('k', { type: 'number', describe: 'tokens per step = 1 + draft depth [default: all the drafter offers; lookup 5]' })
    .option('ngram', { type: 'number', default: 3, describe: 'lookup: longest suffix matched' })
    .option('compare', { type: 'boolean', default: false, describe: 'also run plain AR on the same prompt: speedup and identical outputs' });
}

function treeOf(name: string, depth: number, optimised?: TreeChoices): TreeChoices | undefined {
  if (name === 'chain' || depth === 0) return undefined;
  if (name === 'optimised') {
    if (!optimised) throw new Error('--tree=optimised needs measured rank accuracies (mtp generate measures them on the validation text)');
    return optimised;
  }
  return name === 'dense' ? denseTree(depth) : sparseTree(depth);
}

/** The drafter a --decoder names, checked against the checkpoint's variant (`optimised`: the tree for --tree=optimised). */
export function drafterFor(model: MtpModel, argv: Record<string, unknown>, optimised?: TreeChoices): Drafter | null {
  const decoder = argv.decoder as (typeof DECODER_NAMES)[number];
  const k = argv.k as number | undefined;
  if (k !== undefined && !(Number.isInteger(k) && k >= 1)) throw new Error(`--k must be an integer ≥ 1, got ${k}`);
  if (decoder === 'ar') return null;
  if (decoder === 'lookup') return new PromptLookupDrafter({ k, maxNgram: argv.ngram as number });
  const own = MTP_DECODER[model.config.mtp.kind];
  if (own !== decoder) {
    throw new Error(`--decoder=${decoder} needs a checkpoint with its drafting heads or modules, but this one is mtp.kind '${model.config.mtp.kind}'` + (own ? `; its decoder is --decoder=${own}` : '; use --decoder=ar or --decoder=lookup'));
  }
  const maxK = model.draftK ?? model.k;
  const depth = (k ?? maxK) - 1;
  if (argv.tree === 'dynamic') {
    const nodes = argv.nodes as number;
    if (!(Number.isInteger(nodes) && nodes >= 1)) throw new Error(`--nodes must be an integer ≥ 1, got ${nodes}`);
    return model.drafter({ dynamic: { depth: Math.max(1, depth), expand: 4, branch: 4, nodes } });
  }
  return model.drafter({ k, tree: treeOf(argv.tree as string, model.draftK ? depth : Math.min(depth, maxK - 1), optimised) });
}

/** Generations of more than PROGRESS_FROM tokens show a progress bar (tokens, tokens/s, eta). */
const PROGRESS_FROM = 1000;

async function withProgress<T>(label: string, total: number, run: (onProgress?: (n: number) => void) => Promise<T>): Promise<T> {
  if (total < PROGRESS_FROM) return run();
  const bar = progressBar(label, '{speed} tokens/s');
  const t0 = performance.now();
  bar.start(total, 0, { speed: '-' });
  try {
    return await run((n) => bar.update(n, { speed: Math.round((n * 1000) / (performance.now() - t0)) }));
  } finally {
    bar.stop();
  }
}

function fmt(x: number, digits = 2): string {
  return Number.isFinite(x) ? x.toFixed(digits) : '-';
}

function describe(r: EngineResult): string {
  const s = r.stats;
  const alpha = s.alpha.length ? ` | α ${s.alpha.map((a) => fmt(a)).join(' / ')}` : '';
  return `${s.method}: ${s.newTokens} tokens, ${s.forwards} forwards, τ ${fmt(s.tau)}${alpha} | ${fmt(s.tokensPerSec, 1)} tokens/s`;
}

/**
 * Runs the chosen decoder (and AR with --compare) and prints the text and the statistics. `validation`: prompts from
 * the checkpoint's validation text, for --tree=optimised.
 */
export async function runGenerate(model: MtpModel, tokenizer: Tokenizer, prompt: string, argv: Record<string, unknown>, validation: () => number[][]): Promise<void> {
  const ids = Array.from(fromFlag('prompt', () => tokenizer.encode(prompt)));
  const sampling = { temperature: argv.temperature as number, topK: argv.topK as number, topP: argv.topP as number };
  const acceptance = acceptanceRule(argv.acceptance as AcceptanceName, sampling);
  let optimised: TreeChoices | undefined;
  if (argv.tree === 'optimised' && argv.decoder !== 'ar' && argv.decoder !== 'lookup') {
    drafterFor(model, argv, [[0]])?.dispose(); // the checks first: decoder, variant and k
    const nodes = argv.nodes as number;
    if (!(Number.isInteger(nodes) && nodes >= 1)) throw new Error(`--nodes must be an integer ≥ 1, got ${nodes}`);
    const depth = ((argv.k as number | undefined) ?? model.draftK ?? model.k) - 1;
    const o = await optimisedTree(model, validation(), nodes, depth);
    optimised = o.tree;
    console.log(`optimised tree: ${o.tree.length + 1} nodes from rank accuracies per depth (top-4) ${o.accuracies.map((row) => row.map((a) => fmt(a)).join('/')).join(' | ')}`);
  }
  const drafter = drafterFor(model, argv, optimised);
  const maxNewTokens = argv.tokens as number;
  const seed = argv.seed as number;
  const out = await withProgress('decode', maxNewTokens, (onProgress) => decode(model, drafter, ids, { maxNewTokens, acceptance, seed, onProgress }));
  console.log(`--- ${describe(out)} ---`);
  console.log(prompt + tokenizer.decode(out.tokens));
  console.log('---');
  if (!argv.compare) return;
  const ar = await withProgress('AR', maxNewTokens, (onProgress) => generate(model, ids, { maxNewTokens, ...sampling, seed, onProgress }));
  console.log(`AR (same prompt, backend and sampling): ${describe(ar)}`);
  const identical = JSON.stringify(ar.tokens) === JSON.stringify(out.tokens);
  const verdict = acceptance.lossless && sampling.temperature === 0
    ? (identical ? 'identical to AR (lossless)' : 'DIFFERENT from AR — a lossless decoder must match it; please report this')
    : acceptance.lossless
      ? `${identical ? 'identical' : 'differs'} (sampling: the same distribution as AR, not the same tokens)`
      : `${identical ? 'identical' : 'differs'} (lossy rule: not checked against the model)`;
  console.log(`speedup ×${fmt(out.stats.tokensPerSec / ar.stats.tokensPerSec)} | ${verdict}`);
}
