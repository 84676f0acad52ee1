/**
 * Progress of training jobs (Node only): what a run folder's metrics.jsonl says so far (read incrementally, a few
 * bytes per poll), and a display that keeps one line per job redrawn in place on a terminal, or prints lines as
 * things happen (and running jobs' lines every few seconds) into a log or pipe.
 */
import * as fs from 'node:fs';

/** The latest training state in a run's metrics.jsonl, read incrementally. */
export class MetricsTail {
  step = 0;
  loss: number | undefined;
  /** Next-token validation loss at the last evaluation. */
  val: number | undefined;
  private tps: number[] = [];
  private offset = 0;
  private rest = '';

  /** `since`: ignore the file while it is older than this (ms since the epoch): a log the job has not started yet. */
  constructor(
    readonly file: string,
    private readonly since = 0,
  ) {}

  /** Training tokens/s, mean of the last 20 steps (undefined before the first step). */
  get tokensPerSec(): number | undefined {
    return this.tps.length ? this.tps.reduce((a, b) => a + b, 0) / this.tps.length : undefined;
  }

  /** Reads what was appended since the last poll (starts over when the file was rewritten shorter). */
  poll(): void {
    let stat: fs.Stats;
    try {
      stat = fs.statSync(this.file);
    } catch {
      return;
    }
    if (stat.mtimeMs < this.since) return;
    if (stat.size < this.offset) {
      this.offset = 0;
      this.rest = '';
      this.step = 0;
      this.loss = this.val = undefined;
      this.tps = [];
    }
    if (stat.size === this.offset) return;
    const buf = Buffer.alloc(stat.size - this.offset);
    let fd: number | undefined;
    try {
      fd = fs.openSync(this.file, 'r');
      const n = fs.readSync(fd, buf, 0, buf.length, this.offset);
      this.offset += n;
      const lines = (this.rest + buf.subarray(0, n).toString('utf8')).split('\n');
      this.rest = lines.pop() ?? '';
      for (const line of lines) this.take(line);
    } catch {
      // replaced mid-read: the next poll reads the new file
    } finally {
      if (fd !== undefined) fs.closeSync(fd);
    }
  }

  private take(line: string): void {
    let row: { type?: string; step?: number; loss?: number; tokPerSec?: number; heads?: { loss: number }[] };
    try {
      row = JSON.parse(line);
    } catch {
      return;
    }
    if (row.type === 'train' && typeof row.step === 'number') {
      this.step = row.step;
      this.loss = row.loss;
      if (typeof row.tokPerSec === 'number') this.tps = [...this.tps.slice(-19), row.tokPerSec];
    } else if (row.type === 'eval') {
      this.val = row.heads?.[0]?.loss;
    }
  }
}

/** '45s', '3m05s', '2h04m'. */
export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** 'step 120/800 (15%) | loss 2.314 | val 2.401 | 4,210 tok/s' from a tail. */
export function describeProgress(t: MetricsTail, steps: number): string {
  const parts = [`step ${t.step}/${steps} (${Math.floor((100 * t.step) / Math.max(1, steps))}%)`];
  if (t.loss !== undefined) parts.push(`loss ${t.loss.toFixed(3)}`);
  if (t.val !== undefined) parts.push(`val ${t.val.toFixed(3)}`);
  const tps = t.tokensPerSec;
  if (tps !== undefined) parts.push(`${Math.round(tps).toLocaleString('en-US')} tok/s`);
  return parts.join(' | ');
}

/** Where progress goes: a stream, and whether it is a terminal (lines redrawn in place). */
export interface ProgressStream {
  write(text: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

/**
 * On a terminal, a block of lines redrawn in place with permanent messages printed above it; elsewhere, lines
 * printed one after another.
 */
export class ProgressDisplay {
  private drawn: string[] = [];

  constructor(
    private readonly out: ProgressStream,
    readonly tty: boolean,
  ) {}

  private fit(line: string): string {
    const width = (this.out.columns ?? 0) - 1;
    return this.tty && width > 10 && line.length > width ? `${line.slice(0, width - 1)}…` : line;
  }

  private clear(): void {
    if (this.tty && this.drawn.length) this.out.write(`\x1b[${this.drawn.length}A\x1b[0J`);
  }

  /** A permanent message (above the live block on a terminal). */
  print(text: string): void {
    const block = this.drawn;
    this.clear();
    this.out.write(text.endsWith('\n') ? text : `${text}\n`);
    if (this.tty && block.length) this.out.write(block.map((l) => `${l}\n`).join(''));
  }

  /** Terminal only: replaces the live block with these lines (elsewhere nothing is drawn). */
  draw(lines: string[]): void {
    if (!this.tty) return;
    this.clear();
    this.drawn = lines.map((l) => this.fit(l));
    this.out.write(this.drawn.map((l) => `${l}\n`).join(''));
  }

  /** Leaves the last block on screen as ordinary text. */
  close(): void {
    this.drawn = [];
  }
}
