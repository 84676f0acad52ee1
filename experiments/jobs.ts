/**
 * Training jobs in parallel (Node only): independent runs, each `mtp train` in a child process of its own (tfjs-wasm
 * runs one thread per process, so parallel training means several processes), `--jobs` of them at a time.
 *
 * A job is a config, a run folder and optionally a checkpoint to start from (`--init`) and jobs to wait for (the
 * run that writes that checkpoint). Before a job starts, its run folder decides (run_state.ts): a finished run of the
 * same config is skipped, an unfinished one is resumed (`--resume`), one of another config is trained afresh when
 * `replace` is set (else the job fails, naming the differing fields). The child gets the whole config as flags
 * (config_args.ts), so what it trains does not depend on presets or defaults; when it exits the checkpoint is checked
 * to hold that config at its last step. The CLI brings the rest: durable checkpoints, the run lock, a clean stop on
 * SIGTERM (a stopped job resumes on the next call).
 *
 * Progress: one line per job from its metrics.jsonl (step/steps, loss, validation loss, tokens/s), redrawn in place on
 * a terminal, else printed when a job starts or ends and every few seconds while it runs. A failed job is reported
 * with the end of its output (the whole of it is in `<run folder>/train.log`) and the others go on; a job waiting
 * for a failed one is not run. The result says whether every job succeeded.
 */
import { ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Config } from '../src/config';
import { makeDir } from '../src/util/files';
import { describeMachine } from '../src/zoo/machine';
import { configArgs, shellQuote } from './config_args';
import { describeProgress, formatDuration, MetricsTail, ProgressDisplay, ProgressStream } from './job_progress';
import { runState } from './run_state';

const ROOT = path.resolve(__dirname, '..');
const CLI = path.join(ROOT, 'src', 'cli', 'main.ts');
/** Child output kept in memory for the report of a failure (the whole output goes to train.log). */
const TAIL_LINES = 40;

export interface TrainJob {
  /** Unique among the jobs; names the job in progress lines and in `after`. */
  name: string;
  /** The full config (train.backend is the backend the child trains on). */
  config: Config;
  /** Run folder (config.json, metrics.jsonl, model.ckpt, train.log, job.json). */
  dir: string;
  /** Checkpoint whose same-named, same-shaped weights start a fresh run (`mtp train --init`; Medusa heads then copy the LM head). */
  init?: string;
  /** Jobs that must have succeeded before this one starts (e.g. the one that writes `init`). */
  after?: string[];
}

export type JobStatus = 'trained' | 'skipped' | 'failed' | 'stopped';

export interface JobResult {
  name: string;
  status: JobStatus;
  dir: string;
  /** The `mtp train` command of the job (without --resume / --overwrite; paths relative to the repository root). */
  command: string;
  /** Wall-clock seconds of the child (0 when skipped or not run). */
  seconds: number;
  /** What went wrong: the cause, then the end of the job's output. */
  error?: string;
}

export interface PoolResult {
  /** True when every job was trained or skipped. */
  ok: boolean;
  results: JobResult[];
  seconds: number;
}

export interface PoolOptions {
  /** Jobs running at once [default: defaultJobs(), the cores but one, at least 1]. */
  jobs?: number;
  /** Train every job afresh, even a finished one (`--overwrite`) [default: false]. */
  fresh?: boolean;
  /** A run folder holding a checkpoint of another config is trained afresh [default: false: the job fails, naming the fields]. */
  replace?: boolean;
  /** Where progress goes [default: process.stdout]. */
  out?: ProgressStream;
  /** Redraw lines in place [default: whether `out` is a terminal]. */
  tty?: boolean;
  /** Milliseconds between progress lines of running jobs when not a terminal [default: 5000]. */
  intervalMs?: number;
  /** SIGINT / SIGTERM stop the running jobs cleanly (they checkpoint; the next call resumes them) [default: true]. */
  handleSignals?: boolean;
  /** Where the jobs run, recorded in each run folder's job.json [default: describeMachine(backend)]. */
  machine?: string;
  /** Called as each job ends trained or skipped, before jobs waiting for it start; a throw fails the job. */
  onJobEnd?: (result: JobResult, job: TrainJob) => void | Promise<void>;
}

/** The cores but one (one is left for the pool, the progress display and the system), at least 1. */
export function defaultJobs(): number {
  return Math.max(1, os.availableParallelism() - 1);
}

