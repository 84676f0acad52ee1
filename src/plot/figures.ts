/**
 * Figure builders (docs/algorithms.md, figures): result data in, Plotly figure spec out. Pure functions returning plain
 * JSON, so they are tested as data, run unchanged in Node, the browser and tslab, and need no plotly import (render a
 * spec with Plotly.newPlot(div, fig.data, fig.layout), or src/plot/write.ts / notebook.ts). Metrics follow
 * docs/algorithms.md, metrics.
 */
import { Figure, Json, JsonObject, LEGEND, REFERENCE_COLOR, VARIANT_COLORS, axis, baseLayout, seriesStyles } from './theme';

/** Plotly draws null as a gap; NaN and ±Infinity are not JSON, so they become gaps. */
const num = (x: number): number | null => (Number.isFinite(x) ? x : null);

/** Distinct series names in order of first appearance. */
const seriesOf = (rows: readonly { series: string }[]): string[] => [...new Set(rows.map((r) => r.series))];

/** The numbers' [min, max] widened by `pad` of the span on each side (a fixed pad when they are all equal). */
function paddedRange(values: readonly number[], pad = 0.08): [number, number] {
  const v = values.filter(Number.isFinite);
  const lo = Math.min(...v);
  const hi = Math.max(...v);
  const d = hi > lo ? (hi - lo) * pad : Math.max(Math.abs(hi) * 0.1, 0.1);
  return [lo - d, hi + d];
}

const HOVER_NAME = '%{fullData.name}';

export interface QualitySpeedPoint {
  /** Variant or decoding mode, e.g. 'parallel', 'medusa', 'parallel (unverified)'. */
  series: string;
  /** Text shown beside the point, e.g. 'k=4'. */
  label: string;
  /** Wall-clock tokens/s ÷ greedy AR tokens/s on the same model, backend and prompts (×). */
  speedup: number;
  quality: number;
  /** True when the output equals the reference decoder's (verified decoding); false for unverified emission. */
  lossless: boolean;
}

/**
 * The headline figure: quality against wall-clock speedup, one line per series through its points (in the given
 * order, usually increasing k). Lossless points are filled markers, lossy ones open; a series whose points are all
 * lossy is drawn dashed. A dotted vertical line marks greedy AR at 1×. Point labels take the series colour and
 * alternate above / below by series, to keep neighbouring series' labels apart.
 */
export function qualityVsSpeed(
  points: readonly QualitySpeedPoint[],
  opts: { qualityTitle: string; title?: string; lowerIsBetter?: boolean },
): Figure {
  const names = seriesOf(points);
  const styles = seriesStyles(names);
  const data = names.map((name, i): JsonObject => {
    const pts = points.filter((p) => p.series === name);
    const { color, symbol } = styles.get(name)!;
    return {
      type: 'scatter',
      mode: 'lines+markers+text',
      name,
      x: pts.map((p) => num(p.speedup)),
      y: pts.map((p) => num(p.quality)),
      text: pts.map((p) => p.label),
      textposition: i % 2 === 0 ? 'top center' : 'bottom center',
      textfont: { color },
      customdata: pts.map((p) => (p.lossless ? 'lossless' : 'lossy')),
      hovertemplate: `${HOVER_NAME} %{text}<br>speedup %{x:.2f}×<br>quality %{y:.4g}<br>%{customdata}<extra></extra>`,
      marker: { color, size: 11, symbol: pts.map((p) => (p.lossless ? symbol : `${symbol}-open`)), line: { width: 2 } },
      line: { color, width: 2, dash: pts.every((p) => !p.lossless) ? 'dash' : 'solid' },
      cliponaxis: false,
    };
  });
  const xRange = paddedRange([1, ...points.map((p) => p.speedup)]);
  const yTitle = opts.lowerIsBetter ? `${opts.qualityTitle} — lower is better` : opts.qualityTitle;
  const title = opts.title ?? `Quality vs wall-clock speedup: ${names.join(', ')}`;
  const arLine = { color: REFERENCE_COLOR, width: 1.5, dash: 'dot' };
  return {
    data,
    layout: baseLayout(title, axis('wall-clock speedup vs greedy AR (×)', { range: xRange }), axis(yTitle), {
      legend: { ...LEGEND, title: { text: 'filled = lossless, open = lossy' } },
      shapes: [{ type: 'line', xref: 'x', yref: 'paper', x0: 1, x1: 1, y0: 0, y1: 1, line: arLine }],
      annotations: [
        { xref: 'x', yref: 'paper', x: 1, y: 1, text: 'AR (1×)', showarrow: false, xanchor: 'left', yanchor: 'top' },
      ],
    }),
  };
}

