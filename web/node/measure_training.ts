/**
 * `npm run lab:measure-training`: data-parallel training speed in the lab page in headless Chromium: tokens/s of the
 * `small` preset (its batch of 16 rows × 128 tokens, the code corpus, wasm) against the number of workers (the lab
 * worker and Web Workers beside it), the shape `npm run bench:parallel` measures in Node. Each point is a short run
 * in the page; the median step time after warm-up. Rounds alternate the worker counts, so a load that changes
 * during the run (the machine's other work) spreads over every count. Prints a Markdown table.
 *
 *   npm run lab:measure-training                                    # 1 and 2 workers, 6 steps after 2 warm-up, 2 rounds
 *   npm run lab:measure-training -- --workers=1,2,4 --steps=10 --rounds=3
 */
import * as os from 'node:os';
import { resolveConfig } from '../../src/config';
import { median } from '../../src/util/median';
import type { TrainRequest, TrainResult } from '../src/protocol';
import { buildLab, openLab, serveLab } from './lab_browser';

function arg(name: string, fallback: string): string {
  const a = process.argv.find((x) => x.startsWith(`--${name}=`));
  return a ? a.slice(name.length + 3) : fallback;
}

async function main(): Promise<void> {
  const workers = arg('workers', '1,2').split(',').map(Number);
  const steps = Number(arg('steps', '6'));
  const warmup = Number(arg('warmup', '2'));
  const rounds = Number(arg('rounds', '2'));
  const small = resolveConfig('small');
  const load = os.loadavg()[0].toFixed(2);
  await buildLab();
  const server = await serveLab();
  const lab = await openLab(server.url, '?backend=wasm&model=none');
  const ms = new Map<number, number[]>(workers.map((w) => [w, []]));
  try {
    const version = lab.browser.version();
    const detail = await lab.page.evaluate(async () => {
      const info = await (window as any).mtpLab.client.init('wasm');
      return `${info.detail}; cross-origin isolated: ${crossOriginIsolated}, ${navigator.hardwareConcurrency} logical cores`;
    });
    console.log(`Chromium ${version}, ${detail}`);
    for (let round = 0; round < rounds; round++) {
      for (const w of workers) {
        const req: Omit<TrainRequest, 'text'> = { corpus: 'code', kind: 'none', k: 1, preset: 'small', steps: warmup + steps, lr: small.train.lr, batchSize: small.train.batchSize, seed: 1, workers: w };
        const run = await lab.page.evaluate(async (r) => {
          const text = await (await fetch('corpus/code.txt')).text();
          const stepMs: number[] = [];
          const result: TrainResult = await (window as any).mtpLab.client.train({ ...r, text }, (e: { ms: number }) => stepMs.push(e.ms));
          return { stepMs, result };
        }, req);
        const timed = run.stepMs.slice(warmup);
        ms.get(w)!.push(...timed);
        const same = run.result.weights.every((d) => d === run.result.weights[0]);
        console.log(`round ${round + 1}, ${w} worker(s): median ${median(timed).toFixed(0)} ms/step; ranks' weights ${same ? 'identical' : 'DIFFER'}`);
      }
    }
  } finally {
    await lab.browser.close();
    await server.close();
  }
  const tokens = small.train.batchSize * small.model.blockSize;
  const one = median(ms.get(workers[0])!);
  const rows = workers.map((w) => {
    const step = median(ms.get(w)!);
    const speedup = one / step;
    return `| small | ${w} | ${step.toFixed(0)} | ${((tokens * 1000) / step).toFixed(0)} | ×${speedup.toFixed(2)} | ${((100 * speedup) / (w / workers[0])).toFixed(0)} % |`;
  });
  console.log(`\n${os.cpus()[0]?.model ?? 'unknown CPU'} (${os.cpus().length} cores, load ${load} at the start); median of ${rounds} × ${steps} steps after ${warmup} warm-up each\n`);
  console.log(['| preset | workers | ms/step (median) | tokens/s | speedup | efficiency |', '|---|---|---|---|---|---|', ...rows].join('\n'));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
