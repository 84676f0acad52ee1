/**
 * A run's metrics log (Node only): `metrics.jsonl`, one JSON object per line, each with its `step` (`type` train,
 * eval or error). On `--resume` the lines of steps after the checkpoint are dropped (those steps are rerun), and a
 * torn last line — a process killed mid-append — is dropped too instead of blocking the resume.
 */
import * as fs from 'node:fs';
import { errorCode, fsError, writeFileDurable } from '../util/files';

export class MetricsLog {
  constructor(readonly file: string) {}

  /** Starts an empty log. */
  reset(): void {
    writeFileDurable(this.file, '');
  }

  /**
   * Keeps the lines of steps ≤ `step`; returns how many were dropped and whether a torn last line was repaired. A
   * missing log is started empty; an unreadable line other than the last is an error naming the file and line.
   */
  truncateAfter(step: number): { dropped: number; repairedTornLine: boolean } {
    let text: string;
    try {
      text = fs.readFileSync(this.file, 'utf8');
    } catch (e) {
      if (errorCode(e) !== 'ENOENT') throw fsError('read the metrics log', this.file, e);
      this.reset();
      return { dropped: 0, repairedTornLine: false };
    }
    const lines = text.split('\n');
    if (lines[lines.length - 1] === '') lines.pop();
    const kept: string[] = [];
    let dropped = 0;
    let repairedTornLine = false;
    lines.forEach((line, i) => {
      let row: { step?: unknown };
      try {
        row = JSON.parse(line) as { step?: unknown };
      } catch {
        if (i === lines.length - 1) {
          repairedTornLine = true; // killed mid-append
          return;
        }
        throw new Error(`${this.file} line ${i + 1} is not valid JSON (${JSON.stringify(line.slice(0, 60))}); fix or delete that line, then resume`);
      }
      if (typeof row?.step !== 'number') throw new Error(`${this.file} line ${i + 1} has no numeric "step" field; fix or delete that line, then resume`);
      if (row.step <= step) kept.push(line);
      else dropped += 1;
    });
    if (dropped > 0 || repairedTornLine || !text.endsWith('\n') && text !== '') writeFileDurable(this.file, kept.map((l) => l + '\n').join(''));
    return { dropped, repairedTornLine };
  }

  /** Appends one line; a write error (disk full, read-only) names the file. */
  append(row: { type: string; step: number } & Record<string, unknown>): void {
    try {
      fs.appendFileSync(this.file, JSON.stringify(row) + '\n');
    } catch (e) {
      throw fsError('append to the metrics log', this.file, e);
    }
  }
}
