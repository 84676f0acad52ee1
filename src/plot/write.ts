/**
 * Figure writers (Node only, docs/algorithms.md, figures): a figure spec becomes `<name>.html` (self-contained:
 * plotly.js-dist-min inlined once, works offline from file://), `<name>.png` (rendered by Plotly.toImage in headless Chromium) and,
 * when given, `<name>.json` with the data the figure came from, side by side in one folder. Every file is written
 * atomically (temporary file + rename), so a crashed run never leaves half a figure.
 *
 * Chromium is Debian's (`apt-get install -y chromium`) driven by playwright-core (docs/backends.md, Chromium); one
 * browser serves every figure of a FigureWriter. playwright-core is loaded only when a PNG is asked for.
 */
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { writeFileDurable } from '../util/files';
import { FIGURE_SIZE, Figure, JsonObject } from './theme';

export const CHROMIUM_PATH = '/usr/bin/chromium';
/** Headless, offline, no first-run or background traffic; playwright adds a fresh temporary --user-data-dir. */
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const requireHere = createRequire(__filename);
let plotlyJs: string | undefined;

/** The installed plotly.js-dist-min version (e.g. '4.1.2'). */
export function plotlyVersion(): string {
  return (requireHere('plotly.js-dist-min/package.json') as { version: string }).version;
}

/** The plotly.js-dist-min bundle (about 4.8 MB), read once per process. */
export function plotlySource(): string {
  plotlyJs ??= fs
    .readFileSync(requireHere.resolve('plotly.js-dist-min/plotly.min.js'), 'utf8')
    .replace(/<\/script/gi, '<\\/script');
  return plotlyJs;
}

/** JSON that is safe inside a <script> element: no '<' (so no '</script>' or '<!--'), no JS-breaking line separators. */
export function scriptJson(value: unknown): string {
  return JSON.stringify(value).replace(/</g, '\\u003c').replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
}

/** The figure's height in CSS pixels: its layout's, else the default. */
export const figureHeight = (fig: Figure): number =>
  typeof fig.layout.height === 'number' ? fig.layout.height : FIGURE_SIZE.height;

/**
 * A div and a script that draw the figure with window.Plotly, which the page must have loaded before. Where Plotly is
 * missing the div says so instead of staying blank.
 */
export function plotSnippet(fig: Figure, id: string, height: string = `${figureHeight(fig)}px`): string {
  return (
    `<div id="${id}" style="width:100%;height:${height}"></div>\n<script>(function () {\n` +
    `  var fig = ${scriptJson(fig)};\n` +
    `  if (typeof Plotly === 'undefined') {\n` +
    `    document.getElementById('${id}').textContent = 'Plotly is not loaded: run the notebook from the top.';\n` +
    `    return;\n  }\n` +
    `  Plotly.newPlot('${id}', fig.data, fig.layout, { responsive: true, displaylogo: false });\n})();</script>\n`
  );
}

/** The figure spec inside a page or snippet written by figureHtml/plotSnippet (to render its PNG later). */
export function figureFromHtml(html: string, file = 'the page'): Figure {
  const m = /\n {2}var fig = (.*);\n/.exec(html);
  if (!m) throw new Error(`${file} holds no figure written by this package (no 'var fig = …;' line)`);
  return JSON.parse(m[1]) as Figure;
}

/**
 * A standalone HTML page showing the figure; opens offline. plotly.js is inlined, or, with `plotlySrc`,
 * loaded from that relative path (one shared copy for a folder of figures instead of 4.8 MB in each).
 */
export function figureHtml(fig: Figure, plotlySrc?: string): string {
  const t = fig.layout.title;
  const text = t && typeof t === 'object' && !Array.isArray(t) && typeof t.text === 'string' ? t.text : 'figure';
  const title = text.replace(/<[^>]*>/g, ' ').replace(/&/g, '&amp;').replace(/</g, '&lt;');
  const height = typeof fig.layout.height === 'number' ? `${fig.layout.height}px` : '100vh';
  return (
    `<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>${title}</title>\n` +
    `<style>html, body { margin: 0; }</style>\n` +
    (plotlySrc ? `<script src="${plotlySrc}"></script>\n` : `<script>${plotlySource()}</script>\n`) +
    `</head>\n<body>\n` +
    `${plotSnippet(fig, 'figure', height)}</body>\n</html>\n`
  );
}

/** Writes a file durably (src/util/files.ts): readers see the old or the new file, never half; errors name path and cause. */
export function writeAtomic(file: string, content: string | Uint8Array): void {
  writeFileDurable(file, typeof content === 'string' ? content : [content]); // every byte checked, fsynced, renamed
}

export interface PngOptions {
  /** CSS pixels; default the layout's width/height, else 900 × 560. */
  width?: number;
  height?: number;
  /** Device pixels per CSS pixel (2 for a sharper image twice the size); default 1. */
  scale?: number;
}

export interface WriteOptions extends PngOptions {
  /** false: write only the HTML (and JSON), no Chromium needed. Default: the writer's setting (true). */
  png?: boolean;
}

export interface WrittenFiles {
  html: string;
  png?: string;
  json?: string;
}

export interface FigureWriterOptions {
  /** Default for every write: false skips PNGs (no Chromium). Default true. */
  png?: boolean;
  /** Default CHROMIUM_PATH (/usr/bin/chromium). */
  executablePath?: string;
  /**
   * Write plotly.js once to this file and make every HTML load it by relative path, instead of inlining
   * it (4.8 MB) in each; the HTML files then open offline as long as they stay beside it.
   */
  sharedPlotly?: string;
}

