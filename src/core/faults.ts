/**
 * Fault injection for the crash-safety tests, and nothing else: with
 * TLX_TEST_KILL_AT=<point> (or <point>@<n> for its n-th occurrence) the process kills
 * itself with SIGKILL when it reaches that point, as a power cut or `kill -9` would.
 * Without the variable this is a no-op.
 */
const spec = process.env.TLX_TEST_KILL_AT;
const counts = new Map<string, number>();

export function killPoint(name: string): void {
  if (!spec) return;
  const [point, nth] = spec.split('@');
  if (point !== name) return;
  const seen = (counts.get(name) ?? 0) + 1;
  counts.set(name, seen);
  if (seen === Number(nth ?? 1)) process.kill(process.pid, 'SIGKILL');
}
