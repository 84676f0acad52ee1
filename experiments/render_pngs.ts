/**
 * Renders `<name>.png` beside every figure page `<name>.html` in the given folders, from the figure spec inside the
 * page, exactly as an experiment would have (FigureWriter.png, headless Chromium): for results measured on a machine
 * without Chromium with `--png=false`.
 *
 *   npx tsx experiments/render_pngs.ts figures/k_sweep [more folders] [--missing]   # --missing: only figures without a PNG
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { figureFromHtml, FigureWriter, writeAtomic } from '../src/plot/write';

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const missing = args.includes('--missing');
  const dirs = args.filter((a) => a !== '--missing');
  if (!dirs.length) throw new Error('usage: npx tsx experiments/render_pngs.ts FOLDER... [--missing]');
  const writer = new FigureWriter();
  let n = 0;
  try {
    for (const dir of dirs) {
      if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new Error(`${dir} is not a folder`);
      for (const f of fs.readdirSync(dir).filter((x) => x.endsWith('.html')).sort()) {
        const png = path.join(dir, f.replace(/\.html$/, '.png'));
        if (missing && fs.existsSync(png)) continue;
        const file = path.join(dir, f);
        writeAtomic(png, await writer.png(figureFromHtml(fs.readFileSync(file, 'utf8'), file)));
        n += 1;
      }
    }
  } finally {
    await writer.close();
  }
  console.log(`${n} PNG${n === 1 ? '' : 's'} written`);
}

main().catch((e: Error) => {
  console.error(`error: ${e.message}`);
  process.exit(1);
});
