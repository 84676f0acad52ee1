/**
 * Cost of one verification forward of n new tokens on a KV cache of 120 tokens (batch 1), relative to one token: what
 * bounds the speedup of speculative and multi-token decoding (docs/performance.md). Each forward appends its n tokens
 * to the cache and is truncated back (as a rejected draft is), and reads its logits back once (a decoding step's one host sync).
 * Positions are explicit with a causal mask [n, 120 + n], as a draft or tree verifier passes them; positions past the
 * position table repeat its last row (the cost is the same).
 *
 * Measured on the `wasm` backend with this package's kernels and, in the same run, with MTP_WASM_FAST=false (the
 * backend without them), and in the PyTorch twin (bench/torch_twin.py, 2 threads) when /usr/bin/python3 has torch.
 * Also this process's CPU time per forward (on a machine busy with other work, wall time includes waiting for a core)
 * and the peak of live tensors and tensor bytes during each forward (cache and weights included).
 *
 *   npm run bench:decode-cost -- --presets=small --runs=30
 */
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import * as tf from '@tensorflow/tfjs';
import { BACKEND_NAMES, BackendName, initBackend } from '../src/backend/index';
import { FAST_FLAG } from '../src/backend/wasm_native';
import { PRESET_NAMES, PresetName, resolveConfig } from '../src/config';
import { MASKED, Transformer } from '../src/model/transformer';
import { Rng } from '../src/util/rng';
import { machine, markdownTable, mb, median, peakMemory, timeRunsCpu, updateReadme, writeResults } from './common';
import { runTwin, torchUnavailable } from './torch';

interface Point {
  n: number;
  ms: number;
  msAll: number[];
  /** Median CPU time of this process per forward (ms): below ms when the machine was busy with other work. */
  cpuMs: number;
  peakTensors: number;
  peakBytes: number;
}

/**
 * Times verification forwards of each n on a `cacheLen`-token cache, with the fast paths on or off. The n are
 * interleaved round by round, so that a change in the machine's load affects them alike.
 */
async function measure(preset: PresetName, fast: boolean, ns: number[], cacheLen: number, warmup: number, runs: number): Promise<Point[]> {
  tf.env().set(FAST_FLAG, fast);
  const cfg = resolveConfig(preset).model;
  const model = new Transformer(cfg);
  const rng = new Rng(3);
  const tokens = (n: number) => Array.from({ length: n }, () => rng.int(cfg.vocabSize));
  const cache = model.newCache();
  tf.tidy(() => void model.forward(tf.tensor2d([tokens(cacheLen)], [1, cacheLen], 'int32'), { cache }));
  const verifiers = ns.map((n) => {
    const S = cacheLen + n;
    const mask = new Float32Array(n * S);
    for (let i = 0; i < n; i++) mask.fill(MASKED, i * S + cacheLen + i + 1, (i + 1) * S);
    const positions = Array.from({ length: n }, (_, i) => Math.min(cacheLen + i, cfg.blockSize - 1));
    const feed = tokens(n);
    return async () => {
      const logits = tf.tidy(() =>
        model.forward(tf.tensor2d([feed], [1, n], 'int32'), { cache, positions, mask: tf.tensor2d(mask, [n, S]) }),
      );
      await logits.data();
      logits.dispose();
      cache.truncate(cacheLen);
    };
  });
  const msAll: number[][] = ns.map(() => []);
  const cpuAll: number[][] = ns.map(() => []);
  for (let r = 0; r < warmup + runs; r++) {
    for (let i = 0; i < ns.length; i++) {
      const { wall, cpu } = await timeRunsCpu(verifiers[i], 0, 1);
      if (r < warmup) continue;
      msAll[i].push(wall[0]);
      cpuAll[i].push(cpu[0]);
    }
  }
  const points: Point[] = [];
  for (let i = 0; i < ns.length; i++) {
    const peak = await peakMemory(verifiers[i]);
    points.push({ n: ns[i], ms: median(msAll[i]), msAll: msAll[i], cpuMs: median(cpuAll[i]), peakTensors: peak.tensors, peakBytes: peak.bytes });
  }
  cache.dispose();
  model.dispose();
  tf.env().set(FAST_FLAG, true);
  return points;
}

