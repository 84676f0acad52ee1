/**
 * The command line under faults, as a user meets them: random kill -9 during a run then --resume (bit for bit the
 * uninterrupted run), Ctrl-C / SIGTERM (a clean stop with a checkpoint), a full disk and a read-only file system
 * (the previous checkpoint stays usable, the message names the path and the cause), and path mistakes.
 *
 * Full disks and read-only file systems are small tmpfs mounts, made in a private mount namespace (`unshare -rm`,
 * no root needed) or directly when running as root; where neither works the two tests are skipped and say why.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readCheckpoint } from '../src/train/checkpoint';
import { Rng } from '../src/util/rng';

const ROOT = path.resolve(__dirname, '..');
const CLI = ['--import', 'tsx', path.join(ROOT, 'src', 'cli', 'main.ts')];
const NANO = ['--preset=nano', '--train.backend=wasm', '--train.maxCorpusBytes=200000'];

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'mtp-cli-'));
}

function mtp(args: string[]): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, [...CLI, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/** Size of a file, 0 when missing. */
function sizeOf(file: string): number {
  return fs.existsSync(file) ? fs.statSync(file).size : 0;
}

/**
 * Starts the CLI training into `dir` and kills it with `signal` `ms` after the run has logged a new step (so the kill
 * lands in training, evaluation or a checkpoint write whatever the machine's start-up time); resolves with its exit
 * code (or the signal) and output.
 */
function mtpKilled(args: string[], dir: string, ms: number, signal: NodeJS.Signals): Promise<{ code: number | null; signal: string | null; out: string }> {
  return new Promise((resolve) => {
    const log = path.join(dir, 'metrics.jsonl');
    const before = sizeOf(log);
    const child = spawn(process.execPath, [...CLI, ...args], { cwd: ROOT });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    let timer: NodeJS.Timeout | undefined;
    const poll = setInterval(() => {
      if (sizeOf(log) === before) return;
      clearInterval(poll);
      timer = setTimeout(() => child.kill(signal), ms);
    }, 20);
    child.on('exit', (code, sig) => {
      clearInterval(poll);
      clearTimeout(timer);
      resolve({ code, signal: sig, out });
    });
  });
}

/** The metrics log without wall-clock fields, for comparing runs. */
function metricsOf(dir: string): unknown[] {
  return fs
    .readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => {
      const { tokPerSec: _t, ...row } = JSON.parse(l) as Record<string, unknown>;
      return row;
    });
}

/** How to run a shell script with a private tmpfs at $MNT, or why it cannot be done here. */
function tmpfsRunner(): { run: (script: string, sizeKb: number) => { status: number | null; out: string } } | { why: string } {
  const asRoot = process.getuid?.() === 0;
  const probe = (cmd: string[]) => spawnSync(cmd[0], [...cmd.slice(1), 'sh', '-c', 'mkdir -p /tmp/mtp-probe && mount -t tmpfs -o size=64k tmpfs /tmp/mtp-probe && umount /tmp/mtp-probe'], { encoding: 'utf8' });
  const wrappers: string[][] = [['unshare', '-rm'], ...(asRoot ? [['unshare', '-m']] : [])];
  for (const w of wrappers) {
    const p = probe(w);
    if (p.status === 0) {
      return {
        run: (script, sizeKb) => {
          const mnt = tmpDir();
          const full = `mount -t tmpfs -o size=${sizeKb}k tmpfs "${mnt}" || exit 99; export MNT="${mnt}"; ${script}`;
          const r = spawnSync(w[0], [...w.slice(1), 'sh', '-c', full], { cwd: ROOT, encoding: 'utf8', timeout: 240_000, env: { ...process.env, MTP: `${process.execPath} ${CLI.join(' ')}` } });
          return { status: r.status, out: `${r.stdout}${r.stderr}` };
        },
      };
    }
  }
  return { why: `cannot mount a tmpfs here (tried ${wrappers.map((w) => w.join(' ')).join(', ')}: no user or mount namespaces)` };
}

describe('mtp train under kills and signals', () => {
  it('20 kill -9 at random moments of a nano run, each followed by --resume, end bit for bit where the uninterrupted run ends', async () => {
    const steps = ['--train.steps=400', '--train.evalEvery=5'];
    const straight = tmpDir();
    const s = mtp(['train', ...NANO, ...steps, `--out=${straight}`]);
    expect(s.status, s.out).toBe(0);

    const dir = tmpDir();
    const rng = new Rng(7);
    let kills = 0;
    let resumes = 0;
    while (kills < 20) {
      const resume = fs.existsSync(path.join(dir, 'model.ckpt'));
      resumes += resume ? 1 : 0;
      const r = await mtpKilled(['train', ...NANO, ...steps, `--out=${dir}`, ...(resume ? ['--resume'] : [])], dir, rng.int(800), 'SIGKILL');
      if (r.signal === 'SIGKILL') kills += 1;
      else expect(r.code, r.out).toBe(0); // it finished before the kill: start over to keep killing
      if (r.code === 0) fs.rmSync(dir, { recursive: true, force: true });
    }
    const last = mtp(['train', ...NANO, ...steps, `--out=${dir}`, ...(fs.existsSync(path.join(dir, 'model.ckpt')) ? ['--resume'] : [])]);
    expect(last.status, last.out).toBe(0);
    expect(resumes).toBeGreaterThan(5);
    const a = readCheckpoint(path.join(straight, 'model.ckpt'));
    const b = readCheckpoint(path.join(dir, 'model.ckpt'));
    expect(b.header.step).toBe(400);
    expect(b.header.sha256).toEqual(a.header.sha256); // weights and Adam moments, bit for bit
    expect(b.header.rngState).toBe(a.header.rngState);
    expect(metricsOf(dir)).toEqual(metricsOf(straight));
    expect(fs.readdirSync(dir).filter((f) => f.endsWith('.tmp') || f === 'run.lock')).toEqual([]);
  }, 600_000);

  it('SIGTERM stops after the current step with a checkpoint (exit 143); --resume finishes the run', async () => {
    const dir = tmpDir();
    const r = await mtpKilled(['train', ...NANO, '--train.steps=100000', '--train.evalEvery=1000', `--out=${dir}`], dir, 1000, 'SIGTERM');
    expect(r.code, r.out).toBe(143);
    expect(r.out).toMatch(/SIGTERM: stopping after the current step[\s\S]*stopped \(SIGTERM\) after step (\d+)/);
    const step = Number(/after step (\d+)/.exec(r.out)![1]);
    expect(step).toBeGreaterThan(0);
    expect(readCheckpoint(path.join(dir, 'model.ckpt')).header.step).toBe(step);
    const done = mtp(['train', ...NANO, `--train.steps=${step + 3}`, '--train.evalEvery=1000', `--out=${dir}`, '--resume']);
    expect(done.status, done.out).toBe(0);
    expect(done.out).toMatch(new RegExp(`resuming from step ${step}[\\s\\S]*done: ${step + 3} steps`));
  }, 120_000);
});

