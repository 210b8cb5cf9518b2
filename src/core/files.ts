import fs from 'node:fs';
import path from 'node:path';
import { UserError } from './errors.ts';
import { killPoint } from './faults.ts';

/**
 * File discipline shared by everything tlx writes (SQLite's and git's rule): a file is the
 * old version or the new one, never half of either. Writes go to a temp name carrying the
 * writer's pid, are fsynced, renamed into place, and the folder is fsynced; a later process
 * can tell a dead writer's leftovers by that pid and remove them.
 */

const tempMarker = '.tmp-';
const tempPattern = /\.tmp-(\d+)-[a-z0-9]+$/;

function randomSuffix(): string {
  return Math.random().toString(36).slice(2, 8) || '0';
}

/** A temp name beside `target`: `<target>.tmp-<pid>-<random>`. */
export function tempPathFor(target: string): string {
  return `${target}${tempMarker}${process.pid}-${randomSuffix()}`;
}

/** Whether a process with this pid exists on this machine (EPERM means it exists, owned by another user). */
export function isProcessAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function fsyncFile(target: string): void {
  const fd = fs.openSync(target, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Makes a rename or a new entry in `dir` durable. */
export function fsyncDir(dir: string): void {
  fsyncFile(dir);
}

/** A write the disk had no room for (or the user's quota), naming the file and what it was. */
class DiskFullError extends Error {
  override name = 'DiskFullError';
}

/**
 * Runs a write; a full disk or quota (ENOSPC, EDQUOT) becomes an error that names the file
 * and what was being written: Node's own message for a write to an open file names neither.
 */
export function writingTo<T>(file: string, what: string, write: () => T): T {
  try {
    return write();
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code !== 'ENOSPC' && code !== 'EDQUOT') throw error;
    throw new DiskFullError(
      `no space left on the device writing ${what} to ${file} (${code}); free some space there and run the command again (a run resumes where it stopped)`,
    );
  }
}

/** Writes bytes to a new file and flushes them to disk before returning. */
function writeDurably(file: string, content: string | Uint8Array): void {
  const fd = fs.openSync(file, 'wx');
  try {
    fs.writeFileSync(fd, content);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

export function writeFileAtomic(file: string, content: string | Uint8Array, what = path.basename(file)): void {
  const dir = path.dirname(file);
  fs.mkdirSync(dir, { recursive: true });
  const temp = tempPathFor(file);
  try {
    writingTo(file, what, () => writeDurably(temp, content));
    fs.renameSync(temp, file);
  } catch (error) {
    fs.rmSync(temp, { force: true });
    throw error;
  }
  fsyncDir(dir);
}

export function writeJsonAtomic(file: string, value: unknown): void {
  writeFileAtomic(file, `${JSON.stringify(value, null, 2)}\n`);
}

/** A file that exists but cannot be read as what it should be: named, with what was expected. */
export class CorruptFileError extends UserError {
  override name = 'CorruptFileError';
}

/** Reads a JSON file; an empty or unparsable file is an error that names it. */
export function readJsonFile(file: string, what = 'JSON'): unknown {
  const text = fs.readFileSync(file, 'utf8');
  if (text.trim().length === 0)
    throw new CorruptFileError(
      `${file}: the file is empty; expected ${what} (it may have been cut short by a crash or a full disk)`,
    );
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw new CorruptFileError(
      `${file}: not valid JSON (${error instanceof Error ? error.message : String(error)}); expected ${what}`,
    );
  }
}

/** Appends one line and flushes it: after a crash the line is whole, or a torn tail is cut on the next open. */
export function appendLineDurably(file: string, line: string): void {
  const fd = fs.openSync(file, 'a');
  try {
    writingTo(file, `a line of ${path.basename(file)}`, () => {
      fs.writeSync(fd, `${line}\n`);
      fs.fsyncSync(fd);
    });
  } finally {
    fs.closeSync(fd);
  }
}

interface BadLine {
  line: number;
  text: string;
  reason: string;
}

export interface JsonLines<T> {
  records: T[];
  bad: BadLine[];
  /** Bytes after the last newline: a line a crash cut short. */
  tornTail?: string;
}

/** Reads a JSON-lines file; every line that is not a valid record is reported, never silently dropped. */
export function readJsonLines<T>(file: string, parse: (value: unknown) => T): JsonLines<T> {
  if (!fs.existsSync(file)) return { records: [], bad: [] };
  const text = fs.readFileSync(file, 'utf8');
  const lastNewline = text.lastIndexOf('\n');
  const complete = text.slice(0, lastNewline + 1);
  const tail = text.slice(lastNewline + 1);
  const result: JsonLines<T> = { records: [], bad: [], ...(tail.length > 0 ? { tornTail: tail } : {}) };
  complete.split('\n').forEach((line, index) => {
    if (line.trim().length === 0) return;
    try {
      result.records.push(parse(JSON.parse(line) as unknown));
    } catch (error) {
      result.bad.push({
        line: index + 1,
        text: line.slice(0, 120),
        reason: error instanceof Error ? error.message.split('\n')[0] : String(error),
      });
    }
  });
  return result;
}

/** Cuts a file back to its last newline (a torn last line); returns the bytes removed. */
export function truncateTornTail(file: string): number {
  const text = fs.readFileSync(file);
  const lastNewline = text.lastIndexOf(0x0a);
  const keep = lastNewline + 1;
  const removed = text.length - keep;
  if (removed > 0) {
    fs.truncateSync(file, keep);
    fsyncFile(file);
  }
  return removed;
}

/** Rewrites a JSON-lines file with exactly these records (atomically). */
export function rewriteJsonLines(file: string, records: unknown[]): void {
  writeFileAtomic(file, records.map((record) => `${JSON.stringify(record)}\n`).join(''));
}

/** Flushes every file of a folder tree, then the folders themselves. */
function fsyncTree(dir: string): void {
  for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) fsyncTree(full);
    else if (entry.isFile()) fsyncFile(full);
  }
  fsyncDir(dir);
}