/**
 * Writes figures, reusing one headless Chromium (started on the first PNG) for all of them. Call close() when done;
 * the browser and its temporary profile go away with it.
 */
export class FigureWriter {
  private browser?: Browser;
  private page?: Promise<Page>;

  constructor(private readonly opts: FigureWriterOptions = {}) {}

  /** Writes dir/name.html, dir/name.png (unless png is false) and dir/name.json (when data is given). */
  async write(fig: Figure, dir: string, name: string, data?: unknown, opts: WriteOptions = {}): Promise<WrittenFiles> {
    if (!/^[\w.-]+$/.test(name)) {
      throw new Error(`writeFigure: name must be a plain file name (letters, digits, . _ -), got '${name}'`);
    }
    const base = path.join(dir, name);
    const out: WrittenFiles = { html: `${base}.html` };
    if (opts.png ?? this.opts.png ?? true) {
      writeAtomic(`${base}.png`, await this.png(fig, opts));
      out.png = `${base}.png`;
    }
    const shared = this.opts.sharedPlotly;
    if (shared && !fs.existsSync(shared)) writeAtomic(shared, plotlySource());
    writeAtomic(out.html, figureHtml(fig, shared ? path.relative(path.dirname(out.html), shared).split(path.sep).join('/') : undefined));
    if (data !== undefined) {
      writeAtomic(`${base}.json`, `${JSON.stringify(data, null, 2)}\n`);
      out.json = `${base}.json`;
    }
    return out;
  }

  /** The figure as PNG bytes, from Plotly.toImage in the headless page. */
  async png(fig: Figure, opts: PngOptions = {}): Promise<Buffer> {
    const size = {
      width: opts.width ?? (typeof fig.layout.width === 'number' ? fig.layout.width : FIGURE_SIZE.width),
      height: opts.height ?? figureHeight(fig),
      scale: opts.scale ?? 1,
    };
    const page = await this.openPage();
    const url = await page.evaluate(`Plotly.toImage(${scriptJson(fig)}, ${JSON.stringify({ format: 'png', ...size })})`);
    if (typeof url !== 'string' || !url.startsWith('data:image/png;base64,')) {
      throw new Error('Plotly.toImage returned no PNG');
    }
    return Buffer.from(url.slice(url.indexOf(',') + 1), 'base64');
  }

  /** Plotly.validate's findings for the spec (unknown attributes, bad values); empty when it is clean. */
  async validate(fig: Figure): Promise<JsonObject[]> {
    const page = await this.openPage();
    const issues = await page.evaluate(
      `(Plotly.validate(${scriptJson(fig.data)}, ${scriptJson(fig.layout)}) || [])` +
        `.map(function (e) { return { code: e.code, path: e.astr || e.path, msg: e.msg }; })`,
    );
    return issues as JsonObject[];
  }

  /** Closes the browser (if one was started). The writer can be used again afterwards. */
  async close(): Promise<void> {
    const browser = this.browser;
    this.browser = undefined;
    this.page = undefined;
    if (browser) await browser.close();
  }

  private openPage(): Promise<Page> {
    this.page ??= this.launch().catch((e: unknown) => {
      this.page = undefined;
      throw e;
    });
    return this.page;
  }

  private async launch(): Promise<Page> {
    const executablePath = this.opts.executablePath ?? CHROMIUM_PATH;
    if (!fs.existsSync(executablePath)) {
      throw new Error(
        `PNG export needs Chromium at ${executablePath} (Debian package 'chromium'): install it with ` +
          `'apt-get install -y chromium', or pass { png: false } to write only the HTML (and JSON).`,
      );
    }
    let chromium: typeof import('playwright-core').chromium;
    try {
      chromium = (requireHere('playwright-core') as typeof import('playwright-core')).chromium;
    } catch (e) {
      throw new Error(`PNG export needs the npm package playwright-core (npm install), or pass { png: false }: ${e}`);
    }
    const browser = await chromium.launch({ executablePath, args: CHROMIUM_ARGS, headless: true });
    this.browser = browser;
    const page = await browser.newPage();
    await page.setContent('<!DOCTYPE html><html><head><meta charset="utf-8"></head><body></body></html>');
    await page.addScriptTag({ content: plotlySource() });
    return page;
  }
}

/** One-shot writeFigure: starts Chromium, writes, closes it. Use a FigureWriter for several figures. */
export async function writeFigure(
  fig: Figure,
  dir: string,
  name: string,
  data?: unknown,
  opts: WriteOptions = {},
): Promise<WrittenFiles> {
  const writer = new FigureWriter();
  try {
    return await writer.write(fig, dir, name, data, opts);
  } finally {
    await writer.close();
  }
}

/** One CSV field: empty for null/undefined, JSON for objects, quoted when it holds a comma, quote or line break. */
function csvField(v: unknown): string {
  const s = v === null || v === undefined ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v);
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

/** Writes a result table as CSV (atomically): columns = every key of the rows, in order of first appearance. */
export function writeCsv(rows: readonly object[], file: string): void {
  const columns = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const line = (r: object) => columns.map((c) => csvField((r as Record<string, unknown>)[c])).join(',');
  const lines = [columns.map(csvField).join(','), ...rows.map(line)];
  writeAtomic(file, rows.length ? `${lines.join('\n')}\n` : '');
}
