/**
 * Exports every finished run under a folder into a zoo folder (float16 weights + manifest, src/zoo/), for zoo.sh's
 * `collect` on a machine without npm (bundled by prepare.sh). A run's command line is read from `<runs>/<name>.command`;
 * a Medusa or feature-drafter run records the AR baseline of its corpus as the model it started from. Unfinished runs are reported and
 * skipped. ZOO_MACHINE_NOTE is added to each model's `machine` line.
 *
 *   node zoo_export.js /tmp/zoo OUT/models
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { exportZooModel } from '../../src/zoo/export';
import { describeMachine } from '../../src/zoo/machine';

const [runs, dir] = process.argv.slice(2);
if (!runs || !dir) throw new Error('usage: node zoo_export.js RUNS_DIR ZOO_DIR');
let failed = 0;
for (const name of fs.readdirSync(runs).sort()) {
  const run = path.join(runs, name);
  if (!fs.existsSync(path.join(run, 'model.ckpt'))) continue;
  const commandFile = `${run}.command`;
  const command = fs.existsSync(commandFile) ? fs.readFileSync(commandFile, 'utf8').trim() : 'unknown';
  const initFrom = /-(medusa|feature)/.test(name) ? `${name.split('-')[0]}-ar` : undefined;
  try {
    const workers = /--train\.workers=(\d+)/.exec(command)?.[1];
    const note = [process.env.ZOO_MACHINE_NOTE, workers && `${workers} data-parallel workers`].filter(Boolean).join(', ');
    const machine = `the lent GPU machine's CPUs: ${describeMachine('wasm')}${note ? `; ${note}` : ''}`;
    const e = exportZooModel(name, run, { dir, command, initFrom, machine });
    console.log(`${name}: ${e.parameters} parameters, ${e.steps} steps, next-token val loss ${e.valLoss.heads[0].loss.toFixed(3)}`);
  } catch (err) {
    failed += 1;
    console.log(`${name}: not exported: ${(err as Error).message}`);
  }
}
process.exitCode = failed ? 1 : 0;
