/**
 * Decoding speed: greedy AR vs the model's lossless self-speculative decoder, on the same model,
 * prompts and backend, in the same run (Spec-Bench conventions, DESIGN §4.8).
 *
 * For each checkpoint: prompts are windows of the corpus's validation split; every method decodes
 * every prompt `runs` times, interleaved (AR, speculative, AR, …) so machine noise hits both alike;
 * the output of every speculative run must equal AR's token for token (the bench stops otherwise).
 * Reported: τ (tokens per forward), αᵢ (per draft position), tokens/s medians and the speedup ratio.
 *
 *   npm run bench:decode -- --ckpt=runs/tiny-par4/model.ckpt [--k=1,2,3,4] [--prompts=8] [--tokens=128] [--runs=5]
 */
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { BACKEND_NAMES, BackendName, initBackend } from '../src/backend/index';
import { loadCorpus, splitTrainVal } from '../src/data/corpus';
import { generate } from '../src/decode/ar';
import { selfSpeculative } from '../src/decode/speculative';
import { loadModel } from '../src/train/run';
import { Rng } from '../src/util/rng';
import { machine, markdownTable, median, updateReadme, writeResults } from './common';

interface MethodResult {
  method: string;
  k: number;
  tau: number;
  alpha: number[];
  tokensPerSec: number;
  speedup: number;
  identical: boolean;
}

async function main() {
  const argv = yargs(hideBin(process.argv))
    .option('ckpt', { type: 'string', demandOption: true, describe: 'checkpoint of an MTP model (comma list for several)' })
    .option('k', { type: 'string', describe: 'draft lengths to test (comma list; default: the model’s k)' })
    .option('prompts', { type: 'number', default: 8, describe: 'prompts from the validation split' })
    .option('promptLength', { type: 'number', default: 32, describe: 'tokens per prompt' })
    .option('tokens', { type: 'number', default: 128, describe: 'tokens generated per prompt' })
    .option('runs', { type: 'number', default: 5, describe: 'timed repetitions (medians)' })
    .option('backend', { type: 'string', default: 'wasm', choices: BACKEND_NAMES as unknown as string[] })
    .option('name', { type: 'string', default: 'decode', describe: 'results file and README block name' })
    .option('readme', { type: 'boolean', default: false, describe: 'write the table into README.md' })
    .strict()
    .parseSync();
  const backend = await initBackend(argv.backend as BackendName);
  const rows: (MethodResult & { ckpt: string; variant: string })[] = [];
  for (const ckpt of argv.ckpt.split(',')) {
    const { model, tokenizer, config } = loadModel(ckpt);
    const corpus = loadCorpus(config.train.corpus, { maxBytes: config.train.maxCorpusBytes || undefined });
    const tokens = config.train.tokenizer === 'byte' ? corpus.bytes : tokenizer.encode(corpus.text);
    const { val } = splitTrainVal(tokens);
    const rng = new Rng(2024);
    const prompts = Array.from({ length: argv.prompts }, () => {
      const s = rng.int(val.length - argv.promptLength);
      return Array.from(val.subarray(s, s + argv.promptLength));
    });
    const ks = argv.k ? argv.k.split(',').map(Number) : [model.k];
    const variant = config.model.mtp.kind === 'parallel' ? `parallel k=${model.k}` : config.model.mtp.kind;
    console.log(`${ckpt}: ${variant}, ${backend.name}; ${argv.prompts} prompts × ${argv.tokens} tokens × ${argv.runs} runs`);
    // warm-up (kernel compilation, allocator)
    await generate(model.trunk, prompts[0], { maxNewTokens: 16 });
    await selfSpeculative(model, prompts[0], { maxNewTokens: 16 });
    const arTps: number[] = [];
    const arTokens: number[][] = [];
    for (const k of ks) {
      const specTps: number[] = [];
      let committed = 0;
      let forwards = 0;
      let identical = true;
      const attempts: number[] = [];
      const accepts: number[] = [];
      for (let r = 0; r < argv.runs; r++) {
        for (let p = 0; p < prompts.length; p++) {
          const ar = await generate(model.trunk, prompts[p], { maxNewTokens: argv.tokens });
          if (k === ks[0]) {
            arTps.push(ar.stats.tokensPerSec);
            if (r === 0) arTokens.push(ar.tokens);
          }
          const spec = await selfSpeculative(model, prompts[p], { maxNewTokens: argv.tokens, k });
          specTps.push(spec.stats.tokensPerSec);
          if (JSON.stringify(spec.tokens) !== JSON.stringify(arTokens[p])) identical = false;
          if (r === 0) {
            committed += spec.stats.newTokens;
            forwards += spec.stats.forwards;
            spec.stats.attempts.forEach((a, i) => (attempts[i] = (attempts[i] ?? 0) + a));
            spec.stats.accepts.forEach((a, i) => (accepts[i] = (accepts[i] ?? 0) + a));
          }
        }
      }
      if (!identical) throw new Error(`${ckpt} k=${k}: speculative output differs from greedy AR — a lossless decoder is broken`);
      const tps = median(specTps);
      rows.push({
        ckpt,
        variant,
        method: 'self-speculative',
        k,
        tau: committed / forwards,
        alpha: attempts.map((a, i) => accepts[i] / a),
        tokensPerSec: tps,
        speedup: tps / median(arTps),
        identical,
      });
      console.log(`  k=${k}: τ ${(committed / forwards).toFixed(2)}, ${tps.toFixed(0)} tokens/s vs AR ${median(arTps).toFixed(0)} → ×${(tps / median(arTps)).toFixed(2)}`);
    }
    rows.push({ ckpt, variant, method: 'greedy AR', k: 1, tau: 1, alpha: [], tokensPerSec: median(arTps), speedup: 1, identical: true });
    model.dispose();
  }
  const m = machine();
  const command = `npm run bench:decode -- ${process.argv.slice(2).join(' ')}`;
  const table = markdownTable(
    ['model', 'method', 'k', 'τ', 'αᵢ (draft 2, 3, …)', 'tokens/s (median)', 'speedup vs AR'],
    rows.map((r) => [r.variant, r.method, r.k, r.tau.toFixed(2), r.alpha.map((a) => a.toFixed(2)).join(', ') || '–', r.tokensPerSec.toFixed(0), `×${r.speedup.toFixed(2)}`]),
  );
  const file = writeResults(argv.name, { machine: m, backend, command, prompts: argv.prompts, tokens: argv.tokens, runs: argv.runs, rows });
  console.log(`\n${table}\n\nresults: ${file}`);
  const note = `Decoding, ${backend.name} on ${m.cpu} (${m.cores} cores); \`${command}\`; outputs identical to greedy AR in every run.`;
  if (argv.readme) updateReadme(argv.name, `${note}\n\n${table}`);
}

main().catch((e) => {
  console.error(`error: ${(e as Error).message}`);
  process.exit(1);
});