export interface TauPoint {
  series: string;
  /** Tokens drafted per forward (heads used). */
  k: number;
  /** τ: tokens committed per verification forward, bonus token included (AR = 1). */
  tau: number;
}

/**
 * τ against k: measured τ as markers, the theory curve (e.g. E[τ] = 1 + Σⱼ Πᵢ≤ⱼ αᵢ from measured αᵢ) as a dashed line
 * of the same colour, and the dotted ideal τ = k (every draft accepted) as the ceiling.
 */
export function tauVsK(
  measured: readonly TauPoint[],
  theory: readonly TauPoint[],
  opts: { title?: string; yTitle?: string; ideal?: boolean } = {},
): Figure {
  const all = [...measured, ...theory];
  const names = seriesOf(all);
  const styles = seriesStyles(names);
  const byK = (rows: readonly TauPoint[], name: string) => rows.filter((r) => r.series === name).sort((a, b) => a.k - b.k);
  const maxK = Math.max(1, ...all.map((r) => r.k).filter(Number.isFinite));
  const ideal = opts.ideal ?? true;
  const maxTau = Math.max(ideal ? maxK : 1, ...all.map((r) => r.tau).filter(Number.isFinite));
  const hovertemplate = `${HOVER_NAME}<br>k = %{x}<br>y = %{y:.3f}<extra></extra>`;
  const data: JsonObject[] = ideal
    ? [
        {
          type: 'scatter', mode: 'lines', name: 'ideal τ = k', x: [1, maxK], y: [1, maxK], hoverinfo: 'skip',
          line: { color: REFERENCE_COLOR, width: 1.5, dash: 'dot' },
        },
      ]
    : [];
  for (const name of names) {
    const { color, symbol } = styles.get(name)!;
    const m = byK(measured, name);
    const t = byK(theory, name);
    const xy = (rows: TauPoint[]) => ({ x: rows.map((r) => r.k), y: rows.map((r) => num(r.tau)) });
    if (m.length) {
      data.push({
        type: 'scatter', mode: 'markers', name, legendgroup: name, ...xy(m),
        marker: { color, symbol, size: 11 }, hovertemplate, cliponaxis: false,
      });
    }
    if (t.length) {
      data.push({
        type: 'scatter', mode: 'lines', name: `${name} (theory)`, legendgroup: name, ...xy(t),
        line: { color, width: 2, dash: 'dash' }, hovertemplate,
      });
    }
  }
  const title = opts.title ?? 'Tokens per forward τ vs k: measured (markers) and theory (dashed)';
  return {
    data,
    layout: baseLayout(
      title,
      axis('k (tokens drafted per forward)', { dtick: 1, range: [0.5, maxK + 0.5] }),
      axis(opts.yTitle ?? 'τ (tokens committed per forward)', { range: [0, maxTau * 1.08] }),
      { legend: { ...LEGEND, x: 0.02, xanchor: 'left', y: 0.98, yanchor: 'top' } },
    ),
  };
}

/**
 * Per-head acceptance against head index, one line per series: αᵢ = P(draft i accepted | drafts < i accepted), or any
 * other per-head probability such as top-1 accuracy (pass yTitle). NaN (a head never reached) is left as a gap.
 */
export function acceptanceByHead(
  rows: readonly { series: string; head: number; alpha: number }[],
  opts: { title?: string; yTitle?: string; xTitle?: string } = {},
): Figure {
  const names = seriesOf(rows);
  const styles = seriesStyles(names);
  const data = names.map((name): JsonObject => {
    const r = rows.filter((x) => x.series === name).sort((a, b) => a.head - b.head);
    const { color, symbol } = styles.get(name)!;
    return {
      type: 'scatter', mode: 'lines+markers', name, x: r.map((x) => x.head), y: r.map((x) => num(x.alpha)),
      marker: { color, symbol, size: 10 }, line: { color, width: 2 }, cliponaxis: false,
      hovertemplate: `${HOVER_NAME}<br>head %{x}: %{y:.3f}<extra></extra>`,
    };
  });
  const yTitle = opts.yTitle ?? 'αᵢ = P(draft i accepted | drafts < i accepted)';
  return {
    data,
    layout: baseLayout(
      opts.title ?? `Per-head acceptance by head: ${names.join(', ')}`,
      axis(opts.xTitle ?? 'head i (draft position)', opts.xTitle ? {} : { dtick: 1 }),
      axis(yTitle, { range: [0, 1], tickformat: '.1f' }),
    ),
  };
}

export interface Curve {
  series: string;
  step: number[];
  loss: number[];
  /** 'val' curves are dashed with markers; train and val of one series share a colour. */
  kind?: 'train' | 'val';
}

