import { execa, type ResultPromise } from 'execa';

/** Resolves when a child's stderr (JSON log lines) has printed a line matching `pattern`. */
export function waitForStderr(child: ResultPromise, pattern: RegExp, timeoutMs = 240_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let seen = '';
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${pattern} in:\n${seen.slice(-2000)}`)), timeoutMs);
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

/** Pids of processes whose command line contains `text`. */
export async function processesMatching(text: string): Promise<number[]> {
  const result = await execa('pgrep', ['-f', text], { reject: false });
  return String(result.stdout)
    .split('\n')
    .filter(Boolean)
    .map(Number)
    .filter((pid) => pid !== process.pid);
}

/** Waits until no process matches `text` (true), or the time is up (false). */
export async function noneLeft(text: string, timeoutMs = 15_000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if ((await processesMatching(text)).length === 0) return true;
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  return false;
}
