/**
 * Showing figures in a Jupyter notebook with the tslab kernel (docs/backends.md, Jupyter and tslab).
 *
 * showFigure displays a text/html output: the figure's div and a script that draws it with Plotly. plotly.js is not
 * in the output (it is 4.8 MB): the script loads it once per page from the notebook server, which serves the
 * repository's files under <base URL>files/ (`npm run notebook` starts the classic Notebook with the repository as its
 * root, so the bundle is <base URL>files/node_modules/plotly.js-dist-min/plotly.min.js). The base URL is the one the
 * notebook page declares (body data-base-url; JupyterLab's jupyter-config-data), so it works under any base URL; if
 * the server root is above the repository, the folders from the notebook's own up to the root are tried in turn, as
 * Node resolves node_modules. Every figure output carries the small loader, so a notebook saved after re-running any
 * cell still draws all its figures.
 *
 * Where scripts run but no notebook server serves the repository (nbconvert's HTML export, a file:// page) the div says
 * that Plotly could not be loaded, and why. For a self-contained export pass `{ plotly: 'inline' }`: the first such
 * output of the kernel session then carries the whole bundle (+4.8 MB in the .ipynb), as before.
 *
 * The classic Notebook runs the scripts of saved outputs only in a trusted notebook (scripts/notebook.sh trusts the
 * lessons in notebooks/; outputs produced in the session are always trusted). Viewers that run no scripts (GitHub, an
 * untrusted notebook) show the div's one-line note, so `png: true` adds a second output, an image/png rendered in
 * headless Chromium by FigureWriter; `html: false` leaves only the PNG.
 *
 * tslab is required lazily, so this file also loads (and type-checks) outside the kernel.
 */
import type * as Tslab from 'tslab';
import { Figure } from './theme';
import { FigureWriter, PngOptions, figureHeight, plotlySource, plotlyVersion, scriptJson } from './write';

export interface ShowOptions extends PngOptions {
  /** Interactive Plotly output (text/html). Default true. */
  html?: boolean;
  /** Also a static image/png output (needs Chromium). Default false. */
  png?: boolean;
  /**
   * Where the page gets plotly.js: 'server' (default) loads it from the notebook server's /files/ route;
   * 'inline' puts the bundle into this output if none of this kernel session has it yet (self-contained, +4.8 MB).
   */
  plotly?: 'server' | 'inline';
}

/** The bundle's path below the folder that holds node_modules (the repository root). */
export const PLOTLY_FILE = 'node_modules/plotly.js-dist-min/plotly.min.js';

let plotlyInlined = false;
let shown = 0;
let writer: FigureWriter | undefined;

function tslabDisplay(): Tslab.Display {
  try {
    return (require('tslab') as typeof Tslab).display;
  } catch (e) {
    throw new Error(`showFigure needs the tslab package (npm install): ${e}`);
  }
}

/**
 * Page script defining window.mtpLabPlotly(callback) once per page: it loads plotly.js from the notebook server at
 * most once and calls back with 'ok' or the reason it failed. `query` (?v=<version>) lets the server mark the file
 * cacheable, so the 4.8 MB are fetched once per version, not once per page.
 */
function loaderJs(query: string): string {
  return `window.mtpLabPlotly = window.mtpLabPlotly || (function () {
    var file = ${JSON.stringify(PLOTLY_FILE + query)}, waiting = [], state = null, started = false, tried = [];
    function settle(s) { state = s; var w = waiting; waiting = []; w.forEach(function (f) { f(s); }); }
    function candidates() {
      // as the Notebook's own front end builds /files/ URLs (the body's attributes are URL-encoded once more)
      var body = document.body, base = body.getAttribute('data-base-url'), nb = body.getAttribute('data-notebook-path');
      if (base !== null) base = decodeURIComponent(base);
      else try { base = JSON.parse(document.getElementById('jupyter-config-data').textContent).baseUrl; } catch (e) {}
      if (typeof base !== 'string') return [];
      var dirs = [''], parts = nb ? decodeURIComponent(nb).split('/').slice(0, -1).map(encodeURIComponent) : [];
      for (var i = parts.length; i > 0; i--) dirs.push(parts.slice(0, i).join('/') + '/');
      return dirs.map(function (d) { return new URL(base.replace(/\\/*$/, '/') + 'files/' + d + file, location.href).href; });
    }
    function next(urls) {
      if (window.Plotly) return settle('ok');
      var url = urls.shift();
      if (!url) {
        return settle(tried.length ? 'the notebook server has no ' + ${JSON.stringify(PLOTLY_FILE)} + ' (tried ' +
          tried.join(', ') + '): start it with npm run notebook in the repository, after npm ci'
          : 'this page is not served by a Jupyter notebook server, which serves plotly.js from the repository ' +
          '(open the notebook with npm run notebook, or show figures with { plotly: "inline" } for a self-contained page)');
      }
      tried.push(url);
      var s = document.createElement('script');
      s.src = url;
      s.onload = function () { next(urls); };
      s.onerror = function () { s.remove(); next(urls); };
      document.head.appendChild(s);
    }
    return function (callback) {
      if (window.Plotly) return callback('ok');
      if (state) return callback(state);
      waiting.push(callback);
      if (!started) { started = true; next(candidates()); }
    };
  })();`;
}

/**
 * The text/html output for a figure: a div holding a one-line note (what viewers without scripts show) and a script
 * that replaces it by the plot, or by the reason Plotly could not be loaded. `withPng`: a static image follows.
 */
export function notebookFigureHtml(fig: Figure, id: string, withPng = false): string {
  const note =
    'Interactive figure: drawn by Plotly when the notebook runs its scripts (npm run notebook, trusted notebook)' +
    (withPng ? '; the static image follows.' : '.');
  return (
    `<div id="${id}" style="width:100%;font-style:italic;color:#777">${note}</div>\n<script>(function () {\n` +
    `  var div = document.getElementById('${id}'), fig = ${scriptJson(fig)};\n` +
    `  if (!div) return;\n` +
    `  ${loaderJs(`?v=${encodeURIComponent(plotlyVersion())}`)}\n` +
    `  window.mtpLabPlotly(function (state) {\n` +
    `    if (state !== 'ok') { div.textContent = 'Plotly could not be loaded: ' + state + '.'; return; }\n` +
    `    div.textContent = '';\n` +
    `    div.style.cssText = 'width:100%;height:${figureHeight(fig)}px';\n` +
    `    Plotly.newPlot(div, fig.data, fig.layout, { responsive: true, displaylogo: false });\n` +
    `  });\n})();</script>\n`
  );
}

/** Displays a figure in the running tslab notebook (see the file comment for what is shown where). */
export async function showFigure(fig: Figure, opts: ShowOptions = {}): Promise<void> {
  const display = tslabDisplay();
  const png = opts.png ? await (writer ??= new FigureWriter()).png(fig, opts) : undefined;
  try {
    if (opts.html ?? true) {
      const inline = opts.plotly === 'inline' && !plotlyInlined;
      const lib = inline ? `<script>${plotlySource()}</script>\n` : '';
      display.html(lib + notebookFigureHtml(fig, `mtp-figure-${Math.random().toString(36).slice(2, 10)}-${++shown}`, !!png));
      if (inline) plotlyInlined = true;
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