/** A `--jobs` value: an integer ≥ 1 (undefined: defaultJobs()). */
export function parseJobs(value: unknown): number {
  if (value === undefined) return defaultJobs();
  const n = typeof value === 'string' && value.trim() !== '' ? Number(value) : value;
  if (typeof n !== 'number' || !Number.isInteger(n) || n < 1) {
    throw new Error(`--jobs must be an integer ≥ 1 (training processes at once; default: the cores but one = ${defaultJobs()}), got ${typeof value === 'string' ? JSON.stringify(value) : String(value)}`);
  }
  return n;
}

/** A path as written in commands: relative to the repository root when inside it. */
function shown(p: string): string {
  const rel = path.relative(ROOT, path.resolve(p));
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : path.resolve(p);
}

/** The `mtp train` flags of a job: the whole config, the run folder and the checkpoint to start from. */
export function jobArgs(job: TrainJob, display = false): string[] {
  const where = (p: string) => (display ? shown(p) : path.resolve(p));
  return ['train', ...configArgs(job.config), `--out=${where(job.dir)}`, ...(job.init ? [`--init=${where(job.init)}`] : [])];
}

/** The command that trains a job, as a user would type it. */
export function jobCommand(job: TrainJob): string {
  return ['npm', 'run', 'mtp', '--', ...jobArgs(job, true)].map(shellQuote).join(' ');
}

/** Throws on duplicate names, unknown `after` names and cycles. */
function checkJobs(jobs: TrainJob[]): void {
  const byName = new Map<string, TrainJob>();
  for (const j of jobs) {
    if (byName.has(j.name)) throw new Error(`two jobs are named '${j.name}'; job names must be unique`);
    byName.set(j.name, j);
  }
  for (const j of jobs) {
    for (const a of j.after ?? []) if (!byName.has(a)) throw new Error(`job '${j.name}' waits for '${a}', which is not among the jobs (${[...byName.keys()].join(', ')})`);
  }
  const state = new Map<string, 'visiting' | 'done'>();
  const visit = (name: string, chain: string[]) => {
    if (state.get(name) === 'done') return;
    if (state.get(name) === 'visiting') throw new Error(`jobs wait for each other in a cycle: ${[...chain, name].join(' → ')}`);
    state.set(name, 'visiting');
    for (const a of byName.get(name)!.after ?? []) visit(a, [...chain, name]);
    state.set(name, 'done');
  };
  for (const j of jobs) visit(j.name, []);
}

interface Running {
  child: ChildProcess;
  tail: MetricsTail;
  output: string[];
  started: number;
  done: Promise<void>;
  lastPrintedStep: number;
}

