/**
 * The figure layer (docs/algorithms.md, figures): builders checked as plain data on small fixed inputs (traces, names,
 * arrays, modes, axis titles, one colour per variant, reference lines, tree geometry, mask values, HTML escaping); then the writers in
 * headless Chromium: Plotly.validate accepts every spec, and one figure written to a temp dir gives a self-contained
 * HTML that renders offline, a real PNG and a JSON that round-trips. Needs Chromium (apt-get install -y chromium).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { chromium } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  acceptanceByHead,
  maskHeatmap,
  qualityVsSpeed,
  tauVsK,
  trainingCurves,
  treeFigure,
} from '../src/plot/figures';
import { splitSteps, tokenHighlight } from '../src/plot/tokens';
import { Figure, Json, VARIANT_COLORS, colorOf, seriesStyles } from '../src/plot/theme';
import { CHROMIUM_ARGS, CHROMIUM_PATH, FigureWriter, figureFromHtml, writeCsv, writeFigure } from '../src/plot/write';

const ROOT = path.resolve(__dirname, '..');

/** obj at a dotted path ('xaxis.title.text', 'data.0.x'). */
function at(obj: unknown, dotted: string): Json | undefined {
  let cur = obj as Json | undefined;
  for (const k of dotted.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = Array.isArray(cur) ? cur[Number(k)] : cur[k];
  }
  return cur;
}

const quality = qualityVsSpeed(
  [
    { series: 'AR', label: 'AR', speedup: 1, quality: 1.5, lossless: true },
    { series: 'parallel', label: 'k=2', speedup: 1.4, quality: 1.55, lossless: true },
    { series: 'parallel', label: 'k=4', speedup: 1.9, quality: 1.6, lossless: true },
    { series: 'medusa', label: 'K=3', speedup: 1.8, quality: 1.5, lossless: true },
    { series: 'parallel (unverified)', label: 'k=4', speedup: 3.2, quality: 2.4, lossless: false },
  ],
  { qualityTitle: 'validation loss (nats/token)', lowerIsBetter: true },
);
const tau = tauVsK(
  [
    { series: 'parallel', k: 4, tau: 2.1 },
    { series: 'parallel', k: 2, tau: 1.6 },
    { series: 'medusa', k: 3, tau: 2.2 },
  ],
  [1, 2, 3, 4].map((k) => ({ series: 'parallel', k, tau: (1 - 0.6 ** k) / 0.4 })),
);
const acceptance = acceptanceByHead([
  { series: 'sequential', head: 2, alpha: 0.5 },
  { series: 'sequential', head: 1, alpha: 0.7 },
  { series: 'sequential', head: 3, alpha: NaN },
  { series: 'parallel', head: 1, alpha: 0.6 },
]);
const curves = trainingCurves([
  { series: 'parallel', step: [0, 10, 20], loss: [5, 3, 2], kind: 'train' },
  { series: 'parallel', step: [0, 20], loss: [5.1, 2.2], kind: 'val' },
  { series: 'AR', step: [0, 10, 20], loss: [5, 2.9, 1.9] },
]);
const choices = [[1], [0, 0], [0], [0, 1], [0, 0, 0]];
const accuracies = [
  [0.6, 0.2],
  [0.5, 0.1],
  [0.4, 0.1],
];
const tree = treeFigure(choices, { accuracies });
const mask = [
  [1, 0, 0],
  [1, 1, 0],
  [1, 0, 1],
];
const heat = maskHeatmap(mask, { labels: ['root', '[0]', '[1]'] });
const ALL: Record<string, Figure> = { quality, tau, acceptance, curves, tree, heat };

describe('theme', () => {
  it('colours a series by the first variant word in its name', () => {
    expect(colorOf('parallel')).toBe(VARIANT_COLORS.parallel);
    expect(colorOf('Medusa greedy')).toBe(VARIANT_COLORS.medusa);
    expect(colorOf('feature')).toBe(VARIANT_COLORS.feature);
    expect(colorOf('AR')).toBe(VARIANT_COLORS.AR);
    expect(colorOf('parallel k=4')).not.toBe(VARIANT_COLORS.AR); // 'ar' inside 'parallel' is no word
    expect(colorOf('something else')).toBe(colorOf('something else'));
  });

  it('tells apart two series of one variant in one figure', () => {
    const s = seriesStyles(['parallel k=2', 'parallel k=4', 'medusa']);
    expect(s.get('parallel k=2')).toEqual({ color: VARIANT_COLORS.parallel, symbol: 'circle' });
    expect(s.get('parallel k=4')!.color).not.toBe(VARIANT_COLORS.parallel);
    expect(s.get('parallel k=4')!.symbol).not.toBe('circle');
    expect(s.get('medusa')!.color).toBe(VARIANT_COLORS.medusa);
  });
});