/** Loss against optimizer step; each series one colour, its validation curve dashed. */
export function trainingCurves(
  curves: readonly Curve[],
  opts: { title?: string; yTitle?: string; logY?: boolean } = {},
): Figure {
  const names = seriesOf(curves);
  const styles = seriesStyles(names);
  const data = curves.map((c): JsonObject => {
    if (c.step.length !== c.loss.length) {
      throw new Error(`trainingCurves: '${c.series}' has ${c.step.length} steps but ${c.loss.length} losses`);
    }
    const { color, symbol } = styles.get(c.series)!;
    const val = c.kind === 'val';
    return {
      type: 'scatter', mode: val ? 'lines+markers' : 'lines', name: c.kind ? `${c.series} (${c.kind})` : c.series,
      legendgroup: c.series, x: c.step, y: c.loss.map(num),
      line: { color, width: 2, dash: val ? 'dash' : 'solid' },
      ...(val ? { marker: { color, symbol, size: 7 } } : {}),
      hovertemplate: `${HOVER_NAME}<br>step %{x}: %{y:.4f}<extra></extra>`,
    };
  });
  return {
    data,
    layout: baseLayout(
      opts.title ?? `Training loss vs step: ${names.join(', ')} (val dashed)`,
      axis('step (optimizer updates)'),
      axis(opts.yTitle ?? 'loss (nats/token)', opts.logY ? { type: 'log' } : {}),
    ),
  };
}

/** Paths sorted by (length, lexicographic), the node order of docs/algorithms.md, tree buffers (node 0 = root). */
function sortPaths(choices: readonly (readonly number[])[]): number[][] {
  const cmp = (a: number[], b: number[]) => {
    if (a.length !== b.length) return a.length - b.length;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return a[i] - b[i];
    return 0;
  };
  return choices.map((p) => [...p]).sort(cmp);
}

/**
 * A Medusa tree (docs/algorithms.md, tree buffers) as a node-link diagram: x = depth (head d's candidates at depth d),
 * the root (the base model's token) at depth 0, siblings ordered by rank top to bottom, each parent centred on its children. Hover shows a
 * node's path and, given per-head top-i accuracies [head][rank], the product of accuracies along the path — Medusa's
 * estimate that the path is accepted; nodes are then coloured by it, and the title gives the sum over nodes
 * (expected accepted drafts per step, τ ≈ 1 + that). Trees with many leaves get a taller layout.
 */
export function treeFigure(
  choices: readonly (readonly number[])[],
  opts: { accuracies?: number[][]; title?: string } = {},
): Figure {
  const paths = sortPaths(choices);
  const key = (p: readonly number[]) => p.join(',');
  const index = new Map<string, number>([['', 0]]);
  paths.forEach((p, i) => {
    const parent = p.slice(0, -1);
    if (p.length === 0) throw new Error('treeFigure: the empty path is the root; leave it out of choices');
    if (index.has(key(p))) throw new Error(`treeFigure: path [${p}] appears twice`);
    if (!index.has(key(parent))) throw new Error(`treeFigure: path [${p}] has no parent [${parent}] in choices`);
    index.set(key(p), i + 1);
  });
  const nodes = [[], ...paths];
  const parentOf = (n: number) => index.get(key(nodes[n].slice(0, -1)))!;
  const children = nodes.map(() => [] as number[]);
  for (let n = 1; n < nodes.length; n++) children[parentOf(n)].push(n);
  const y = new Array<number>(nodes.length).fill(0); // leaves 0, 1, 2, … in depth-first order
  let leaves = 0;
  const place = (n: number): number => {
    const c = children[n];
    y[n] = c.length === 0 ? leaves++ : (c.map(place)[0] + y[c[c.length - 1]]) / 2;
    return y[n];
  };
  place(0);

  const acc = opts.accuracies;
  const prob = nodes.map((p) => p.reduce((s, r, d) => s * (acc?.[d]?.[r] ?? 0), 1));
  const ids = nodes.map((_, n) => n).slice(1);
  const rank = (n: number) => nodes[n][nodes[n].length - 1];
  const hover = (n: number) =>
    `path [${nodes[n].join(', ')}]<br>depth ${nodes[n].length}: rank ${rank(n)} (top-${rank(n) + 1}) ` +
    `of head ${nodes[n].length}` + (acc ? `<br>P(path accepted) ≈ ${prob[n].toFixed(3)}` : '');
  const edges = { x: [] as (number | null)[], y: [] as (number | null)[] };
  for (const n of ids) {
    edges.x.push(nodes[parentOf(n)].length, nodes[n].length, null);
    edges.y.push(y[parentOf(n)], y[n], null);
  }
  const medusa = VARIANT_COLORS.medusa;
  const marker: JsonObject = acc
    ? {
        size: 13, color: ids.map((n) => prob[n]), cmin: 0, cmax: 1, colorscale: [[0, '#F2FAF6'], [1, '#00543A']],
        line: { color: medusa, width: 1.5 },
        colorbar: { title: { text: 'P(path accepted)' }, len: 0.55, y: 0, yanchor: 'bottom' },
      }
    : { size: 13, color: medusa, line: { color: '#FFFFFF', width: 1 } };

  const depth = Math.max(0, ...paths.map((p) => p.length));
  const expected = ids.reduce((s, n) => s + prob[n], 0);
  const title =
    opts.title ??
    `Medusa tree: ${nodes.length} nodes (root + ${paths.length} candidates), depth ${depth}` +
      (acc ? `; E[accepted drafts] ≈ ${expected.toFixed(2)}` : '');
  const layout = baseLayout(
    title,
    axis('depth d (candidates from Medusa head d; 0 = root)', { dtick: 1, range: [-0.5, depth + 0.5], showgrid: false }),
    axis('candidates by rank (top-1 first)', { autorange: 'reversed', showticklabels: false, showgrid: false, ticks: '' }),
  );
  if (leaves > 24) layout.height = 140 + 18 * leaves;
  const hovertemplate = '%{hovertext}<extra></extra>';
  return {
    data: [
      {
        type: 'scatter', mode: 'lines', name: 'edge (parent → child)', ...edges, hoverinfo: 'skip',
        line: { color: '#9A9A9A', width: 1.5 },
      },
      {
        type: 'scatter', mode: 'markers+text', name: "root (base model's token)", x: [0], y: [y[0]], text: ['root'],
        textposition: 'middle left', hovertext: ["root: the base model's token"], hovertemplate,
        marker: { size: 16, color: VARIANT_COLORS.AR }, cliponaxis: false,
      },
      {
        type: 'scatter', mode: 'markers+text', name: 'candidate (label = rank)', x: ids.map((n) => nodes[n].length),
        y: ids.map((n) => y[n]), text: ids.map((n) => String(rank(n))), textposition: 'middle right',
        textfont: { size: 10 }, hovertext: ids.map(hover), hovertemplate, marker, cliponaxis: false,
      },
    ],
    layout,
  };
}

