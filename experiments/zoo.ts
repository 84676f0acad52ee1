/**
 * Trains the zoo's reference models (zoo_models.ts) with the job pool and exports each finished one into the zoo
 * folder: `<out>/<name>/weights.f16` (float16) and its entry in `<out>/manifest.json` (src/zoo/). Run folders stay in
 * `--runs`; a model already trained there with the same config is exported without training again, an interrupted
 * one resumes.
 *
 *   npm run zoo -- --dry-run                          # the jobs, their run folders' state, and what gets exported
 *   npm run zoo -- [--preset=tiny] [--steps=N] [--jobs=N] [--only=code-ar,code-medusa1-k5] [--corpora=code,prose]
 *   npm run zoo -- --preset=nano --out=/tmp/zoo --runs=/tmp/zoo-runs   # a small zoo somewhere else
 *
 * The exit status is 0 when every job was trained (or found trained) and exported, else 1.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { configFromArgs, withConfigOptions } from '../src/cli/options';
import { BACKEND_NAMES } from '../src/backend/index';
import { countParams } from '../src/config';
import { CORPUS_NAMES, CorpusName } from '../src/data/corpora';
import { exportZooModel } from '../src/zoo/export';
import { describeMachine } from '../src/zoo/machine';
import { DEFAULT_ZOO_DIR, manifestPath, WEIGHTS_FILE } from '../src/zoo/manifest';
import { defaultJobs, jobCommand, parseJobs, runJobs, TrainJob } from './jobs';
import { runState } from './run_state';
import { selectZooModels, zooModels } from './zoo_models';

/** Comma list flag → names ('' or absent = undefined). */
function list(v: unknown): string[] | undefined {
  const text = v === undefined ? '' : String(v).trim();
  return text ? text.split(',').map((s) => s.trim()).filter(Boolean) : undefined;
}

/** 'trained (800 steps)', 'resumes from step 300', 'to train', or why it cannot be used, for the dry run. */
function describeState(job: TrainJob, fresh: boolean): string {
  if (fresh) return 'to train afresh (--fresh)';
  try {
    const s = runState(job.dir, job.config);
    if (s.state === 'finished') return `trained (${s.step} steps): exported as is`;
    if (s.state === 'partial') return `resumes from step ${s.step}`;
    if (s.state === 'other') return `holds another config (${s.differences.slice(0, 3).join('; ')}${s.differences.length > 3 ? '; …' : ''}): fails unless --fresh`;
    return 'to train';
  } catch (e) {
    return `unusable: ${(e as Error).message.split('\n')[0]}`;
  }
}

