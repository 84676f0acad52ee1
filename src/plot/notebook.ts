/**
 * Showing figures in a Jupyter notebook with the tslab kernel (RECIPES.md "Jupyter + tslab").
 *
 * showFigure displays a text/html output: the figure's div and script, with plotly.js-dist-min inlined into the first
 * such output of the kernel session (+4.8 MB once; the later outputs use the window.Plotly it defines). That renders in
 * the classic notebook and in nbconvert's HTML export. Viewers that run no JavaScript (GitHub, nbviewer without
 * trust) show nothing for it, so `png: true` adds a second output, an image/png rendered in headless Chromium by
 * FigureWriter; `html: false` leaves only the PNG (small notebooks, no 4.8 MB).
 *
 * Caveat: a notebook saved after re-running only a later cell may lack the output that carried plotly; re-run it from
 * the top (the figure div then says "Plotly is not loaded" instead of staying blank).
 *
 * tslab is required lazily, so this file also loads (and type-checks) outside the kernel.
 */
import type * as Tslab from 'tslab';
import { Figure } from './theme';
import { FigureWriter, PngOptions, plotSnippet, plotlySource } from './write';

export interface ShowOptions extends PngOptions {
  /** Interactive Plotly output (text/html). Default true. */
  html?: boolean;
  /** Also a static image/png output (needs Chromium). Default false. */
  png?: boolean;
}

let plotlySent = false;
let shown = 0;
let writer: FigureWriter | undefined;

function tslabDisplay(): Tslab.Display {
  try {
    return (require('tslab') as typeof Tslab).display;
  } catch (e) {
    throw new Error(`showFigure needs the tslab package (npm install): ${e}`);
  }
}

/** Displays a figure in the running tslab notebook (see the file comment for what is shown where). */
export async function showFigure(fig: Figure, opts: ShowOptions = {}): Promise<void> {
  const display = tslabDisplay();
  const png = opts.png ? await (writer ??= new FigureWriter()).png(fig, opts) : undefined;
  try {
    if (opts.html ?? true) {
      const lib = plotlySent ? '' : `<script>${plotlySource()}</script>\n`;
      display.html(lib + plotSnippet(fig, `mtp-figure-${Math.random().toString(36).slice(2, 10)}-${++shown}`));
      plotlySent = true;
    }
    if (png) display.png(png);
  } catch (e) {
    throw new Error(`showFigure works inside the tslab Jupyter kernel only (use writeFigure elsewhere): ${e}`);
  }
}

/** Closes the Chromium that `png: true` started (it also goes when the kernel stops). */
export async function closeFigureBrowser(): Promise<void> {
  await writer?.close();
  writer = undefined;
}
