/**
 * Decoding speed: greedy AR vs the model's lossless self-speculative decoder, on the same model,
 * prompts and backend, in the same run (src/eval/speed.ts: interleaved runs, medians, outputs checked
 * identical to AR's — the bench stops if one differs). Prompts are windows of the corpus's validation
 * split. Reports τ, αᵢ, tokens/s and the speedup.
 *
 * Each model's own drafter runs with every tree shape asked for (chain = blockwise drafting; dense and
 * sparse63 = trees, decode/tree.ts; optimised = Medusa's tree search; dynamic = EAGLE-2, decode/dynamic_tree.ts),
 * and prompt lookup (no weights) beside it.
 *
 *   npm run bench:decode -- --ckpt=runs/tiny-par4/model.ckpt [--k=1,2,3,4] [--trees=chain,dense] [--prompts=8] [--tokens=128] [--runs=5]
 *   npm run bench:decode -- --ckpt=zoo:code-medusa1-k5,zoo:code-feature --k=4,6 --prompts=16 --promptLength=64
 *   npm run bench:decode -- --ckpt=zoo:code-medusa1-k5 --k=6 --trees=chain,dense,optimised,dynamic --nodes=12,24
 */
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { BACKEND_NAMES, BackendName, initBackend } from '../src/backend/index';
import { loadCorpus, splitTrainVal } from '../src/data/corpus';
import { valPrompts } from '../src/data/batch';
import type { DrafterOptions } from '../src/decode/drafter';
import { decode } from '../src/decode/engine';
import { PromptLookupDrafter } from '../src/decode/lookup';
import { denseTree, sparseTree, TreeChoices } from '../src/decode/tree';
import { optimisedTree } from '../src/eval/draft_accuracy';
import type { MtpModel } from '../src/model/mtp_model';
import { compareWithAR, SpeedRow } from '../src/eval/speed';
import { loadModel } from '../src/train/run';
import { loadZooModel } from '../src/zoo/load';
import { machine, markdownTable, updateReadme, writeResults } from './common';

