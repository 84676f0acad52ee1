/**
 * Runs the PyTorch twin (bench/torch_twin.py) from a benchmark, so that tfjs and PyTorch are timed in one run on the
 * same machine state. Needs Debian's python3-torch for /usr/bin/python3; OpenBLAS-OpenMP is used when installed
 * (docs/performance.md: the reference BLAS is 20× slower, the pthread OpenBLAS fights PyTorch's threads on 2 cores).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const PYTHON = process.env.MTP_PYTHON ?? '/usr/bin/python3';
const OPENBLAS_OPENMP = '/usr/lib/x86_64-linux-gnu/openblas-openmp';

/** One config's results as torch_twin.py writes them. */
export interface TwinResult {
  config: string;
  train?: { ms: { median: number }; tokensPerSec: number };
  decode?: { kvCacheMs: Record<string, number>; cacheLength: number };
  error?: string;
}

function env(): NodeJS.ProcessEnv {
  return fs.existsSync(OPENBLAS_OPENMP) ? { ...process.env, LD_LIBRARY_PATH: OPENBLAS_OPENMP } : process.env;
}

/** Why the twin cannot run here, or null when /usr/bin/python3 imports torch. */
export function torchUnavailable(): string | null {
  if (!fs.existsSync(PYTHON)) return `${PYTHON} not found`;
  const r = spawnSync(PYTHON, ['-c', 'import torch'], { env: env(), encoding: 'utf8' });
  return r.status === 0 ? null : `${PYTHON} cannot import torch (apt-get install python3-torch libopenblas0-openmp, or point MTP_PYTHON at a Python that has it)`;
}

/** Runs torch_twin.py on the CPU with `args` (e.g. ['--configs', 'small', '--train-runs', '0']) and returns its results. */
export function runTwin(args: string[], threads = 2, device: 'cpu' | 'cuda' = 'cpu'): { info: Record<string, unknown>; results: TwinResult[] } {
  const out = path.join(os.tmpdir(), `torch_twin.${process.pid}.json`);
  const script = path.join(__dirname, 'torch_twin.py');
  const r = spawnSync(PYTHON, [script, '--device', device, '--threads', String(threads), '--skip-matmul', '--out', out, ...args], {
    env: env(),
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`torch_twin.py failed: ${r.stderr.trim().split('\n').pop()}`);
  const res = JSON.parse(fs.readFileSync(out, 'utf8'));
  fs.rmSync(out, { force: true });
  return res;
}
