/**
 * Decoded text shown visibly: each decoding forward's committed tokens highlighted together (an HTML
 * string for notebooks), so a reader sees how many tokens each forward produced.
 */

/** One decoding forward: the text pieces it committed, in order, and how many of them were accepted drafts. */
export interface DecodeStep {
  tokens: string[];
  /** Accepted drafts among tokens; the first tokens.length − accepted are the model's own (first/bonus) token(s). */
  accepted: number;
}

/**
 * Steps from a decoder's per-forward commit counts (the `steps` of blockwise, Medusa, sequential and speculative
 * decoding): each forward's first token is the model's own certain/bonus token, the rest accepted drafts.
 * pieces: the generated tokens decoded one by one.
 */
export function splitSteps(pieces: readonly string[], counts: readonly number[]): DecodeStep[] {
  const total = counts.reduce((s, c) => s + c, 0);
  if (total !== pieces.length) {
    throw new Error(`splitSteps: the counts add up to ${total} tokens, but ${pieces.length} pieces were given`);
  }
  let end = 0;
  return counts.map((c) => {
    end += c;
    return { tokens: pieces.slice(end - c, end), accepted: Math.max(0, c - 1) };
  });
}

const escapeHtml = (s: string): string =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

/**
 * Decoded text with every forward's tokens on one background (alternating two colours per step), so a reader sees
 * how many tokens each forward committed; the model's own (first/bonus) token of each step is bold and underlined.
 * Not a Plotly figure: an HTML string (text escaped), for notebooks (tslab display.html) or any page.
 */
export function tokenHighlight(steps: readonly DecodeStep[]): string {
  const bg = ['#CCE2F5', '#F8D6B0'];
  const own = (t: string) => `<b style="text-decoration:underline">${t}</b>`;
  const tokens = steps.reduce((s, st) => s + st.tokens.length, 0);
  const spans = steps.map((st, i) => {
    const first = Math.max(0, st.tokens.length - st.accepted);
    const inner = st.tokens.map((t, j) => (j < first ? own(escapeHtml(t)) : escapeHtml(t))).join('');
    const tip = `step ${i + 1}: ${st.tokens.length} token(s), ${st.accepted} accepted draft(s)`;
    return `<span title="${tip}" style="background:${bg[i % 2]};border-radius:3px">${inner}</span>`;
  });
  const tau = steps.length ? (tokens / steps.length).toFixed(2) : '0';
  return (
    `<div class="mtp-tokens" style="font-family:'DejaVu Sans Mono',monospace;font-size:13px;line-height:1.7">` +
    `<div style="color:#555;margin-bottom:4px">${tokens} tokens in ${steps.length} forwards (τ = ${tau}); ` +
    `one background per forward, ${own('bold underlined')} = the model's own (first/bonus) token, ` +
    `the rest accepted drafts</div><div style="white-space:pre-wrap">${spans.join('')}</div></div>`
  );
}