/** Runs the jobs, `jobs` at a time, respecting `after`; resolves when all have ended (see the file comment). */
export async function runJobs(jobs: TrainJob[], opts: PoolOptions = {}): Promise<PoolResult> {
  checkJobs(jobs);
  const width = parseJobs(opts.jobs);
  const out = opts.out ?? process.stdout;
  const display = new ProgressDisplay(out, opts.tty ?? Boolean(out.isTTY));
  const interval = display.tty ? 1000 : (opts.intervalMs ?? 5000);
  const t0 = Date.now();
  const results = new Map<string, JobResult>();
  const running = new Map<string, Running>();
  const ending = new Set<string>();
  const waiting = [...jobs];
  const nameWidth = Math.min(28, Math.max(...jobs.map((j) => j.name.length), 4));
  let stopping: string | undefined;

  const stamp = () => `[${formatDuration(Date.now() - t0).padStart(6)}]`;
  const label = (name: string) => name.padEnd(nameWidth);
  const lineOf = (job: TrainJob): string => {
    const r = results.get(job.name);
    const run = running.get(job.name);
    if (run) return `${label(job.name)}  ${describeProgress(run.tail, job.config.train.steps)} | ${formatDuration(Date.now() - run.started)}`;
    if (ending.has(job.name)) return `${label(job.name)}  finishing`;
    if (!r) {
      const pending = (job.after ?? []).filter((a) => !results.has(a));
      return `${label(job.name)}  ${pending.length ? `waiting for ${pending.join(', ')}` : 'queued'}`;
    }
    const took = r.seconds ? ` in ${formatDuration(r.seconds * 1000)}` : '';
    const what = { trained: 'trained', skipped: 'skipped: already trained with this config', failed: 'FAILED', stopped: 'stopped' }[r.status];
    return `${label(job.name)}  ${what}${took}`;
  };
  const redraw = () => display.draw([...jobs.map(lineOf), `${stamp()} ${summary()}`]);
  const summary = () => {
    const count = (s: JobStatus) => [...results.values()].filter((r) => r.status === s).length;
    const parts = [`${jobs.length} jobs`, `${running.size} running`, `${count('trained')} trained`, `${count('skipped')} skipped`];
    if (count('failed')) parts.push(`${count('failed')} failed`);
    if (count('stopped')) parts.push(`${count('stopped')} stopped`);
    return parts.join(', ');
  };
  const event = (job: TrainJob) => {
    if (display.tty) redraw();
    else display.print(`${stamp()} ${lineOf(job)}`);
  };

  const finish = async (job: TrainJob, result: JobResult) => {
    if ((result.status === 'trained' || result.status === 'skipped') && opts.onJobEnd) {
      ending.add(job.name);
      try {
        await opts.onJobEnd(result, job);
      } catch (e) {
        result.error = `after ${result.status === 'skipped' ? 'the run was found trained' : 'training'}: ${(e as Error).message}`;
        result.status = 'failed';
      }
      ending.delete(job.name);
    }
    results.set(job.name, result);
    event(job);
    if (result.status === 'failed') display.print(`--- ${job.name} failed ---\n${result.error}\n---`);
  };

  const start = async (job: TrainJob): Promise<void> => {
    const command = jobCommand(job);
    const base: JobResult = { name: job.name, status: 'failed', dir: job.dir, command, seconds: 0 };
    let mode: string[] = [];
    try {
      const state = opts.fresh ? { state: 'fresh' as const } : runState(job.dir, job.config);
      if (state.state === 'finished') return finish(job, { ...base, status: 'skipped' });
      if (state.state === 'partial') mode = ['--resume'];
      if (state.state === 'fresh') mode = ['--overwrite'];
      if (state.state === 'other') {
        if (!opts.replace) {
          throw new Error(`${job.dir} holds a checkpoint (step ${state.step}) of another config:\n  - ${state.differences.join('\n  - ')}\nmove it away, or retrain it (--fresh)`);
        }
        mode = ['--overwrite'];
      }
    } catch (e) {
      return finish(job, { ...base, error: (e as Error).message });
    }
    let log: fs.WriteStream;
    try {
      makeDir(job.dir, 'the run folder');
      log = fs.createWriteStream(path.join(job.dir, 'train.log'), { flags: 'a' });
      log.on('error', () => undefined); // the log is a copy: the report keeps the output's end, and the run its own files
    } catch (e) {
      return finish(job, { ...base, error: (e as Error).message });
    }
    log.write(`=== ${new Date().toISOString()} ${command} ${mode.join(' ')}\n`);
    const args = ['--import', 'tsx', CLI, ...jobArgs(job), ...mode];
    // its own process group: a Ctrl-C in the terminal reaches the pool, which stops each job once (a second signal would make the CLI quit without a checkpoint)
    const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    const started = Date.now();
    const run: Running = { child, tail: new MetricsTail(path.join(job.dir, 'metrics.jsonl'), started - 1000), output: [], started, done: Promise.resolve(), lastPrintedStep: 0 };
    let partial = '';
    const take = (chunk: Buffer) => {
      log.write(chunk);
      const lines = (partial + chunk.toString('utf8')).split(/\r?\n|\r/);
      partial = lines.pop() ?? '';
      run.output.push(...lines.filter((l) => l.trim() !== ''));
      if (run.output.length > 2 * TAIL_LINES) run.output.splice(0, run.output.length - TAIL_LINES);
    };
    child.stdout!.on('data', take);
    child.stderr!.on('data', take);
    running.set(job.name, run);
    event(job);
    run.done = new Promise<void>((resolve) => {
      let spawnError: Error | undefined;
      child.on('error', (e) => (spawnError = e));
      child.on('close', (code, signal) => {
        if (partial.trim()) run.output.push(partial);
        log.end();
        running.delete(job.name);
        run.tail.poll();
        const seconds = (Date.now() - started) / 1000;
        const tail = run.output.slice(-TAIL_LINES).join('\n');
        let result: JobResult;
        if (code === 0) {
          result = { ...base, status: 'trained', seconds };
          try {
            const after = runState(job.dir, job.config);
            if (after.state !== 'finished') {
              const why = after.state === 'other' ? `a checkpoint of another config:\n  - ${after.differences.join('\n  - ')}` : after.state === 'partial' ? `a checkpoint at step ${after.step} of ${job.config.train.steps}` : 'no checkpoint';
              throw new Error(`the run exited 0 but ${job.dir} holds ${why}`);
            }
            const record = { name: job.name, command, machine: opts.machine ?? describeMachine(job.config.train.backend), startedAt: new Date(started).toISOString(), finishedAt: new Date().toISOString(), seconds };
            fs.writeFileSync(path.join(job.dir, 'job.json'), JSON.stringify(record, null, 2) + '\n');
          } catch (e) {
            result = { ...base, seconds, error: `${(e as Error).message}\n${tail}` };
          }
        } else if (stopping && (code === 130 || code === 143)) {
          result = { ...base, status: 'stopped', seconds, error: `stopped (${stopping}) at step ${run.tail.step}; run again to resume` };
        } else {
          const how = spawnError ? `could not start: ${spawnError.message}` : code !== null ? `exit ${code}` : `killed by ${signal}`;
          result = { ...base, seconds, error: `${how} after ${formatDuration(seconds * 1000)}; end of its output (all of it in ${path.join(job.dir, 'train.log')}):\n${tail}` };
        }
        finish(job, result).then(resolve, resolve);
      });
    });
  };

  const onSignal = (sig: NodeJS.Signals) => {
    const again = stopping !== undefined;
    stopping = sig;
    display.print(again ? `${sig}: stopping the jobs at once` : `${sig}: stopping the running jobs after their current step (they checkpoint; run again to resume); again to stop at once`);
    for (const run of running.values()) {
      try {
        process.kill(run.child.pid!, 'SIGTERM');
      } catch {
        // already gone
      }
    }
  };
  const handle = opts.handleSignals ?? true;
  if (handle) {
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }
  const ticker = setInterval(() => {
    for (const run of running.values()) run.tail.poll();
    if (display.tty) return redraw();
    for (const job of jobs) {
      const run = running.get(job.name);
      if (run && run.tail.step !== run.lastPrintedStep) {
        run.lastPrintedStep = run.tail.step;
        display.print(`${stamp()} ${lineOf(job)}`);
      }
    }
  }, interval);
  if (display.tty) redraw();
  else display.print(`${stamp()} ${jobs.length} training jobs, ${width} at a time: ${jobs.map((j) => j.name).join(', ')}`);
  try {
    for (;;) {
      for (const job of [...waiting]) {
        const failedDep = (job.after ?? []).find((a) => results.has(a) && !['trained', 'skipped'].includes(results.get(a)!.status));
        if (stopping || failedDep) {
          waiting.splice(waiting.indexOf(job), 1);
          const why = stopping ? { status: 'stopped' as const, error: `not started (${stopping})` } : { status: 'failed' as const, error: `not run: it needs ${failedDep}, which ${results.get(failedDep!)!.status}` };
          await finish(job, { name: job.name, dir: job.dir, command: jobCommand(job), seconds: 0, ...why });
        }
      }
      const ready = waiting.filter((j) => (j.after ?? []).every((a) => results.has(a)));
      if (ready.length && running.size < width) {
        const job = ready[0];
        waiting.splice(waiting.indexOf(job), 1);
        await start(job);
        continue;
      }
      if (!running.size) break;
      await Promise.race([...running.values()].map((r) => r.done));
    }
  } finally {
    clearInterval(ticker);
    if (handle) {
      process.removeListener('SIGINT', onSignal);
      process.removeListener('SIGTERM', onSignal);
    }
  }
  display.draw(jobs.map(lineOf));
  display.close();
  const list = jobs.map((j) => results.get(j.name)!);
  const ok = list.every((r) => r.status === 'trained' || r.status === 'skipped');
  const failed = list.filter((r) => r.status === 'failed');
  display.print(`${stamp()} ${summary()} in ${formatDuration(Date.now() - t0)}${failed.length ? `; failed: ${failed.map((r) => r.name).join(', ')}` : ''}`);
  return { ok, results: list, seconds: (Date.now() - t0) / 1000 };
}
