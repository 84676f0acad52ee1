/**
 * Durable file writes (Node only): every byte checked, data and folder fsynced, and the target replaced by a rename
 * only once the new file is complete, so a crash, a kill or a full disk leaves either the old file or the new one,
 * never a piece of either. File-system errors come back as messages that name the path and the cause.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Suffix of the temporary files written beside a target (`<file>.<pid>.tmp`). */
export const TEMP_SUFFIX = '.tmp';

const CAUSES: Record<string, string> = {
  ENOSPC: 'the disk is full',
  EDQUOT: 'the disk quota is exhausted',
  EFBIG: 'the file is larger than the system allows',
  EROFS: 'the file system is read-only',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EISDIR: 'it is a folder, not a file',
  ENOTDIR: 'a part of the path is a file, not a folder',
  ENOENT: 'no such file or folder',
  EIO: 'an input/output error of the device',
};

/** The error code of a Node file-system error, if any. */
export function errorCode(e: unknown): string | undefined {
  return (e as NodeJS.ErrnoException | undefined)?.code;
}

/** 'the disk is full (ENOSPC)' for a Node file-system error, else its message. */
export function fsCause(e: unknown): string {
  const code = errorCode(e);
  return code && CAUSES[code] ? `${CAUSES[code]} (${code})` : (e as Error).message;
}

/** An Error saying what could not be done to which path, and why. */
export function fsError(action: string, file: string, e: unknown): Error {
  return new Error(`could not ${action} ${file}: ${fsCause(e)}`, { cause: e });
}

/**
 * Creates `dir` and its missing parents, one level at a time (Node's recursive mkdir never returns under /proc, where
 * mkdir answers ENOENT); errors name the folder and the cause. `what` words the message ('the run folder').
 */
export function makeDir(dir: string, what = 'the folder'): void {
  const full = path.resolve(dir);
  const missing: string[] = [];
  for (let d = full; !fs.existsSync(d); d = path.dirname(d)) {
    missing.unshift(d);
    if (path.dirname(d) === d) break;
  }
  for (const d of missing) {
    try {
      fs.mkdirSync(d);
    } catch (e) {
      if (errorCode(e) === 'EEXIST' && fs.statSync(d).isDirectory()) continue;
      throw fsError(`create ${what}`, dir, e);
    }
  }
  if (!fs.statSync(full).isDirectory()) throw new Error(`could not create ${what} ${dir}: a file of that name exists`);
}

/** Writes all of `data` at the file's current position, looping over short writes; throws if a write makes no progress. */
export function writeAll(fd: number, data: Uint8Array): void {
  let done = 0;
  while (done < data.length) {
    const n = fs.writeSync(fd, data, done, data.length - done);
    if (n <= 0) throw Object.assign(new Error(`write returned ${n} with ${data.length - done} bytes left`), { code: 'EIO' });
    done += n;
  }
}

/** fsync of a folder, so a rename inside it survives a power cut (a no-op where folders cannot be opened). */
export function fsyncDir(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, 'r');
    fs.fsyncSync(fd);
  } catch (e) {
    if (!['EISDIR', 'EPERM', 'EACCES', 'EINVAL'].includes(errorCode(e) ?? '')) throw e;
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/**
 * Writes `parts` to `file` durably: a temporary file beside it, every byte checked, fsynced, renamed over the target,
 * then the folder fsynced. On any error the temporary file is removed, the previous `file` is untouched, and the
 * error names the path and the cause (disk full, read-only, permission). `beforeRename` runs between the complete
 * temporary file and the rename (e.g. to keep the previous version).
 */
export function writeFileDurable(file: string, parts: Uint8Array[] | string, beforeRename?: () => void): void {
  const dir = path.dirname(path.resolve(file));
  const tmp = `${file}.${process.pid}${TEMP_SUFFIX}`;
  const chunks = typeof parts === 'string' ? [Buffer.from(parts, 'utf8')] : parts;
  makeDir(dir);
  try {
    const fd = fs.openSync(tmp, 'w');
    try {
      for (const c of chunks) writeAll(fd, c);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    const expected = (chunks as readonly Uint8Array[]).reduce((a: number, c) => a + c.length, 0);
    const size = fs.statSync(tmp).size;
    if (size !== expected) throw Object.assign(new Error(`wrote ${size} of ${expected} bytes`), { code: 'EIO' });
    beforeRename?.();
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw fsError('write', file, e);
  }
  fsyncDir(dir);
}

/**
 * Removes temporary files left in `dir` by killed writers (`<name>.<pid>.tmp` for a `<name>` in `names`); returns the
 * paths removed. Call it only while holding the folder (e.g. under a run lock), so no live writer owns them.
 */
export function removeStaleTemps(dir: string, names: string[]): string[] {
  if (!fs.existsSync(dir)) return [];
  const removed: string[] = [];
  for (const entry of fs.readdirSync(dir)) {
    const match = /^(.*)\.\d+\.tmp$/.exec(entry);
    if (!match || !names.includes(match[1])) continue;
    const full = path.join(dir, entry);
    fs.rmSync(full, { force: true });
    removed.push(full);
  }
  return removed;
}
