import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { execa, type Options, type ResultPromise } from 'execa';
import { projectRoot } from './project.ts';

/**
 * Child processes (Python, trial workers, servers) that never outlive or surprise tlx:
 *
 * - each runs in its own process group, so a terminal's Ctrl-C reaches tlx only, and tlx
 *   decides what the child does (finish, checkpoint, or be stopped);
 * - stdin stays an open pipe that tlx's own children watch: when tlx dies, even by SIGKILL,
 *   the pipe closes and they exit instead of writing into a run that moved on; a program
 *   that does not watch it (the MLflow server) runs under `tied-child.mjs`, which does, and
 *   then stops the program's whole process group;
 * - the environment is what the child needs, not every secret of the parent's.
 */

const passedThrough = [
  'PATH',
  'HOME',
  'USER',
  'LANG',
  'LC_ALL',
  'LC_CTYPE',
  'TZ',
  'TMPDIR',
  'TEMP',
  'TMP',
  'SYSTEMROOT',
];

/** The parent's environment minus everything but locale, paths and user: add what the child needs. */
export function minimalEnv(extra: Record<string, string | undefined> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const key of passedThrough) if (process.env[key] !== undefined) env[key] = process.env[key]!;
  for (const [key, value] of Object.entries(extra)) if (value !== undefined) env[key] = value;
  return env;
}

export interface ChildOptions {
  env: Record<string, string>;
  cwd?: string;
  timeoutMs?: number;
  /** Keep stdin open as the parent-liveness pipe (tlx's own children read it); otherwise ignore. */
  watchParent?: boolean;
  /** A program that does not read the liveness pipe: run it under a watcher that ends its process group when tlx is gone. */
  tiedToParent?: boolean;
  /** Keep stdout/stderr in memory for the result (default); false for long-lived children read as streams. */
  buffer?: boolean;
}

const tiedChildScript = path.join(projectRoot, 'src', 'core', 'tied-child.mjs');

export function spawnChild(file: string, args: readonly string[], options: ChildOptions): ResultPromise<Options> {
  if (options.tiedToParent)
    return spawnChild(process.execPath, [tiedChildScript, file, ...args], {
      ...options,
      tiedToParent: false,
      watchParent: true,
    });
  return execa(file, args, {
    env: options.env,
    extendEnv: false,
    cwd: options.cwd,
    reject: false,
    detached: true,
    cleanup: true,
    stdin: options.watchParent ? 'pipe' : 'ignore',
    buffer: options.buffer ?? true,
    ...(options.timeoutMs ? { timeout: options.timeoutMs } : {}),
  }) as ResultPromise<Options>;
}

/** Sends a signal to a child's whole process group (servers spawn workers of their own). */
export function signalGroup(child: { pid?: number }, signal: NodeJS.Signals): void {
  if (!child.pid) return;
  try {
    process.kill(-child.pid, signal);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error;
  }
}

function groupAlive(pid: number): boolean {
  try {
    process.kill(-pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Stops a child's whole process group: SIGTERM, then SIGKILL after `graceMs`; returns when
 * no process of the group is left (a server's workers outlive their parent by a moment).
 */
export async function stopGroup(child: ResultPromise<Options>, graceMs = 10_000): Promise<void> {
  signalGroup(child, 'SIGTERM');
  const deadline = Date.now() + graceMs;
  await child;
  while (child.pid && groupAlive(child.pid)) {
    if (Date.now() > deadline) signalGroup(child, 'SIGKILL');
    await delay(50);
  }
}
