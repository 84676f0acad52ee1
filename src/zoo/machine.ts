/** Where a model was trained, as one line (Node only): recorded in the zoo's manifest beside each model. */
import * as os from 'node:os';

/** e.g. 'Intel(R) Xeon(R) Processor, 16 cores, 62 GiB, linux x64, Node v20.19.0' (backend added when given). */
export function describeMachine(backend?: string): string {
  const cpus = os.cpus();
  const cpu = cpus[0]?.model.trim().replace(/\s+/g, ' ') || 'unknown CPU';
  const gib = Math.round(os.totalmem() / 2 ** 30);
  const parts = [cpu, `${os.availableParallelism()} cores`, `${gib} GiB`, `${os.platform()} ${os.arch()}`, `Node ${process.version}`];
  if (backend) parts.push(`tfjs ${backend}`);
  return parts.join(', ');
}
