/**
 * Decoding on WebGPU: the fused decoding programs (src/backend/webgpu_decode.ts) against the plain tfjs ops and the
 * PyTorch twin on the same GPU, then greedy AR against every lossless decoder of the zoo models, all in one run.
 *
 * 1. Per preset (random weights): one verification forward of n = 1 and 8 tokens on a 120-token cache with its logits
 *    read back to the host (truncated back after each, as a rejected draft is), fused and plain; and the greedy AR
 *    loop's ms per token. Programs per token = compute dispatches counted at the WebGPU pass encoder.
 * 2. The PyTorch twin (bench/torch_twin.py, fp32, eager) on CUDA: the same forward on the same cache (MTP_PYTHON names
 *    the Python that has torch).
 * 3. Per zoo model: AR vs its drafter's chain, trees and dynamic trees (src/eval/speed.ts: interleaved runs, medians,
 *    outputs checked identical to AR's).
 *
 *   npm run bench:gpu -- [--presets=small,medium,deep] [--models=zoo:code-medusa1-k5,zoo:code-feature] [--torch=false]
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import * as tf from '@tensorflow/tfjs';
import { backendInfo, initBackend } from '../src/backend/index';
import { WEBGPU_DECODE_FLAG } from '../src/backend/webgpu_decode';
import { PRESET_NAMES, PresetName, resolveConfig } from '../src/config';
import { loadCorpus, splitTrainVal } from '../src/data/corpus';
import { valPrompts } from '../src/data/batch';
import { generate } from '../src/decode/ar';
import { decode } from '../src/decode/engine';
import { denseTree, sparseTree } from '../src/decode/tree';
import { compareWithAR, SpeedRow } from '../src/eval/speed';
import type { MtpModel } from '../src/model/mtp_model';
import { Transformer } from '../src/model/transformer';
import { loadZooModel } from '../src/zoo/load';
import { Rng } from '../src/util/rng';
import { machine, markdownTable, median, updateReadme, writeResults } from './common';
import { runTwin, torchUnavailable } from './torch';

/** Compute dispatches issued since the counter was installed (every program, tfjs's and the fused ones). */
const dispatches = { count: 0 };
function countDispatches(): void {
  const proto = (globalThis as { GPUComputePassEncoder?: { prototype: { dispatchWorkgroups: (...a: unknown[]) => void } } }).GPUComputePassEncoder?.prototype;
  if (!proto) throw new Error('GPUComputePassEncoder is not defined: run this benchmark on the webgpu backend');
  const dispatch = proto.dispatchWorkgroups;
  proto.dispatchWorkgroups = function (this: unknown, ...a: unknown[]) {
    dispatches.count += 1;
    return dispatch.apply(this, a);
  };
}

const withFused = async <T>(on: boolean, f: () => Promise<T>): Promise<T> => {
  tf.env().set(WEBGPU_DECODE_FLAG, on);
  try {
    return await f();
  } finally {
    tf.env().set(WEBGPU_DECODE_FLAG, true);
  }
};

interface Latency {
  /** Verification forward of n tokens on the cache, logits read back (median ms) and its programs. */
  forward: Record<number, { ms: number; programs: number }>;
  /** Greedy AR: ms per token (median over runs) and programs per token. */
  msPerToken: number;
  programsPerToken: number;
}

async function latency(model: Transformer, ns: number[], cacheLen: number, runs: number, arTokens: number): Promise<Latency> {
  const rng = new Rng(7);
  const V = model.config.vocabSize;
  const tokens = (n: number) => Array.from({ length: n }, () => rng.int(V));
  const cache = model.newCache();
  await tf.tidy(() => model.verifyForward(tokens(cacheLen), cache).logits).data().then(() => undefined);
  const forward: Latency['forward'] = {};
  for (const n of ns) {
    const times: number[] = [];
    let programs = 0;
    for (let r = -3; r < runs; r++) {
      const x = tokens(n);
      const d0 = dispatches.count;
      const t0 = performance.now();
      const logits = tf.tidy(() => model.verifyForward(x, cache).logits);
      await logits.data();
      const ms = performance.now() - t0;
      logits.dispose();
      cache.truncate(cacheLen);
      if (r >= 0) times.push(ms);
      programs = dispatches.count - d0;
    }
    forward[n] = { ms: median(times), programs };
  }
  cache.dispose();
  const prompt = tokens(8);
  await generate(model, prompt, { maxNewTokens: 8 }); // warm-up
  const perToken: number[] = [];
  let programsPerToken = 0;
  for (let r = 0; r < runs; r++) {
    const d0 = dispatches.count;
    const out = await generate(model, prompt, { maxNewTokens: arTokens });
    perToken.push(1000 / out.stats.tokensPerSec);
    programsPerToken = (dispatches.count - d0) / arTokens;
  }
  return { forward, msPerToken: median(perToken), programsPerToken };
}