async function main(): Promise<void> {
  const argv = (await withConfigOptions(
    yargs(hideBin(process.argv))
      .scriptName('zoo')
      .usage('Train the zoo’s reference models in parallel and export them as float16 weights + manifest\n\nnpm run zoo -- [flags]')
      .parserConfiguration({ 'dot-notation': false, 'camel-case-expansion': false }),
  )
    .option('steps', { type: 'number', describe: 'training steps of every model (shorthand for --train.steps) [default: the preset’s]' })
    .option('corpora', { type: 'string', default: CORPUS_NAMES.join(','), describe: `corpora to train on (${CORPUS_NAMES.join(', ')})` })
    .option('only', { type: 'string', describe: 'comma list of zoo names to train and export (the models they start from are trained too) [default: all]' })
    .option('dry-run', { type: 'boolean', default: false, describe: 'list the jobs, their run folders’ state and what gets exported; train nothing' })
    .option('jobs', { type: 'number', describe: `training processes at once, one wasm engine each [default: the cores but one = ${defaultJobs()}]` })
    .option('out', { type: 'string', describe: 'zoo folder (manifest.json and <name>/weights.f16) [default: models/]' })
    .option('runs', { type: 'string', default: path.join('runs', 'zoo'), describe: 'folder of the run folders (checkpoints, logs)' })
    .option('backend', { type: 'string', default: 'wasm', choices: BACKEND_NAMES as unknown as string[], describe: 'tfjs backend the models train on' })
    .option('machine', { type: 'string', describe: 'where the models train, recorded in the manifest [default: this machine’s CPU, cores, memory, OS, Node, backend]' })
    .option('fresh', { type: 'boolean', default: false, describe: 'train every job afresh, even one whose run folder holds it trained or of another config' })
    .strict()
    .help()
    .parseAsync()) as Record<string, unknown>;

  if (argv.preset === undefined) argv.preset = 'tiny';
  if (argv.steps !== undefined) {
    if (argv['train.steps'] !== undefined && argv['train.steps'] !== argv.steps) throw new Error(`--steps=${argv.steps} and --train.steps=${argv['train.steps']} disagree; pass one`);
    argv['train.steps'] = argv.steps;
  }
  if (argv['train.backend'] !== undefined && argv['train.backend'] !== argv.backend) throw new Error(`--train.backend=${argv['train.backend']} differs from --backend=${argv.backend}; pass --backend only`);
  argv['train.backend'] = argv.backend;
  if (argv['train.workers'] === undefined) argv['train.workers'] = 1; // one engine per model: parallelism is --jobs
  const base = configFromArgs(argv);
  const corpora = list(argv.corpora) ?? [];
  const badCorpus = corpora.filter((c) => !(CORPUS_NAMES as readonly string[]).includes(c));
  if (badCorpus.length || !corpora.length) throw new Error(`--corpora: unknown corpus ${badCorpus.join(', ') || '(none given)'}; allowed: ${CORPUS_NAMES.join(', ')}`);
  const jobsAtOnce = parseJobs(argv.jobs);
  const zooDir = path.resolve((argv.out as string | undefined) ?? DEFAULT_ZOO_DIR);
  const runsDir = path.resolve(argv.runs as string);
  const fresh = argv.fresh as boolean;
  const machine = (argv.machine as string | undefined) ?? describeMachine(argv.backend as string);

  const all = zooModels(base, corpora as CorpusName[]);
  const { train, needed } = selectZooModels(all, list(argv.only));
  const jobs: TrainJob[] = train.map((m) => ({
    name: m.name,
    config: m.config,
    dir: path.join(runsDir, m.name),
    ...(m.initFrom !== undefined ? { init: path.join(runsDir, m.initFrom, 'model.ckpt'), after: [m.initFrom] } : {}),
  }));
  const exported = (name: string) => !needed.has(name);

  if (argv['dry-run']) {
    const w = Math.max(...jobs.map((j) => j.name.length));
    console.log(`${jobs.length} training jobs, ${jobsAtOnce} at a time (preset ${argv.preset}, ${base.train.steps} steps, backend ${base.train.backend}); run folders in ${runsDir}`);
    for (const j of jobs) {
      const spec = train.find((m) => m.name === j.name)!;
      const what = [`${countParams(j.config.model).toLocaleString('en-US')} parameters`, j.config.train.corpus];
      if (spec.initFrom) what.push(`starts from ${spec.initFrom}'s checkpoint, after it`);
      const dest = exported(j.name) ? `→ ${path.join(zooDir, j.name, WEIGHTS_FILE)}` : `(not exported: needed by ${needed.get(j.name)})`;
      console.log(`  ${j.name.padEnd(w)}  ${what.join(', ')} | ${describeState(j, fresh)} ${dest}`);
    }
    console.log(`manifest: ${manifestPath(zooDir)}; machine: ${machine}`);
    console.log(`each job runs: ${jobCommand(jobs[0])}`);
    return;
  }

  const result = await runJobs(jobs, {
    jobs: jobsAtOnce,
    fresh,
    machine,
    onJobEnd: (r, job) => {
      if (!exported(job.name)) return;
      const spec = train.find((m) => m.name === job.name)!;
      const recordFile = path.join(job.dir, 'job.json');
      const record = fs.existsSync(recordFile) ? (JSON.parse(fs.readFileSync(recordFile, 'utf8')) as { command?: string; machine?: string; finishedAt?: string }) : {};
      exportZooModel(job.name, job.dir, {
        dir: zooDir,
        command: record.command ?? r.command,
        machine: record.machine ?? machine,
        trainedAt: record.finishedAt,
        ...(spec.initFrom !== undefined ? { initFrom: spec.initFrom } : {}),
      });
    },
  });
  const done = result.results.filter((r) => exported(r.name) && (r.status === 'trained' || r.status === 'skipped')).map((r) => r.name);
  console.log(`exported ${done.length} model(s) to ${zooDir}${done.length ? `: ${done.join(', ')}` : ''}`);
  process.exitCode = result.ok ? 0 : 1;
}

main().catch((e: Error) => {
  console.error(`error: ${e.message}`);
  process.exit(1);
});
