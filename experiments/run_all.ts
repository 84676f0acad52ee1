/**
 * Runs every experiment in order (the k-sweep first: the others reuse its models and results),
 * passing the same flags to each: `npm run experiments -- --quick` for the CI-sized run, without
 * --quick for the full run whose results and figures are committed under figures/.
 */
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

const EXPERIMENTS = ['k_sweep', 'train_once', 'theory', 'next_token_quality'];
const args = process.argv.slice(2);
const tsx = path.join(__dirname, '..', 'node_modules', '.bin', 'tsx');
for (const name of EXPERIMENTS) {
  const t0 = Date.now();
  console.log(`\n=== ${name} ${args.join(' ')}`);
  const r = spawnSync(tsx, [path.join(__dirname, `${name}.ts`), ...args], { stdio: 'inherit' });
  if (r.status !== 0) {
    console.error(`error: experiment ${name} failed (exit ${r.status ?? r.signal})`);
    process.exit(1);
  }
  console.log(`=== ${name}: ${((Date.now() - t0) / 1000).toFixed(0)} s`);
}