async function main() {
  const argv = yargs(hideBin(process.argv))
    .option('backend', { type: 'string', default: 'wasm', choices: BACKEND_NAMES as unknown as string[], describe: 'tfjs backend' })
    .option('presets', { type: 'string', default: 'small', describe: `comma list of ${PRESET_NAMES.join(', ')}` })
    .option('ns', { type: 'string', default: '1,2,4,8,16,64', describe: 'new tokens per verification forward' })
    .option('cache', { type: 'number', default: 120, describe: 'tokens in the KV cache under each forward' })
    .option('runs', { type: 'number', default: 30, describe: 'timed forwards per n (median reported)' })
    .option('warmup', { type: 'number', default: 5, describe: 'untimed forwards per n first' })
    .option('baseline', { type: 'boolean', default: true, describe: `also measure with ${FAST_FLAG}=false` })
    .option('torch', { type: 'boolean', default: true, describe: 'also run the PyTorch twin when available' })
    .option('readme', { type: 'boolean', default: true, describe: 'write the table into README.md' })
    .strict()
    .parseSync();
  const presets = argv.presets.split(',') as PresetName[];
  const ns = argv.ns.split(',').map(Number);
  const info = await initBackend(argv.backend as BackendName);
  const m = machine();
  console.log(`wasm (${info.detail}) on ${m.cpu}, ${m.cores} cores, load ${m.load}`);
  const noTorch = argv.torch ? torchUnavailable() : 'not requested';
  const sections: string[] = [];
  const results: Record<string, unknown> = {};
  for (const preset of presets) {
    const fast = await measure(preset, true, ns, argv.cache, argv.warmup, argv.runs);
    const base = argv.baseline ? await measure(preset, false, ns, argv.cache, argv.warmup, argv.runs) : null;
    let torch: Record<string, number> | null = null;
    if (noTorch === null) {
      const args = ['--configs', preset, '--train-runs', '0', '--dec-runs', String(argv.runs), '--dec-ns', ns.join(','), '--dec-cache', String(argv.cache)];
      const twin = runTwin(args);
      torch = twin.results[0]?.decode?.kvCacheMs ?? null;
    }
    const ratio = (ms: number, one: number) => `${(ms / one).toFixed(2)}×`;
    const rows = fast.map((p, i) => {
      const row: (string | number)[] = [p.n, p.ms.toFixed(2), ratio(p.ms, fast[0].ms), p.cpuMs.toFixed(2), ratio(p.cpuMs, fast[0].cpuMs)];
      if (base) row.push(base[i].ms.toFixed(2), ratio(base[i].ms, base[0].ms));
      if (torch) row.push(torch[p.n].toFixed(2), ratio(torch[p.n], torch[ns[0]]), `${(p.ms / torch[p.n]).toFixed(2)}×`);
      row.push(p.peakTensors, mb(p.peakBytes));
      return row;
    });
    const header = ['n', 'wasm ms', 'vs n=1', 'wasm CPU ms', 'vs n=1'];
    if (base) header.push(`wasm, ${FAST_FLAG}=false ms`, 'vs n=1');
    if (torch) header.push('PyTorch ms', 'vs n=1', 'wasm / PyTorch');
    header.push('peak tensors', 'peak MB');
    const table = markdownTable(header, rows);
    console.log(`\n${preset}:\n${table}`);
    sections.push(`**${preset}**\n\n${table}`);
    results[preset] = { fast, baseline: base, torch };
  }
  const command = `npm run bench:decode-cost -- ${process.argv.slice(2).join(' ')}`.trim();
  const file = writeResults('decode_cost', { machine: m, command, cache: argv.cache, runs: argv.runs, warmup: argv.warmup, results, noTorch });
  const note =
    `Verification forward of n tokens on a ${argv.cache}-token KV cache, batch 1, logits read back; median of ${argv.runs} ` +
    `after ${argv.warmup} warm-up. ${m.cpu} (${m.cores} cores, load ${m.load}), Node ${m.node}, tfjs ${m.tfjs}, ${info.detail}; ` +
    `PyTorch: ${noTorch ?? '2 threads'}. \`${command}\``;
  console.log(`\nresults: ${file}`);
  if (argv.readme) updateReadme('decode_cost', [note, ...sections].join('\n\n'));
}

main().catch((e) => {
  console.error(`error: ${(e as Error).message}`);
  process.exit(1);
});