describe('figure builders', () => {
  it.each(Object.entries(ALL))('%s has a title, axis titles, a legend and is plain JSON', (_, fig) => {
    expect(String(at(fig.layout, 'title.text'))).not.toBe('');
    expect(String(at(fig.layout, 'xaxis.title.text'))).toMatch(/\(.+\)/); // a unit or meaning in parentheses
    expect(String(at(fig.layout, 'yaxis.title.text'))).not.toBe('');
    expect(at(fig.layout, 'showlegend')).toBe(true);
    expect(JSON.parse(JSON.stringify(fig))).toEqual(fig);
  });

  it('qualityVsSpeed: one trace per series, filled lossless / open dashed lossy, AR line at x = 1', () => {
    expect(quality.data.map((t) => t.name)).toEqual(['AR', 'parallel', 'medusa', 'parallel (unverified)']);
    const par = quality.data[1];
    expect(par.mode).toBe('lines+markers+text');
    expect(par.x).toEqual([1.4, 1.9]);
    expect(par.y).toEqual([1.55, 1.6]);
    expect(par.text).toEqual(['k=2', 'k=4']);
    expect(at(par, 'marker.symbol')).toEqual(['circle', 'circle']);
    expect(at(par, 'line.dash')).toBe('solid');
    expect(at(par, 'marker.color')).toBe(VARIANT_COLORS.parallel);
    const lossy = quality.data[3];
    expect(at(lossy, 'marker.symbol')).toEqual(['square-open']);
    expect(at(lossy, 'line.dash')).toBe('dash');
    expect(at(quality.layout, 'shapes.0')).toMatchObject({ type: 'line', x0: 1, x1: 1, yref: 'paper', y0: 0, y1: 1 });
    expect(at(quality.layout, 'annotations.0.text')).toContain('AR');
    expect(at(quality.layout, 'xaxis.title.text')).toBe('wall-clock speedup vs greedy AR (×)');
    expect(at(quality.layout, 'yaxis.title.text')).toBe('validation loss (nats/token) — lower is better');
    const [lo, hi] = at(quality.layout, 'xaxis.range') as number[];
    expect(lo).toBeLessThan(1);
    expect(hi).toBeGreaterThan(3.2);
  });

  it('tauVsK: ideal diagonal, measured markers and dashed theory in one colour, sorted by k', () => {
    expect(tau.data.map((t) => t.name)).toEqual(['ideal τ = k', 'parallel', 'parallel (theory)', 'medusa']);
    expect(tau.data[0]).toMatchObject({ mode: 'lines', x: [1, 4], y: [1, 4] });
    expect(tau.data[1]).toMatchObject({ mode: 'markers', x: [2, 4], y: [1.6, 2.1] });
    expect(tau.data[2]).toMatchObject({ mode: 'lines', x: [1, 2, 3, 4] });
    expect(at(tau.data[2], 'line.dash')).toBe('dash');
    expect(at(tau.data[1], 'marker.color')).toBe(VARIANT_COLORS.parallel);
    expect(at(tau.data[2], 'line.color')).toBe(VARIANT_COLORS.parallel);
    expect(at(tau.data[3], 'marker.color')).toBe(VARIANT_COLORS.medusa);
    expect(at(tau.layout, 'yaxis.title.text')).toContain('τ');
  });

  it('acceptanceByHead: lines+markers sorted by head, NaN as a gap, y in [0, 1]', () => {
    expect(acceptance.data.map((t) => t.name)).toEqual(['sequential', 'parallel']);
    expect(acceptance.data[0]).toMatchObject({ mode: 'lines+markers', x: [1, 2, 3], y: [0.7, 0.5, null] });
    expect(at(acceptance.data[0], 'line.color')).toBe(VARIANT_COLORS.sequential);
    expect(at(acceptance.layout, 'yaxis.range')).toEqual([0, 1]);
  });

  it('trainingCurves: val dashed in the series colour, lengths checked', () => {
    expect(curves.data.map((t) => t.name)).toEqual(['parallel (train)', 'parallel (val)', 'AR']);
    expect(curves.data[1]).toMatchObject({ x: [0, 20], y: [5.1, 2.2] });
    expect(at(curves.data[0], 'line.dash')).toBe('solid');
    expect(at(curves.data[1], 'line.dash')).toBe('dash');
    expect(at(curves.data[1], 'line.color')).toBe(at(curves.data[0], 'line.color'));
    expect(at(curves.layout, 'yaxis.title.text')).toBe('loss (nats/token)');
    expect(() => trainingCurves([{ series: 'x', step: [0, 1], loss: [1] }])).toThrow(/2 steps but 1 losses/);
  });

  it('treeFigure: len(choices) + 1 nodes, one edge per non-root node, hover with path and acceptance', () => {
    const [edges, root, nodes] = tree.data;
    expect(root.x).toEqual([0]);
    expect((nodes.x as number[]).length + 1).toBe(choices.length + 1);
    expect(nodes.x).toEqual([1, 1, 2, 2, 3]); // sorted by (length, lexicographic): [0] [1] [0,0] [0,1] [0,0,0]
    const ex = edges.x as (number | null)[];
    expect(ex.filter((v) => v === null)).toHaveLength(choices.length);
    for (let e = 0; e < choices.length; e++) expect(ex[3 * e + 1]! - ex[3 * e]!).toBe(1); // parent at depth d − 1
    const ys = nodes.y as number[];
    expect(ys[0]).toBeLessThan(ys[1]); // [0] above [1] (the y axis is reversed)
    expect(at(tree.layout, 'yaxis.autorange')).toBe('reversed');
    const hover = nodes.hovertext as string[];
    expect(hover[4]).toContain('path [0, 0, 0]');
    expect(hover[4]).toContain(`P(path accepted) ≈ ${(0.6 * 0.5 * 0.4).toFixed(3)}`);
    expect(at(nodes, 'marker.color.4')).toBeCloseTo(0.6 * 0.5 * 0.4, 12);
    expect(String(at(tree.layout, 'title.text'))).toContain('6 nodes');
    expect(() => treeFigure([[0, 1]])).toThrow(/no parent \[0\]/);
    expect(at(treeFigure([[0]]), 'data.2.hovertext.0')).not.toContain('P(path');
  });

  it('maskHeatmap: z equals the mask, rows top to bottom, labels on the ticks', () => {
    const [h] = heat.data;
    expect(h.type).toBe('heatmap');
    expect(h.z).toEqual(mask);
    expect(h).toMatchObject({ zmin: 0, zmax: 1, x: [0, 1, 2], y: [0, 1, 2] });
    expect(at(heat.layout, 'yaxis.autorange')).toBe('reversed');
    expect(at(heat.layout, 'xaxis.ticktext')).toEqual(['root', '[0]', '[1]']);
    expect(at(heat.layout, 'yaxis.ticktext')).toEqual(['root', '[0]', '[1]']);
    expect(() => maskHeatmap([[1, 0], [1]])).toThrow(/same length/);
  });

  it('tokenHighlight: escaped text, alternating step backgrounds, the first/bonus token marked', () => {
    const steps = splitSteps(['<', 'b>', '&', '"x\'', ' y'], [2, 3]);
    expect(steps).toEqual([
      { tokens: ['<', 'b>'], accepted: 1 },
      { tokens: ['&', '"x\'', ' y'], accepted: 2 },
    ]);
    const html = tokenHighlight(steps);
    expect(html).not.toContain('<b>b>');
    expect(html).toContain('<b style="text-decoration:underline">&lt;</b>b&gt;');
    expect(html).toContain('<b style="text-decoration:underline">&amp;</b>&quot;x&#39; y');
    const bgs = [...html.matchAll(/<span title="step \d[^"]*" style="background:(#\w+)/g)].map((m) => m[1]);
    expect(bgs).toHaveLength(2);
    expect(bgs[0]).not.toBe(bgs[1]);
    expect(html).toContain('5 tokens in 2 forwards (τ = 2.50)');
    expect(() => splitSteps(['a'], [2])).toThrow(/add up to 2/);
  });
});

describe('writers', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mtp-plot-'));
  const writer = new FigureWriter();
  afterAll(async () => {
    await writer.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('Plotly.validate accepts every builder output', async () => {
    for (const [name, fig] of Object.entries(ALL)) expect([name, await writer.validate(fig)]).toEqual([name, []]);
  }, 30_000);

  describe('one written figure', () => {
    const data = { measured: [{ series: 'parallel', k: 2, tau: 1.6 }], note: 'ünïcode </script>' };
    let files: Awaited<ReturnType<FigureWriter['write']>>;
    beforeAll(async () => {
      files = await writer.write(tau, dir, 'tau_vs_k', data);
    }, 30_000);

    it('HTML: plotly inlined once, the figure data in it', () => {
      const html = fs.readFileSync(files.html, 'utf8');
      expect(html.match(/plotly\.js v\d+\.\d+\.\d+/g)).toHaveLength(1);
      expect(html).toContain('Plotly.newPlot(');
      expect(html).toContain('"name":"parallel (theory)"');
      expect(html).toContain('"x":[2,4],"y":[1.6,2.1]');
      expect(html).not.toMatch(/<script[^>]+src=/); // nothing fetched
    });

    it('HTML renders in Chromium with the network blocked', async () => {
      const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, args: CHROMIUM_ARGS });
      try {
        const page = await browser.newPage();
        await page.route('**/*', (r) => (r.request().url().startsWith('file:') ? r.continue() : r.abort()));
        await page.goto(`file://${files.html}`);
        await page.waitForSelector('#figure .main-svg', { timeout: 15_000 });
        expect(await page.locator('#figure .scatterlayer .trace').count()).toBe(tau.data.length);
      } finally {
        await browser.close();
      }
    }, 30_000);

    it('PNG: a real 900 × 560 image; JSON round-trips; no temp files left', () => {
      const png = fs.readFileSync(files.png!);
      expect([...png.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
      expect([png.readUInt32BE(16), png.readUInt32BE(20)]).toEqual([900, 560]);
      expect(png.length).toBeGreaterThan(10_000);
      expect(JSON.parse(fs.readFileSync(files.json!, 'utf8'))).toEqual(data);
      expect(fs.readdirSync(dir).sort()).toEqual(['tau_vs_k.html', 'tau_vs_k.json', 'tau_vs_k.png']);
    });
  });

  it('png: false needs no Chromium; without it a PNG fails naming the apt package', async () => {
    const sub = path.join(dir, 'nopng');
    const noBrowser = new FigureWriter({ executablePath: '/nonexistent/chromium' });
    const files = await noBrowser.write(heat, sub, 'mask', undefined, { png: false });
    expect(fs.readdirSync(sub)).toEqual(['mask.html']);
    expect(files).toEqual({ html: path.join(sub, 'mask.html') });
    await expect(noBrowser.write(heat, sub, 'mask2')).rejects.toThrow(/apt-get install -y chromium.*\{ png: false \}/);
    await expect(writeFigure(heat, sub, '../escape', undefined, { png: false })).rejects.toThrow(/plain file name/);
  });

  it('a figure written without PNG gets the same PNG later from its page (experiments/render_pngs.ts)', async () => {
    const sub = path.join(dir, 'later');
    await writer.write(tau, sub, 'tau', undefined, { png: false });
    const html = fs.readFileSync(path.join(sub, 'tau.html'), 'utf8');
    expect(figureFromHtml(html)).toEqual(tau);
    expect(() => figureFromHtml('<html></html>', 'x.html')).toThrow(/x\.html holds no figure written by this package/);
    const r = spawnSync(path.join(ROOT, 'node_modules', '.bin', 'tsx'), [path.join(ROOT, 'experiments', 'render_pngs.ts'), sub], { cwd: ROOT, encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('1 PNG written');
    expect(fs.readFileSync(path.join(sub, 'tau.png')).equals(await writer.png(tau))).toBe(true);
  }, 60_000);

  it('writeCsv: a header of every key, quoting where needed', () => {
    const file = path.join(dir, 'rows.csv');
    writeCsv([{ k: 1, method: 'a,b' }, { k: 2, note: 'say "hi"', extra: { x: 1 } }], file);
    expect(fs.readFileSync(file, 'utf8')).toBe('k,method,note,extra\n1,"a,b",,\n2,,"say ""hi""","{""x"":1}"\n');
  });
});
