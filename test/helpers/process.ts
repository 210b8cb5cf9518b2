import fs from 'node:fs';
import type { ResultPromise } from 'execa';

/** Resolves when a child's stderr (JSON log lines) has printed a line matching `pattern`. */
export function waitForStderr(child: ResultPromise, pattern: RegExp, timeoutMs = 240_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(
      () => reject(new Error(`timed out waiting for ${pattern} in:\n${seen.slice(-2000)}`)),
      timeoutMs,
    );
    child.stderr!.on('data', (chunk: Buffer) => {
      seen += chunk.toString();
      const line = seen.split('\n').find((l) => pattern.test(l));
      if (line) {
        clearTimeout(timer);
        resolve(line);
      }
    });
    void child.then(() => {
      clearTimeout(timer);
      const line = seen.split('\n').find((l) => pattern.test(l));
      if (line) resolve(line);
      else reject(new Error(`the process ended before printing ${pattern}:\n${seen.slice(-2000)}`));
    });
  });
}

/** One process as /proc shows it; `start` (clock ticks after boot) tells a reused pid apart. */
export interface ProcessInfo {
  pid: number;
  ppid: number;
  start: string;
  state: string;
  command: string;
}

function readProcess(pid: number): ProcessInfo | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name in parentheses may hold spaces and parentheses: fields start after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const command = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
    return { pid, state: fields[0], ppid: Number(fields[1]), start: fields[19], command };
  } catch {
    return undefined; // it ended while we looked
  }
}

function allProcesses(): ProcessInfo[] {
  return fs
    .readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .map((name) => readProcess(Number(name)))
    .filter((p): p is ProcessInfo => p !== undefined);
}

/**
 * The processes below `rootPid` (children, their children, ...) whose command line contains
 * `text`: a test looks only at the processes it started, never at the rest of the machine,
 * so another tlx running beside the suite cannot make it pass or fail.
 */
export function descendantsOf(rootPid: number, text = ''): ProcessInfo[] {
  const processes = allProcesses();
  const found: ProcessInfo[] = [];
  let parents = new Set([rootPid]);
  while (parents.size > 0) {
    const children = processes.filter((p) => parents.has(p.ppid));
    found.push(...children);
    parents = new Set(children.map((p) => p.pid));
  }
  return found.filter((p) => p.command.includes(text));
}

function stillRunning(process: ProcessInfo): boolean {
  const now = readProcess(process.pid);
  return now !== undefined && now.start === process.start && now.state !== 'Z';
}

/**
 * Waits until every one of these processes has ended (true), or the time is up (false).
 * They are matched by pid and start time, so a pid reused by an unrelated process counts as ended.
 */
export async function allEnded(processes: ProcessInfo[], timeoutMs = 15_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (!processes.some(stillRunning)) return true;
    if (Date.now() > deadline) return false;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}
