import fs from 'node:fs';

/**
 * Fault injection for the crash-safety tests, and nothing else. Without the variables
 * these are no-ops.
 *
 * - TLX_TEST_KILL_AT=<point> (or <point>@<n> for its n-th occurrence): the process kills
 *   itself with SIGKILL when it reaches that point, as a power cut or `kill -9` would.
 * - TLX_TEST_HOLD_AT=<point>[@<n>] with TLX_TEST_HOLD_UNTIL=<file>: the process stops
 *   there (holding whatever it holds, its lock included) until the file exists, so a test
 *   can act while a run is certainly alive, on a slow machine as on a fast one.
 */
const counts = new Map<string, number>();

function reached(spec: string | undefined, name: string, key: string): boolean {
  if (!spec) return false;
  const [point, nth] = spec.split('@');
  if (point !== name) return false;
  const seen = (counts.get(key) ?? 0) + 1;
  counts.set(key, seen);
  return seen === Number(nth ?? 1);
}

function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

export function killPoint(name: string): void {
  if (reached(process.env.TLX_TEST_KILL_AT, name, `kill:${name}`)) process.kill(process.pid, 'SIGKILL');
  const release = process.env.TLX_TEST_HOLD_UNTIL;
  if (release && reached(process.env.TLX_TEST_HOLD_AT, name, `hold:${name}`)) {
    while (!fs.existsSync(release)) sleepSync(50);
  }
}