async function main() {
  const argv = yargs(hideBin(process.argv))
    .option('ckpt', { type: 'string', demandOption: true, describe: 'checkpoint of an MTP model, or zoo:NAME (comma list for several)' })
    .option('k', { type: 'string', describe: 'draft lengths to test (comma list; default: the model’s k)' })
    .option('trees', { type: 'string', default: 'chain', describe: 'draft shapes for the model’s own drafter (comma list of chain, dense, sparse63, optimised, dynamic: EAGLE-2, grown by the drafter’s confidence, every drafter)' })
    .option('nodes', { type: 'string', default: '25', describe: 'nodes of the optimised and dynamic trees, the root not counted (comma list: one tree per value)' })
    .option('expand', { type: 'number', default: 4, describe: 'dynamic trees: nodes expanded per depth' })
    .option('branch', { type: 'number', default: 4, describe: 'dynamic trees: children per expanded node' })
    .option('lookup', { type: 'boolean', default: true, describe: 'also measure prompt lookup (k = 5) on each model' })
    .option('prompts', { type: 'number', default: 8, describe: 'prompts from the validation split' })
    .option('promptLength', { type: 'number', default: 32, describe: 'tokens per prompt' })
    .option('tokens', { type: 'number', default: 128, describe: 'tokens generated per prompt' })
    .option('runs', { type: 'number', default: 5, describe: 'timed repetitions (medians)' })
    .option('backend', { type: 'string', default: 'wasm', choices: BACKEND_NAMES as unknown as string[] })
    .option('name', { type: 'string', default: 'decode', describe: 'results file and README block name' })
    .option('readme', { type: 'boolean', default: false, describe: 'write the table into README.md' })
    .strict()
    .parseSync();
  const nodes = argv.nodes.split(',').map(Number);
  for (const n of nodes) if (!(Number.isInteger(n) && n >= 1)) throw new Error(`--nodes: each value must be an integer ≥ 1, got ${n}`);
  const backend = await initBackend(argv.backend as BackendName);
  const rows: (SpeedRow & { variant: string })[] = [];
  for (const ckpt of argv.ckpt.split(',')) {
    const { model, tokenizer, config } = ckpt.startsWith('zoo:') ? loadZooModel(ckpt.slice(4)) : loadModel(ckpt);
    const corpus = loadCorpus(config.train.corpus, { maxBytes: config.train.maxCorpusBytes || undefined });
    const tokens = config.train.tokenizer === 'byte' ? corpus.bytes : tokenizer.encode(corpus.text);
    const { val } = splitTrainVal(tokens);
    const prompts = valPrompts(val, argv.prompts, argv.promptLength);
    const ks = argv.k ? argv.k.split(',').map(Number) : [model.draftK ?? model.k];
    const variant = ckpt.startsWith('zoo:') ? ckpt.slice(4) : `${config.model.mtp.kind} k=${model.k}`;
    console.log(`${ckpt}: ${variant}, ${backend.name}; ${argv.prompts} prompts × ${argv.tokens} tokens × ${argv.runs} runs`);
    const trees = argv.trees.split(',');
    for (const t of trees) if (!['chain', 'dense', 'sparse63', 'optimised', 'dynamic'].includes(t)) throw new Error(`--trees: unknown shape '${t}'; allowed: chain, dense, sparse63, optimised, dynamic`);
    const optimised = new Map<string, TreeChoices>(); // per k and nodes: optimizeTree on rank accuracies measured on the model's greedy text
    for (const k of trees.includes('optimised') ? ks.filter((x) => x > 1) : []) {
      for (const n of nodes) optimised.set(`${k}/${n}`, (await optimisedTree(model, prompts.slice(0, 2), n, k - 1)).tree);
    }
    const shape = (t: string, depth: number) =>
      t === 'chain' || depth === 0 ? undefined : t === 'dense' ? denseTree(depth) : sparseTree(depth);
    const decoders = ks.filter((k) => k > 1).flatMap((k) =>
      trees.flatMap((t) => {
        const draft = (opts: DrafterOptions, label: string) => ({ label, decode: (m: MtpModel, p: number[], n: number) => decode(m, m.drafter(opts), p, { maxNewTokens: n }) });
        if (t === 'dynamic') return nodes.map((n) => draft({ dynamic: { depth: k - 1, expand: argv.expand, branch: argv.branch, nodes: n } }, `dynamic k=${k} (${n} nodes)`));
        if (t === 'optimised') return nodes.map((n) => draft({ k, tree: optimised.get(`${k}/${n}`) }, `optimised k=${k} (${n} nodes)`));
        return [draft({ k, tree: shape(t, k - 1) }, `${t} k=${k}`)];
      }),
    );
    if (argv.lookup) decoders.push({ label: 'prompt lookup k=5', decode: (m: MtpModel, p: number[], n: number) => decode(m, new PromptLookupDrafter({ k: 5 }), p, { maxNewTokens: n }) });
    const measured = await compareWithAR(model, prompts, decoders, { tokens: argv.tokens, runs: argv.runs });
    for (const r of measured) {
      if (!r.identical) throw new Error(`${ckpt} ${r.label}: output differs from greedy AR — a lossless decoder is broken`);
      rows.push({ ...r, variant });
      console.log(`  ${r.label}: τ ${r.tau.toFixed(2)}, ${r.tokensPerSec.toFixed(0)} tokens/s vs AR ${r.arTokensPerSec.toFixed(0)} → ×${r.speedup.toFixed(2)}`);
    }
    model.dispose();
  }
  const m = machine();
  const command = `npm run bench:decode -- ${process.argv.slice(2).join(' ')}`;
  const table = markdownTable(
    ['model', 'decoder', 'τ', 'αᵢ (draft 2, 3, …)', 'tokens/s (median)', 'AR tokens/s', 'speedup vs AR'],
    rows.map((r) => [r.variant, r.label, r.tau.toFixed(2), r.alpha.map((a) => a.toFixed(2)).join(', ') || '–', r.tokensPerSec.toFixed(0), r.arTokensPerSec.toFixed(0), `×${r.speedup.toFixed(2)}`]),
  );
  const file = writeResults(argv.name, { machine: m, backend, command, prompts: argv.prompts, tokens: argv.tokens, runs: argv.runs, rows });
  console.log(`\n${table}\n\nresults: ${file}`);
  const note = `Decoding, ${backend.name} on ${m.cpu} (${m.cores} cores); \`${command}\`; outputs identical to greedy AR in every run.`;
  if (argv.readme) updateReadme(argv.name, `${note}\n\n${table}`);
}

main()
  .then(() => process.exit(0)) // Dawn (WebGPU in Node) can keep the event loop alive after the work is done
  .catch((e) => {
    console.error(`error: ${(e as Error).message}`);
    process.exit(1);
  });