async function main() {
  const argv = yargs(hideBin(process.argv))
    .option('presets', { type: 'string', default: 'small,medium,deep', describe: `random-weight models to time (comma list of ${PRESET_NAMES.join(', ')})` })
    .option('models', { type: 'string', default: 'zoo:code-medusa1-k5,zoo:code-feature,zoo:code-parallel-k4,zoo:code-sequential-d1', describe: 'zoo models to decode with every lossless decoder (comma list; empty for none)' })
    .option('cache', { type: 'number', default: 120, describe: 'cached tokens under the timed forwards' })
    .option('runs', { type: 'number', default: 15, describe: 'timed forwards / AR generations per preset (medians)' })
    .option('arTokens', { type: 'number', default: 64, describe: 'tokens per timed AR generation' })
    .option('prompts', { type: 'number', default: 4, describe: 'validation prompts per zoo model' })
    .option('tokens', { type: 'number', default: 96, describe: 'tokens generated per prompt (zoo models)' })
    .option('specRuns', { type: 'number', default: 3, describe: 'timed repetitions of the zoo comparison' })
    .option('torch', { type: 'boolean', default: true, describe: 'also time the PyTorch twin on CUDA' })
    .option('promptsFile', { type: 'string', describe: 'JSON file of the zoo models’ prompts per corpus, read instead of the corpora (for a machine without them); with --writePrompts, written from the corpora' })
    .option('writePrompts', { type: 'boolean', default: false, describe: 'only write --promptsFile and exit' })
    .option('isolate', { type: 'boolean', default: true, describe: 'time each zoo model in a process of its own (in one long process later models decode slower: see arDrift)' })
    .option('partFile', { type: 'string', hidden: true, describe: 'internal: a child process writes its zoo rows here' })
    .option('name', { type: 'string', default: 'gpu_decode_fused', describe: 'results file and README block name' })
    .option('readme', { type: 'boolean', default: true, describe: 'write the tables into README.md' })
    .strict()
    .parseSync();
  const promptsFor = (corpus: string): number[][] => {
    if (argv.promptsFile && !argv.writePrompts) {
      const all = JSON.parse(fs.readFileSync(argv.promptsFile, 'utf8')) as Record<string, number[][]>;
      if (!all[corpus]) throw new Error(`--promptsFile ${argv.promptsFile} has no prompts for corpus '${corpus}'`);
      return all[corpus].slice(0, argv.prompts);
    }
    return valPrompts(splitTrainVal(loadCorpus(corpus).bytes).val, argv.prompts, 64);
  };
  if (argv.writePrompts) {
    if (!argv.promptsFile) throw new Error('--writePrompts needs --promptsFile');
    fs.writeFileSync(argv.promptsFile, JSON.stringify({ code: promptsFor('code'), prose: promptsFor('prose') }));
    console.log(`wrote ${argv.promptsFile}`);
    return;
  }
  const info = await initBackend('webgpu');
  countDispatches();
  const presets = argv.presets.split(',').filter(Boolean);
  for (const p of presets) if (!(PRESET_NAMES as readonly string[]).includes(p)) throw new Error(`--presets: unknown preset '${p}'; allowed: ${PRESET_NAMES.join(', ')}`);
  const ns = [1, 8];
  console.log(`${info.detail}\nwebgpu decoding: ${presets.join(', ')}; forwards on a ${argv.cache}-token cache, ${argv.runs} runs`);

  // 1. fused vs plain, per preset
  const latencies: { preset: string; fused: Latency; plain: Latency }[] = [];
  for (const preset of presets) {
    const m = new Transformer({ ...resolveConfig(preset as PresetName).model, seed: 1234 });
    const cacheLen = Math.min(argv.cache, m.config.blockSize - Math.max(...ns));
    const plain = await withFused(false, () => latency(m, ns, cacheLen, argv.runs, argv.arTokens));
    const fused = await latency(m, ns, cacheLen, argv.runs, argv.arTokens);
    latencies.push({ preset, fused, plain });
    console.log(`${preset}: AR ${fused.msPerToken.toFixed(2)} ms/token, ${fused.programsPerToken.toFixed(1)} programs (plain ops ${plain.msPerToken.toFixed(2)} ms, ${plain.programsPerToken.toFixed(1)}); forward n=1 ${fused.forward[1].ms.toFixed(2)} ms vs ${plain.forward[1].ms.toFixed(2)}, n=8 ${fused.forward[8].ms.toFixed(2)} vs ${plain.forward[8].ms.toFixed(2)}`);
    m.dispose();
  }

  // 2. the PyTorch twin on the GPU
  const twin: Record<string, Record<string, number>> = {};
  let twinInfo: Record<string, unknown> | string = 'not run (--torch=false)';
  if (argv.torch) {
    const why = torchUnavailable();
    if (why) twinInfo = why;
    else {
      try {
        const r = runTwin(['--configs', presets.filter((p) => ['small', 'medium', 'deep'].includes(p)).join(','), '--train-runs', '0', '--dec-ns', ns.join(','), '--dec-cache', String(argv.cache), '--dec-runs', String(Math.max(20, argv.runs))], 0, 'cuda');
        twinInfo = r.info;
        for (const res of r.results) if (res.decode) twin[res.config] = res.decode.kvCacheMs;
      } catch (e) {
        twinInfo = (e as Error).message;
      }
    }
    console.log('PyTorch twin:', JSON.stringify(twinInfo), JSON.stringify(twin));
  }

  // 3. the zoo models: AR vs every lossless decoder; AR on code-ar before and after, to see whether the run drifts
  const arCheck = async () => {
    const { model } = loadZooModel('code-ar');
    const p = promptsFor('code')[0];
    await generate(model, p, { maxNewTokens: 16 });
    const tps: number[] = [];
    for (let r = 0; r < 5; r++) tps.push((await generate(model, p, { maxNewTokens: argv.tokens })).stats.tokensPerSec);
    model.dispose();
    return median(tps);
  };
  const models = argv.models.split(',').filter(Boolean);
  const isolate = argv.isolate && !argv.partFile && models.length > 0;
  const arBefore = models.length > 0 && !argv.partFile ? await arCheck() : NaN;
  const spec: (SpeedRow & { model: string })[] = [];
  if (isolate) {
    // one child process per model, the same flags otherwise
    const keep = process.argv.slice(2).filter((a) => !/^--(models|presets|torch|readme|name|partFile|isolate)(=|$)/.test(a));
    for (const name of models) {
      const part = path.join(os.tmpdir(), `gpu_decode_part.${process.pid}.json`);
      const r = spawnSync(process.execPath, [...process.execArgv, process.argv[1], ...keep, `--models=${name}`, '--presets=', '--torch=false', '--readme=false', `--partFile=${part}`], { stdio: 'inherit' });
      if (r.status !== 0) throw new Error(`the child process for ${name} failed (exit ${r.status})`);
      spec.push(...(JSON.parse(fs.readFileSync(part, 'utf8')) as typeof spec));
      fs.rmSync(part, { force: true });
    }
  }
  for (const name of isolate ? [] : models) {
    const { model, config } = loadZooModel(name.replace(/^zoo:/, ''));
    const prompts = promptsFor(config.train.corpus);
    const k = model.draftK ?? model.k;
    const run = (label: string, opts: Parameters<MtpModel['drafter']>[0]) => ({ label, decode: (m: MtpModel, p: number[], n: number) => decode(m, m.drafter(opts), p, { maxNewTokens: n }) });
    const decoders = [
      run(`chain k=${k}`, { k }),
      run(`dense tree k=${k}`, { k, tree: denseTree(k - 1) }),
      run(`sparse63 tree`, { tree: sparseTree(Math.min(4, k - 1)) }),
      run(`dynamic tree (${k - 1} deep, 24 nodes)`, { dynamic: { depth: k - 1, expand: 4, branch: 4, nodes: 24 } }),
    ];
    if (config.model.mtp.kind === 'feature') decoders.push(run(`chain k=8`, { k: 8 }), run('dynamic tree (7 deep, 24 nodes)', { dynamic: { depth: 7, expand: 4, branch: 4, nodes: 24 } }));
    const rows = await compareWithAR(model, prompts, decoders, { tokens: argv.tokens, runs: argv.specRuns });
    for (const r of rows) {
      if (!r.identical) throw new Error(`${name} ${r.label}: output differs from greedy AR on webgpu — a lossless decoder is broken`);
      spec.push({ ...r, model: name.replace(/^zoo:/, '') });
      console.log(`  ${name} ${r.label}: τ ${r.tau.toFixed(2)}, ${r.tokensPerSec.toFixed(0)} tokens/s vs AR ${r.arTokensPerSec.toFixed(0)} → ×${r.speedup.toFixed(2)}`);
    }
    model.dispose();
  }

  if (argv.partFile) {
    fs.writeFileSync(argv.partFile, JSON.stringify(spec));
    return;
  }
  const arAfter = models.length > 0 ? await arCheck() : NaN;
  if (argv.models) console.log(`AR on code-ar before / after the zoo comparisons: ${arBefore.toFixed(0)} / ${arAfter.toFixed(0)} tokens/s`);
  const command = `npm run bench:gpu -- ${process.argv.slice(2).join(' ')}`.trim();
  const results = { machine: machine(), adapter: backendInfo().detail, command, cacheLength: argv.cache, latencies, torch: { info: twinInfo, kvCacheMs: twin }, arDrift: { before: arBefore, after: arAfter }, spec };
  console.log(`wrote ${writeResults(argv.name, results)}`);
  if (argv.readme) {
    const lat = markdownTable(
      ['model', 'AR ms/token fused (plain ops)', 'programs/token fused (plain)', 'forward n=1 ms fused (plain)', 'forward n=8 ms fused (plain)', 'PyTorch fp32 n=1 / n=8 ms'],
      latencies.map(({ preset, fused, plain }) => [
        preset,
        `**${fused.msPerToken.toFixed(2)}** (${plain.msPerToken.toFixed(2)})`,
        `${fused.programsPerToken.toFixed(1)} (${plain.programsPerToken.toFixed(1)})`,
        `${fused.forward[1].ms.toFixed(2)} (${plain.forward[1].ms.toFixed(2)})`,
        `${fused.forward[8].ms.toFixed(2)} (${plain.forward[8].ms.toFixed(2)})`,
        twin[preset] ? `${twin[preset]['1'].toFixed(2)} / ${twin[preset]['8'].toFixed(2)}` : '—',
      ]),
    );
    const sp = markdownTable(
      ['model', 'decoder', 'τ', 'tokens/s', 'AR tokens/s', 'speedup', 'identical to AR'],
      spec.map((r) => [r.model, r.label, r.tau.toFixed(2), r.tokensPerSec.toFixed(0), r.arTokensPerSec.toFixed(0), `×${r.speedup.toFixed(2)}`, r.identical ? 'yes' : 'NO']),
    );
    const m = results.machine;
    updateReadme(
      argv.name,
      `${results.adapter}; ${m.cpu}, Node ${m.node}, tfjs ${m.tfjs}; \`${command}\`. Random weights for the latency rows (median of ${argv.runs}; forwards on a ${argv.cache}-token cache, logits read back; AR over ${argv.arTokens} tokens), PyTorch ${typeof twinInfo === 'object' ? String(twinInfo.torch) : ''} eager fp32 on the same GPU in the same run. Zoo models: ${argv.prompts} validation prompts × ${argv.tokens} tokens × ${argv.specRuns} runs, medians${isolate ? ", each model in a process of its own" : ""}; greedy AR on code-ar in the parent process before and after them: ${arBefore.toFixed(0)} / ${arAfter.toFixed(0)} tokens/s.\n\n${lat}\n\n${sp}`,
    );
  }
}

main().catch((e) => {
  console.error(e instanceof Error ? e.message : e);
  process.exit(1);
});
