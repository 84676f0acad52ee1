/**
 * One decoding lane on the page: the prompt, then every step's committed tokens on alternating backgrounds (the
 * step's own bonus token bold and underlined, the accepted drafts plain), and the lane's live statistics.
 */
import type { LaneStats } from '../protocol';
import { TokenText } from './token_text';

function fmt(x: number, digits = 2): string {
  return Number.isFinite(x) ? x.toFixed(digits) : '–';
}

/** The statistics line: tokens, forwards, τ, αᵢ and tokens/s. */
export function statsLine(s: LaneStats): string {
  const alpha = s.alpha.length ? `  α ${s.alpha.map((a) => fmt(a)).join(' / ')}` : '';
  return `${s.generated} tokens, ${s.forwards} forwards  τ ${fmt(s.tau)}${alpha}  ${fmt(s.tokensPerSec, 1)} tokens/s`;
}

export class LaneView {
  private readonly title: HTMLElement;
  private readonly stats: HTMLElement;
  private readonly text: HTMLElement;
  private tokens: TokenText | null = null;
  private steps = 0;

  constructor(readonly root: HTMLElement) {
    this.title = root.querySelector('.lane-title')!;
    this.stats = root.querySelector('.stats')!;
    this.text = root.querySelector('.text')!;
  }

  /** Clears the lane and shows `prompt`. */
  reset(title: string, prompt: string, tokens: TokenText, visible = true): void {
    this.root.classList.toggle('hidden', !visible);
    this.title.textContent = title;
    this.stats.textContent = '';
    this.text.replaceChildren();
    const p = document.createElement('span');
    p.className = 'prompt';
    p.textContent = prompt;
    this.text.append(p);
    this.tokens = tokens;
    this.steps = 0;
  }

  /** Appends one step's committed tokens (accepted drafts, then the bonus). */
  addStep(committed: readonly number[], stats: LaneStats): void {
    const span = document.createElement('span');
    span.className = `s${this.steps++ % 2}`;
    span.title = `step ${this.steps}: ${committed.length} token(s), ${committed.length - 1} accepted draft(s)`;
    const drafts = this.tokens!.next(committed.slice(0, -1));
    const own = document.createElement('b');
    own.textContent = this.tokens!.next(committed.slice(-1));
    span.append(drafts, own);
    this.text.append(span);
    this.stats.textContent = statsLine(stats);
  }
}
