/**
 * The shared look of every mtp-lab figure: one colour per variant (the same in every figure, so a reader learns
 * "blue = parallel" once), the layout defaults and the figure type. Browser-safe: plain data, no plotly import.
 *
 * Colours are the Okabe–Ito palette (distinguishable with the common colour-vision deficiencies).
 */

/** A JSON value: what a Plotly spec is made of (no undefined, no functions, so it survives JSON.stringify). */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
export type JsonObject = { [key: string]: Json };

/** A Plotly figure spec: traces and layout, plain JSON (Plotly.newPlot(div, fig.data, fig.layout)). */
export interface Figure {
  data: JsonObject[];
  layout: JsonObject;
}

/** Default static size in CSS pixels (PNG export, notebook PNG fallback). */
export const FIGURE_SIZE = { width: 900, height: 560 } as const;

/** One colour per variant or decoding mode; a series takes the colour of the first of these words in its name. */
export const VARIANT_COLORS: Readonly<Record<string, string>> = {
  AR: '#000000',
  parallel: '#0072B2',
  sequential: '#D55E00',
  medusa: '#009E73',
  feature: '#6A3D9A',
  lookup: '#56B4E9',
  speculative: '#E69F00',
  lossy: '#CC79A7',
  theory: '#7F7F7F',
};

/** Other words that name one of the variants above (matched the same way). */
const ALIASES: Readonly<Record<string, string>> = {
  greedy: 'AR',
  baseline: 'AR',
  unverified: 'lossy',
  sampling: 'speculative',
};

/** Colours for series that name no known variant; picked by a hash of the name, so stable across figures. */
const FALLBACK_COLORS = ['#56B4E9', '#8C564B', '#7570B3', '#E7298A', '#66A61E', '#A6761D', '#1B9E77', '#B8860B'];

/** Marker symbols that tell apart several series of one variant within a figure. */
const SYMBOLS = ['circle', 'square', 'diamond', 'triangle-up', 'triangle-down', 'pentagon', 'hexagon', 'star'];

/** Neutral grey for reference lines (AR, ideal τ = k). */
export const REFERENCE_COLOR = '#555555';

const KEYWORDS: [RegExp, string][] = [...Object.keys(VARIANT_COLORS), ...Object.keys(ALIASES)].map((word) => [
  new RegExp(`(^|[^a-z0-9])${word.toLowerCase()}($|[^a-z0-9])`),
  VARIANT_COLORS[word] ?? VARIANT_COLORS[ALIASES[word]],
]);

/**
 * The colour of a series: its variant's colour when its name contains a variant word (case-insensitive, whole word,
 * the earliest in the name wins: 'medusa greedy' → medusa, 'AR' → AR, 'parallel k=4' → parallel); otherwise a fallback
 * colour chosen by a hash of the name.
 */
export function colorOf(series: string): string {
  const name = series.toLowerCase();
  let best: string | undefined;
  let at = Infinity;
  for (const [re, color] of KEYWORDS) {
    const m = re.exec(name);
    if (m && m.index < at) {
      at = m.index;
      best = color;
    }
  }
  if (best) return best;
  let h = 0;
  for (let i = 0; i < series.length; i++) h = (h * 31 + series.charCodeAt(i)) >>> 0;
  return FALLBACK_COLORS[h % FALLBACK_COLORS.length];
}

export interface SeriesStyle {
  color: string;
  /** Plotly marker symbol ('circle', 'square', …); append '-open' for an open marker. */
  symbol: string;
}

/**
 * Styles for the series of one figure, in order. The first series of each variant gets exactly the variant's colour
 * and a circle; later series of the same variant (e.g. 'parallel k=2' and 'parallel k=4') get a lighter or darker
 * shade of it and another marker symbol, so they stay apart while reading as one family.
 */
export function seriesStyles(names: readonly string[]): Map<string, SeriesStyle> {
  const seen = new Map<string, number>();
  const out = new Map<string, SeriesStyle>();
  for (const name of names) {
    if (out.has(name)) continue;
    const base = colorOf(name);
    const i = seen.get(base) ?? 0;
    seen.set(base, i + 1);
    out.set(name, { color: shade(base, i), symbol: SYMBOLS[i % SYMBOLS.length] });
  }
  return out;
}

/** The i-th shade of a colour: 0 = itself, then alternately lighter and darker, a little further each time. */
export function shade(hex: string, i: number): string {
  if (i === 0) return hex;
  const step = Math.ceil(i / 2) * 0.3;
  const toward = i % 2 === 1 ? 255 : 0;
  const t = Math.min(step, 0.75);
  const rgb = [1, 3, 5].map((o) => parseInt(hex.slice(o, o + 2), 16));
  return `#${rgb.map((c) => Math.round(c + (toward - c) * t).toString(16).padStart(2, '0')).join('')}`;
}

/** Axis defaults: a title (with units), light grid, a frame. */
export function axis(title: string, extra: JsonObject = {}): JsonObject {
  const out: JsonObject = {
    title: { text: title },
    showgrid: true,
    gridcolor: '#E5E5E5',
    zeroline: false,
    showline: true,
    linecolor: '#444444',
    mirror: true,
    ticks: 'outside',
    automargin: true,
    ...extra,
  };
  if (out.showgrid === false) delete out.gridcolor;
  return out;
}

/** Legend defaults: a white box with a thin border (plotly's default place, right of the plot, top). */
export const LEGEND: JsonObject = { bgcolor: 'rgba(255,255,255,0.85)', bordercolor: '#CCCCCC', borderwidth: 1 };

/**
 * Layout defaults shared by every figure: title, the two axes (made with axis()), white background, a legend, hover
 * on the nearest point; `extra` overrides any of them. The font lists DejaVu Sans first: it ships with Debian's
 * fontconfig (so headless Chromium has it) and covers the Greek and subscript letters (τ, αᵢ) used in titles.
 */
export function baseLayout(title: string, xaxis: JsonObject, yaxis: JsonObject, extra: JsonObject = {}): JsonObject {
  return {
    title: { text: title, x: 0.03, xanchor: 'left', font: { size: 17 } },
    font: { family: 'DejaVu Sans, Arial, sans-serif', size: 13, color: '#222222' },
    paper_bgcolor: '#FFFFFF',
    plot_bgcolor: '#FFFFFF',
    margin: { l: 80, r: 30, t: 70, b: 60 },
    xaxis,
    yaxis,
    showlegend: true,
    legend: LEGEND,
    hovermode: 'closest',
    ...extra,
  };
}
