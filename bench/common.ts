/** Shared by the benchmarks: machine description, medians, peak matMul throughput, result files. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { median } from '../src/util/median';

export interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  node: string;
  tfjs: string;
  platform: string;
  /** 1-minute load average when the run started (other work on the machine skews timings). */
  load: number;
}

export function machine(): Machine {
  return {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.cpus().length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    node: process.version,
    tfjs: tf.version.tfjs,
    platform: `${os.platform()} ${os.arch()}`,
    load: Math.round(os.loadavg()[0] * 100) / 100,
  };
}

/** Peak live tensors and tensor bytes (engine counts, absolute) while `fn` runs, from tf.profile. */
export async function peakMemory(fn: () => Promise<unknown>): Promise<{ tensors: number; bytes: number }> {
  const info = await tf.profile(async () => void (await fn()));
  const tensors = Math.max(tf.memory().numTensors, ...info.kernels.map((k) => k.totalTensorsSnapshot));
  return { tensors, bytes: info.peakBytes };
}

/** Bytes as MB with one decimal. */
export function mb(bytes: number): string {
  return (bytes / 2 ** 20).toFixed(1);
}

export { median };

/** Times an async function: `warmup` untimed calls, then `runs` timed ones (ms). */
export async function timeRuns(fn: () => Promise<void>, warmup: number, runs: number): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await fn();
  const ms: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    await fn();
    ms.push(performance.now() - t0);
  }
  return ms;
}

/**
 * Like timeRuns, and also this process's CPU time per run (user + system, ms). On a machine shared with other work,
 * wall time above CPU time shows how long the run waited for a core.
 */
export async function timeRunsCpu(fn: () => Promise<void>, warmup: number, runs: number): Promise<{ wall: number[]; cpu: number[] }> {
  for (let i = 0; i < warmup; i++) await fn();
  const wall: number[] = [];
  const cpu: number[] = [];
  for (let i = 0; i < runs; i++) {
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    await fn();
    wall.push(performance.now() - t0);
    const c = process.cpuUsage(c0);
    cpu.push((c.user + c.system) / 1000);
  }
  return { wall, cpu };
}

/** Achieved GFLOP/s of one n×n×n matMul with the result read back (median of `runs`): the backend's practical peak. */
export async function peakMatMulGflops(n = 1024, runs = 5): Promise<number> {
  const a = tf.randomNormal([n, n], 0, 1, 'float32', 1);
  const b = tf.randomNormal([n, n], 0, 1, 'float32', 2);
  const ms = await timeRuns(
    async () => {
      const c = tf.matMul(a, b);
      await c.data();
      c.dispose();
    },
    2,
    runs,
  );
  tf.dispose([a, b]);
  return (2 * n ** 3) / (median(ms) * 1e6);
}

/** Writes JSON results under bench/results/. */
export function writeResults(name: string, data: unknown): string {
  const dir = path.join(__dirname, 'results');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${name}.json`);
  fs.writeFileSync(file, JSON.stringify(data, null, 2) + '\n');
  return file;
}

/** Rows as an aligned Markdown table. */
export function markdownTable(header: string[], rows: (string | number)[][]): string {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  const line = (r: string[]) => `| ${r.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`;
  return [line(header), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...cells.slice(1).map(line)].join('\n');
}

/**
 * Replaces the README block between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->` with `text`,
 * so the performance section always shows the latest bench run.
 */
export function updateReadme(name: string, text: string): void {
  const file = path.join(__dirname, '..', 'README.md');
  const open = `<!-- bench:${name} -->`;
  const close = `<!-- /bench:${name} -->`;
  const readme = fs.readFileSync(file, 'utf8');
  const a = readme.indexOf(open);
  const b = readme.indexOf(close);
  if (a < 0 || b < a) throw new Error(`README.md has no ${open} … ${close} block`);
  const next = readme.slice(0, a + open.length) + '\n' + text.trim() + '\n' + readme.slice(b);
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, next);
  fs.renameSync(tmp, file);
}
