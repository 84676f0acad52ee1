/**
 * One writer per run folder (Node only). A run holds `<run folder>/run.lock` (its PID, host and start time) while it
 * trains; a second run on the same folder is refused with a message naming the holder. A lock whose process is gone
 * (same host, PID no longer alive) is taken over; a lock from another host is never broken automatically, since
 * that process cannot be checked from here.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { errorCode, fsError, makeDir } from '../util/files';

export const LOCK_FILE = 'run.lock';

export interface LockInfo {
  pid: number;
  host: string;
  started: string;
}

/** True if a process with this PID exists on this host (it may belong to another user). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return errorCode(e) === 'EPERM';
  }
}

function readLock(file: string): LockInfo | undefined {
  try {
    const info = JSON.parse(fs.readFileSync(file, 'utf8')) as LockInfo;
    return Number.isInteger(info.pid) && typeof info.host === 'string' ? info : undefined;
  } catch {
    return undefined; // unreadable or torn: written by a process killed mid-write
  }
}

/** A held run lock; `release()` removes it (idempotent, also called on process exit). */
export class RunLock {
  private released = false;
  private readonly onExit = () => this.release();

  private constructor(readonly file: string) {
    process.once('exit', this.onExit);
  }

  /**
   * Takes the lock of `dir` (created if missing), or throws naming the process that holds it. A stale lock (same
   * host, dead PID, or an unreadable file) is replaced.
   */
  static acquire(dir: string): RunLock {
    makeDir(dir, 'the run folder');
    const file = path.join(dir, LOCK_FILE);
    const me: LockInfo = { pid: process.pid, host: os.hostname(), started: new Date().toISOString() };
    for (let attempt = 0; attempt < 3; attempt++) {
      try {
        fs.writeFileSync(file, JSON.stringify(me) + '\n', { flag: 'wx' });
        return new RunLock(file);
      } catch (e) {
        if (errorCode(e) !== 'EEXIST') throw fsError('create the run lock', file, e);
      }
      const held = readLock(file);
      if (held && held.pid === process.pid && held.host === me.host) {
        throw new Error(`run folder ${dir} is already in use by this process (PID ${held.pid}); finish that run first`);
      }
      if (held && held.host !== me.host) {
        throw new Error(
          `run folder ${dir} is in use by PID ${held.pid} on host ${held.host} (since ${held.started}); ` +
            `stop that run first, or delete ${file} if it is no longer running`,
        );
      }
      if (held && processAlive(held.pid)) {
        throw new Error(
          `run folder ${dir} is in use by PID ${held.pid} (since ${held.started}); stop that run first ` +
            `(kill ${held.pid}: it writes a checkpoint and exits), or train into another folder with --out`,
        );
      }
      fs.rmSync(file, { force: true }); // stale: its process is gone
    }
    throw new Error(`could not take the run lock ${file}: other processes keep re-creating it`);
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    process.removeListener('exit', this.onExit);
    const held = readLock(this.file);
    if (held?.pid === process.pid) fs.rmSync(this.file, { force: true });
  }
}
