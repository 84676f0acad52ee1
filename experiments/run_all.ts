/**
 * Runs every experiment in order (the k-sweep first: the others reuse its models and results),
 * passing the same flags to each: `npm run experiments -- --quick` for the CI-sized run, without
 * --quick for the full run whose results and figures are committed under figures/.
 *
 * By default the k-sweep, train-once and theory experiments measure the model zoo's trained models (models/), so
 * a full run only trains the small synthetic-task models; `--train` trains every model from scratch instead.
 *
 * The models come first: each experiment declares the models it trains (`--plan`, see lib.ts), the
 * job pool trains them all `--jobs=N` at a time, each in a process of its own (default: the cores
 * but one), and the experiments then find them trained and only measure. The models are the ones a
 * serial run trains, bit for bit, so the results are the same; only training tokens/s reflect cores
 * shared with the other jobs.
 *
 *   npm run experiments -- [--quick] [--train] [--jobs=N] [--fresh] [experiment flags]
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { parseJobs, runJobs, TrainJob } from './jobs';
import { configDifferences } from './run_state';

const EXPERIMENTS = ['k_sweep', 'train_once', 'theory', 'next_token_quality'];
const tsx = path.join(__dirname, '..', 'node_modules', '.bin', 'tsx');

/** Takes `--name=value` / `--name value` / `--name` out of args; returns its value (true for a bare flag) or undefined. */
function takeFlag(args: string[], name: string, hasValue: boolean): string | true | undefined {
  let value: string | true | undefined;
  for (let i = 0; i < args.length; i++) {
    if (args[i].startsWith(`--${name}=`)) {
      value = args[i].slice(name.length + 3);
      args.splice(i--, 1);
    } else if (args[i] === `--${name}`) {
      value = hasValue && i + 1 < args.length && !args[i + 1].startsWith('--') ? args.splice(i + 1, 1)[0] : true;
      args.splice(i--, 1);
    }
  }
  return value;
}

function fail(message: string): never {
  console.error(`error: ${message}`);
  process.exit(1);
}

/** The models every experiment declares, one job per run folder (two experiments may share one if they agree on it). */
function plannedJobs(args: string[]): TrainJob[] {
  const planDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mtp-experiments-plan-'));
  const byDir = new Map<string, { job: TrainJob; from: string }>();
  try {
    for (const name of EXPERIMENTS) {
      const file = path.join(planDir, `${name}.json`);
      const r = spawnSync(tsx, [path.join(__dirname, `${name}.ts`), ...args, `--plan=${file}`], { stdio: 'inherit' });
      if (r.status !== 0) fail(`experiment ${name} could not list its models (exit ${r.status ?? r.signal})`);
      if (!fs.existsSync(file)) fail(`experiment ${name} did not declare its models: it must call declareModels (experiments/lib.ts) before training any`);
      const plan = JSON.parse(fs.readFileSync(file, 'utf8')) as { jobs: TrainJob[] };
      for (const job of plan.jobs) {
        const seen = byDir.get(job.dir);
        if (!seen) {
          byDir.set(job.dir, { job, from: name });
          continue;
        }
        const differences = configDifferences(seen.job.config, job.config);
        if (seen.job.init !== job.init) differences.push(`init: ${seen.job.init ?? 'none'} → ${job.init ?? 'none'}`);
        if (differences.length) fail(`experiments ${seen.from} and ${name} both train ${job.dir}, differently:\n  - ${differences.join('\n  - ')}`);
      }
    }
  } finally {
    fs.rmSync(planDir, { recursive: true, force: true });
  }
  return [...byDir.values()].map((x) => x.job);
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const help = args.includes('--help') || args.includes('-h');
  const jobsFlag = takeFlag(args, 'jobs', true);
  const fresh = takeFlag(args, 'fresh', false) !== undefined;
  if (!help) {
    let jobs: number;
    try {
      jobs = parseJobs(jobsFlag === true ? '' : jobsFlag);
    } catch (e) {
      fail((e as Error).message);
    }
    const t0 = Date.now();
    console.log(`\n=== training the experiments' models, ${jobs} at a time`);
    const r = await runJobs(plannedJobs(args), { jobs, fresh, replace: true });
    if (!r.ok) fail(`training failed for ${r.results.filter((x) => x.status !== 'trained' && x.status !== 'skipped').map((x) => x.name).join(', ')} (reports above; each run folder keeps its train.log)`);
    console.log(`=== models: ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  }
  for (const name of EXPERIMENTS) {
    const t0 = Date.now();
    console.log(`\n=== ${name} ${args.join(' ')}`);
    const r = spawnSync(tsx, [path.join(__dirname, `${name}.ts`), ...args], { stdio: 'inherit' });
    if (r.status !== 0) fail(`experiment ${name} failed (exit ${r.status ?? r.signal})`);
    console.log(`=== ${name}: ${((Date.now() - t0) / 1000).toFixed(0)} s`);
  }
}

main().catch((e: Error) => fail(e.message));
