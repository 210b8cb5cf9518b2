import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { UserError } from './errors.ts';
import { isProcessAlive } from './files.ts';

/**
 * One writer per folder, as git's index.lock: a writer creates `<folder>/.lock` with O_EXCL
 * and a second one is refused with the owner's pid, host and start time. A lock left by a
 * process that no longer exists on this host is taken over (with a log line); so is one
 * that a job queue handed on (the same job id, its previous worker declared dead by the
 * queue). The lock is released on exit, and a SIGKILLed owner is detected by its pid.
 *
 * Not proper-lockfile: its staleness is an mtime refreshed by a timer, and training blocks
 * the event loop for long stretches, which would make a live lock look stale.
 */

export interface LockOwner {
  pid: number;
  host: string;
  started: string;
  command: string;
  /** Queue job that owns the lock (tlx worker), when there is one. */
  job?: string;
}

export class LockedError extends UserError {
  override name = 'LockedError';
  constructor(
    message: string,
    readonly owner?: LockOwner,
  ) {
    super(message);
  }
}

export interface AcquireOptions {
  /** Logs a takeover of a stale lock. */
  onTakeover?: (owner: LockOwner | undefined, reason: string) => void;
  /** Queue job this process works for: a lock held for the same job is taken over. */
  job?: string;
}

const held = new Set<string>();
let exitHookInstalled = false;

function readOwner(file: string): LockOwner | undefined {
  try {
    const value = JSON.parse(fs.readFileSync(file, 'utf8')) as LockOwner;
    return typeof value.pid === 'number' && typeof value.host === 'string' ? value : undefined;
  } catch {
    return undefined;
  }
}

function staleReason(file: string, owner: LockOwner | undefined, options: AcquireOptions): string | undefined {
  if (!owner) {
    // Between O_EXCL create and the write, a lock file is briefly empty: only an old one is stale.
    const age = Date.now() - fs.statSync(file).mtimeMs;
    return age > 10_000 ? 'unreadable lock file' : undefined;
  }
  if (owner.host === os.hostname() && !isProcessAlive(owner.pid)) return `pid ${owner.pid} is not running`;
  if (options.job && owner.job === options.job && owner.pid !== process.pid)
    return `the queue handed job ${options.job} on`;
  return undefined;
}

export class FolderLock {
  private released = false;

  private constructor(
    readonly file: string,
    readonly owner: LockOwner,
  ) {}

  /** Takes the lock of `dir`, or throws LockedError ("<what> is in use by pid N on host H since T"). */
  static acquire(dir: string, what: string, options: AcquireOptions = {}): FolderLock {
    const file = path.join(dir, '.lock');
    const owner: LockOwner = {
      pid: process.pid,
      host: os.hostname(),
      started: new Date().toISOString(),
      command: process.argv.slice(2).join(' ').slice(0, 200),
      ...(options.job ? { job: options.job } : {}),
    };
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        const fd = fs.openSync(file, 'wx');
        try {
          fs.writeFileSync(fd, `${JSON.stringify(owner)}\n`);
          fs.fsyncSync(fd);
        } finally {
          fs.closeSync(fd);
        }
        const lock = new FolderLock(file, owner);
        held.add(file);
        installExitHook();
        return lock;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      }
      const current = readOwner(file);
      if (current && current.pid === process.pid && current.host === owner.host && held.has(file)) {
        throw new LockedError(`${what} is already open in this process (pid ${process.pid})`, current);
      }
      const reason = staleReason(file, current, options);
      if (!reason) {
        throw new LockedError(
          current
            ? `${what} is in use by pid ${current.pid} on host ${current.host} since ${current.started}`
            : `${what} is being locked by another process (${file})`,
          current,
        );
      }
      // Only one of several processes taking over wins this rename; the others retry.
      const aside = `${file}.stale-${process.pid}-${attempt}`;
      try {
        fs.renameSync(file, aside);
        fs.rmSync(aside, { force: true });
        options.onTakeover?.(current, reason);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
      }
    }
    throw new LockedError(`${what}: could not take the lock ${file}`);
  }

  /**
   * Waits for the lock of `dir` (a shared cache entry: another process is downloading the
   * same file), up to `timeoutMs`; a stale lock is taken over as in acquire.
   */
  static async acquireWhenFree(
    dir: string,
    what: string,
    options: AcquireOptions & { timeoutMs: number; onWait?: (owner: LockOwner | undefined) => void },
  ): Promise<FolderLock> {
    const deadline = Date.now() + options.timeoutMs;
    let told = false;
    for (;;) {
      try {
        return FolderLock.acquire(dir, what, options);
      } catch (error) {
        if (!(error instanceof LockedError) || Date.now() > deadline) throw error;
        if (!told) options.onWait?.(error.owner);
        told = true;
        await delay(250);
      }
    }
  }

  /** Who holds the lock of `dir` now, if anyone. */
  static ownerOf(dir: string): LockOwner | undefined {
    return readOwner(path.join(dir, '.lock'));
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    held.delete(this.file);
    const current = readOwner(this.file);
    if (current && current.pid === this.owner.pid && current.started === this.owner.started)
      fs.rmSync(this.file, { force: true });
  }
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const file of held) {
      const current = readOwner(file);
      if (current?.pid === process.pid) fs.rmSync(file, { force: true });
    }
  });
}
