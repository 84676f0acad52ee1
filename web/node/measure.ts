/**
 * `npm run lab:measure`: decoding speed in the lab page in headless Chromium, per backend — tokens/s and τ of greedy
 * AR and of each zoo model's own decoder (and prompt lookup), the numbers of the README's table. Builds the page,
 * serves it on 127.0.0.1 and drives the page's worker client; prints a Markdown table.
 *
 *   npm run lab:measure                         # every backend, 32 tokens (after a warm-up run of the same request)
 *   npm run lab:measure -- --backends=webgl,wasm --tokens=128 --models=code-ar,code-feature
 */
import type { DecodeRequest, DecodeResult, LabBackend, LabDecoder, LabTree } from '../src/protocol';
import { buildLab, openLab, serveLab } from './lab_browser';

interface Row {
  model: string;
  decoder: LabDecoder;
  tree: LabTree;
}

const ROWS: Row[] = [
  { model: 'code-ar', decoder: 'ar', tree: 'chain' },
  { model: 'code-ar', decoder: 'lookup', tree: 'chain' },
  { model: 'code-parallel-k2', decoder: 'own', tree: 'chain' },
  { model: 'code-sequential-d1', decoder: 'own', tree: 'chain' },
  { model: 'code-medusa1-k5', decoder: 'own', tree: 'chain' },
  { model: 'code-medusa1-k5', decoder: 'own', tree: 'sparse63' },
  { model: 'code-feature', decoder: 'own', tree: 'chain' },
  { model: 'code-feature', decoder: 'own', tree: 'dynamic' },
];

function arg(name: string, fallback: string): string {
  const a = process.argv.find((x) => x.startsWith(`--${name}=`));
  return a ? a.slice(name.length + 3) : fallback;
}

async function main(): Promise<void> {
  const backends = arg('backends', 'webgpu,webgl,wasm,cpu').split(',') as LabBackend[];
  const tokens = Number(arg('tokens', '32'));
  const models = arg('models', '').split(',').filter((m) => m !== '');
  const rows = ROWS.filter((r) => models.length === 0 || models.includes(r.model));
  const prompt = 'export function parse(text: string): Node {\n  const ';
  await buildLab();
  const server = await serveLab();
  const lab = await openLab(server.url, '?backend=wasm&model=none');
  const out: string[] = ['| backend | model | decoder | tokens/s | τ | identical to AR |', '|---|---|---|---:|---:|---|'];
  try {
    for (const backend of backends) {
      const detail = await lab.page.evaluate(async (b) => {
        try {
          const info = await (window as any).mtpLab.client.init(b);
          return `${info.name}: ${info.detail}`;
        } catch (e) {
          return `unavailable: ${(e as Error).message}`;
        }
      }, backend);
      console.log(`${backend}: ${detail}`);
      if (detail.startsWith('unavailable')) continue;
      let loaded = '';
      for (const row of rows) {
        if (row.model !== loaded) {
          await lab.page.evaluate((m) => (window as any).mtpLab.client.loadZoo(m), row.model);
          loaded = row.model;
        }
        const req: DecodeRequest = { prompt, maxNewTokens: tokens, decoder: row.decoder, tree: row.tree, acceptance: 'greedy', temperature: 0, topK: 0, topP: 1, seed: 0, compare: row.decoder !== 'ar' };
        // a warm-up run of the same request compiles the backend's kernels for every shape the measured run meets
        await lab.page.evaluate((r) => (window as any).mtpLab.client.decode(r), req);
        const r: DecodeResult = await lab.page.evaluate((q) => (window as any).mtpLab.client.decode(q), req);
        const name = row.decoder === 'own' ? `${r.draft.method}` : row.decoder === 'lookup' ? 'prompt lookup' : 'AR greedy';
        const same = r.identical === null ? '–' : r.identical ? 'yes' : 'NO';
        const line = `| ${backend} | ${row.model} | ${name} | ${r.draft.tokensPerSec.toFixed(1)} | ${r.draft.tau.toFixed(2)} | ${same} |`;
        console.log(line);
        out.push(line);
      }
    }
  } finally {
    await lab.browser.close();
    await server.close();
  }
  console.log(`\n${out.join('\n')}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
