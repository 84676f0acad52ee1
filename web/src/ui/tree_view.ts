/**
 * The draft tree of one step as SVG: the root (the last committed token) on the left, one column per depth, each
 * node's children below it in index order (rank order for head drafters); the accepted path is green and the step's bonus token (the target's own next
 * token after the path) hangs off its end, dashed.
 */
import type { StepEvent } from '../protocol';
import type { TokenText } from './token_text';

const SVG = 'http://www.w3.org/2000/svg';
const COL = 86;
const ROW = 24;
const W = 64;
const H = 18;

function el(name: string, attrs: Record<string, string | number>, text?: string): SVGElement {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

/** Draws `event`'s tree into `host`, replacing what was there. */
export function drawTree(host: HTMLElement, event: StepEvent, tokens: TokenText): void {
  const { tokens: ids, parents } = event.tree;
  const N = ids.length;
  const depth = [0];
  for (let i = 1; i < N; i++) depth.push(depth[parents[i]] + 1);
  const maxDepth = Math.max(...depth) + 1; // + the bonus column
  // Rows in depth-first order: a first child stays on its parent's row (so a chain is one line), later children open
  // new rows below the parent's subtree.
  const children: number[][] = ids.map(() => []);
  for (let i = 1; i < N; i++) children[parents[i]].push(i);
  const row = new Array<number>(N).fill(0);
  let rows = 0;
  const place = (i: number, r: number) => {
    row[i] = r;
    rows = Math.max(rows, r + 1);
    children[i].forEach((c, j) => place(c, j === 0 ? r : rows));
  };
  place(0, 0);
  const accepted = new Set(event.path);
  const last = event.path[event.path.length - 1];
  const bonusRow = children[last].length === 0 ? row[last] : rows++;
  const bonus = { x: (depth[last] + 1) * COL + 8, y: bonusRow * ROW + 8 };
  const svg = el('svg', { width: (maxDepth + 1) * COL + 16, height: rows * ROW + 16, role: 'img' });
  svg.setAttribute('aria-label', `draft tree: ${N - 1} draft nodes, ${event.path.length - 1} accepted`);
  const pos = (i: number) => ({ x: depth[i] * COL + 8, y: row[i] * ROW + 8 });
  const link = (a: { x: number; y: number }, b: { x: number; y: number }, on: boolean, dashed = false) =>
    svg.append(el('line', { x1: a.x + W, y1: a.y + H / 2, x2: b.x, y2: b.y + H / 2, stroke: on ? '#2e7d32' : '#bbb', 'stroke-width': on ? 2 : 1, ...(dashed ? { 'stroke-dasharray': '4 3' } : {}) }));
  for (let i = 1; i < N; i++) link(pos(parents[i]), pos(i), accepted.has(i) && accepted.has(parents[i]));
  link(pos(last), bonus, true, true);
  const node = (p: { x: number; y: number }, label: string, fill: string, stroke: string, tip: string, dashed = false) => {
    const g = el('g', {});
    g.append(el('title', {}, tip));
    g.append(el('rect', { x: p.x, y: p.y, width: W, height: H, rx: 4, fill, stroke, ...(dashed ? { 'stroke-dasharray': '4 3' } : {}) }));
    g.append(el('text', { x: p.x + W / 2, y: p.y + 13, 'text-anchor': 'middle' }, label));
    svg.append(g);
  };
  for (let i = 0; i < N; i++) {
    const fill = i === 0 ? '#e0e0e0' : accepted.has(i) ? '#c8e6c9' : '#ffffff';
    const what = i === 0 ? 'root (last committed token)' : `draft at depth ${depth[i]}${accepted.has(i) ? ', accepted' : ''}`;
    node(pos(i), tokens.label(ids[i]), fill, accepted.has(i) ? '#2e7d32' : '#999', `${what}: token ${ids[i]}`);
  }
  const b = event.committed[event.committed.length - 1];
  node(bonus, tokens.label(b), '#fff3c4', '#b58900', `bonus (the target's own token after the accepted path): token ${b}`, true);
  host.replaceChildren(svg);
}