/**
 * Puts a complete folder in place of `target`, keeping one complete version at every
 * instant: the old one moves to `<target>.previous` before the new one is renamed in,
 * and is removed only after. A crash at any step leaves `target` or `<target>.previous`
 * complete (see findInstalled).
 */
export function installFolder(temp: string, target: string, killPointPrefix?: string): void {
  const previous = `${target}.previous`;
  fsyncTree(temp);
  if (fs.existsSync(target)) {
    // `target` is complete, so an older `previous` is redundant.
    fs.rmSync(previous, { recursive: true, force: true });
    fs.renameSync(target, previous);
    if (killPointPrefix) killPoint(`${killPointPrefix}.moved-old`);
  }
  fs.renameSync(temp, target);
  fsyncDir(path.dirname(target));
  if (killPointPrefix) killPoint(`${killPointPrefix}.installed`);
  fs.rmSync(previous, { recursive: true, force: true });
}

/** The complete version of an installed folder: `target`, else what a crash left in `<target>.previous`. */
export function findInstalled(target: string, isComplete: (dir: string) => boolean): string | undefined {
  for (const candidate of [target, `${target}.previous`])
    if (fs.existsSync(candidate) && isComplete(candidate)) return candidate;
  return undefined;
}

/**
 * Removes temp files and folders (`*.tmp-<pid>-*`) that a dead process left in `dir`:
 * interrupted checkpoints, extractions, exports. Returns what was removed.
 */
export function removeDeadTemps(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  const removed: string[] = [];
  for (const name of fs.readdirSync(dir)) {
    const match = tempPattern.exec(name);
    if (!match || isProcessAlive(Number(match[1]))) continue;
    fs.rmSync(path.join(dir, name), { recursive: true, force: true });
    removed.push(path.join(dir, name));
  }
  return removed;
}

/**
 * A new file in `dir` (created when missing), open for reading and writing and already
 * unlinked: Linux keeps it while it is open and frees it when tlx exits, however it exits.
 */
export function openUnlinkedFile(dir: string, prefix: string): number {
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${prefix}-${process.pid}-${Date.now()}-${randomSuffix()}`);
  const fd = fs.openSync(file, 'wx+');
  fs.unlinkSync(file);
  return fd;
}

/** Bytes free for tlx's own files under `dir` (created when missing), keeping 1 GiB spare for everything else. */
export function diskRoom(dir: string): number {
  fs.mkdirSync(dir, { recursive: true });
  const { bavail, bsize } = fs.statfsSync(dir);
  return Math.max(0, bavail * bsize - 1024 ** 3);
}