describe('mtp on full and read-only disks', () => {
  const runner = tmpfsRunner();
  const why = 'why' in runner ? runner.why : '';
  if (why) console.warn(`skipping the full-disk and read-only tests: ${why}`);

  it.skipIf(why !== '')('a full disk stops the run with exit 1 naming the path and cause; the previous checkpoint still generates', () => {
    // nano checkpoints are ~0.5 MB: the current and the previous one fit in 1.2 MB, the next one's temporary file does not
    const script = `$MTP train ${NANO.join(' ')} --train.steps=40 --train.evalEvery=10 --out=$MNT/run; echo "exit=$?"; ` +
      `ls $MNT/run; $MTP generate --ckpt=$MNT/run --tokens=5 --backend=wasm; echo "generate=$?"`;
    const r = (runner as Exclude<typeof runner, { why: string }>).run(script, 1200);
    const m = /error: could not write \S+\/run\/model\.ckpt: the disk is full \(ENOSPC\); training stopped at step (\d+), the checkpoint of step (\d+) at \S+ is intact/.exec(r.out);
    expect(m, r.out).not.toBeNull();
    expect(Number(m![2])).toBe(Number(m![1]) - 10);
    expect(r.out).toMatch(/exit=1/);
    expect(r.out).not.toMatch(/\.tmp/); // no temporary file left
    expect(r.out).toMatch(new RegExp(`checkpoint \\S+model\\.ckpt \\(step ${m![2]},[\\s\\S]*generate=0`));
  }, 240_000);

  it.skipIf(why !== '')('a read-only file system is reported as read-only, naming the path', () => {
    const script = `$MTP train ${NANO.join(' ')} --train.steps=10 --out=$MNT/run >/dev/null; mount -o remount,ro "$MNT"; ` +
      `$MTP train ${NANO.join(' ')} --train.steps=20 --out=$MNT/run --resume; echo "exit=$?"`;
    const r = (runner as Exclude<typeof runner, { why: string }>).run(script, 4096);
    expect(r.out).toMatch(/error: could not create the run lock \S+\/run\/run\.lock: the file system is read-only \(EROFS\)/);
    expect(r.out).toMatch(/exit=1/);
  }, 240_000);
});

describe('mtp path and flag mistakes', () => {
  it('--ckpt takes a run folder or zoo:NAME; a folder without a checkpoint, an unknown zoo model, --out under /proc and --resume with --overwrite are clear errors', () => {
    const dir = tmpDir();
    expect(mtp(['train', ...NANO, '--train.steps=2', `--out=${dir}`]).status).toBe(0);
    const g = mtp(['generate', `--ckpt=${dir}`, '--tokens=3', '--backend=wasm']);
    expect(g.status, g.out).toBe(0);
    expect(g.out).toMatch(new RegExp(`checkpoint ${dir}/model.ckpt \\(step 2`));
    const empty = tmpDir();
    expect(mtp(['generate', `--ckpt=${empty}`]).out).toMatch(/is a folder without a model\.ckpt; pass a checkpoint file or a run folder/);
    const proc = mtp(['train', ...NANO, '--out=/proc/mtp-lab/run']);
    expect(proc.status).toBe(1);
    expect(proc.out).toMatch(/could not create the run folder \/proc\/mtp-lab\/run: no such file or folder \(ENOENT\)/);
    expect(mtp(['train', ...NANO, `--out=${dir}`, '--resume', '--overwrite']).out).toMatch(/--resume and --overwrite contradict each other/);
    const zoo = mtp(['generate', '--ckpt=zoo:code-ar', '--tokens=3', '--backend=wasm']);
    expect(zoo.status, zoo.out).toBe(0);
    expect(zoo.out).toMatch(/zoo model code-ar \(step \d+/);
    expect(mtp(['generate', '--ckpt=zoo:nope']).out).toMatch(/no model 'nope' in \S+manifest\.json; it holds: code-ar/);
    const help = mtp(['train', '--preset=deep', '--help']).out;
    expect(help).toMatch(/transformer blocks in the trunk;[\s\S]*\[deep: 8\]/); // the preset's values, not the defaults
    expect(help).toMatch(/optimizer steps to run \[deep: 2000\]/);
  }, 120_000);
});