/**
 * An attention mask as a heatmap: row q = query, column j = key, 1 = may attend (coloured), 0 = blocked (light).
 * Rows run top to bottom (y reversed) as in the matrix; the colour bar is the legend. labels name the rows (and the
 * columns when the mask is square, unless keyLabels are given); ticks sit at integer positions, so repeated labels
 * stay separate cells.
 */
export function maskHeatmap(
  mask: readonly (readonly number[])[],
  opts: { title?: string; labels?: string[]; keyLabels?: string[] } = {},
): Figure {
  const rows = mask.length;
  const cols = rows ? mask[0].length : 0;
  if (mask.some((r) => r.length !== cols)) throw new Error('maskHeatmap: every row of the mask must have the same length');
  const colLabels = opts.keyLabels ?? (rows === cols ? opts.labels : undefined);
  const ticks = (labels: string[] | undefined, n: number, tickangle: number): JsonObject =>
    labels ? { tickvals: [...Array(n).keys()], ticktext: labels, tickangle } : {};
  const z: Json[] = mask.map((r) => [...r]);
  const [blocked, open] = ['#F0F0F0', VARIANT_COLORS.parallel];
  const title = opts.title ?? `Attention mask (${rows} queries × ${cols} keys): 1 = may attend, 0 = blocked`;
  const square = { showgrid: false, constrain: 'domain' };
  return {
    data: [
      {
        type: 'heatmap', name: 'mask', z, x: [...Array(cols).keys()], y: [...Array(rows).keys()],
        zmin: 0, zmax: 1, xgap: 1, ygap: 1, colorscale: [[0, blocked], [0.5, blocked], [0.5, open], [1, open]],
        colorbar: { tickvals: [0.25, 0.75], ticktext: ['0 = blocked', '1 = may attend'], len: 0.35, y: 1, yanchor: 'top' },
        text: mask.map((r) => r.map((v) => (v ? 'may attend' : 'blocked'))),
        hovertemplate: 'query %{y} → key %{x}: %{text}<extra></extra>',
      },
    ],
    layout: baseLayout(
      title,
      axis('key j (token index, attended to)', { ...square, ...ticks(colLabels, cols, cols > 8 ? -60 : 0) }),
      axis('query q (token index, attending)', {
        ...square, autorange: 'reversed', scaleanchor: 'x', ...ticks(opts.labels, rows, 0),
      }),
    ),
  };
}
