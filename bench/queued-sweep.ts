/**
 * A queued sweep against the same sweep run locally, on this machine: the quickstart over
 * three fine_tune_at values (configs/sweep-quickstart.yaml, sweep.export best), with a real
 * redis-server and MLflow server. Locally the trials run in one process; queued, two
 * `tlx worker`s (each its own runs folder, cache and temp folder, as on two machines) run
 * them, each trial in a process of its own, and everything they share goes through Redis
 * and MLflow's artifact store.
 *
 *   npx tsx bench/queued-sweep.ts [--repeats 1]
 *
 * Prints the walls and their ratio, what each trial sent to and took from the artifact store,
 * the data shipped once, and what the store holds at the end.
 */
import { execa, type ResultPromise } from 'execa';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { freePort, startMlflowServer } from '../src/track/mlflow-server.ts';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const tlx = path.join(root, 'bin', 'tlx.mjs');
const config = path.join(root, 'configs', 'sweep-quickstart.yaml');
const { values: options } = parseArgs({ options: { repeats: { type: 'string', default: '1' } } });

async function startRedis(dir: string): Promise<{ url: string; stop: () => Promise<void> }> {
  const port = await freePort();
  const password = Math.random().toString(36).slice(2);
  fs.writeFileSync(path.join(dir, 'redis.conf'), `requirepass ${password}\n`);
  const child = execa(
    'redis-server',
    [
      path.join(dir, 'redis.conf'),
      '--port',
      String(port),
      '--bind',
      '127.0.0.1',
      '--dir',
      dir,
      '--appendonly',
      'yes',
      '--maxmemory-policy',
      'noeviction',
      '--save',
      '',
    ],
    { reject: false, stdio: 'ignore' },
  );
  for (let i = 0; i < 100; i++) {
    const ping = await execa('redis-cli', ['-p', String(port), 'ping'], {
      reject: false,
      env: { REDISCLI_AUTH: password },
    });
    if (String(ping.stdout).trim() === 'PONG') break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return { url: `redis://:${password}@127.0.0.1:${port}`, stop: async () => void (child.kill('SIGTERM'), await child) };
}

/** The JSON log lines of a process's stderr. */
function logLines(stderr: string): Record<string, unknown>[] {
  return stderr
    .split('\n')
    .filter((line) => line.startsWith('{'))
    .map((line) => JSON.parse(line) as Record<string, unknown>);
}

function folderBytes(dir: string): number {
  if (!fs.existsSync(dir)) return 0;
  return fs
    .readdirSync(dir, { recursive: true, withFileTypes: true })
    .reduce((sum, entry) => sum + (entry.isFile() ? fs.statSync(path.join(entry.parentPath, entry.name)).size : 0), 0);
}

const mib = (bytes: number) => `${(bytes / 1024 ** 2).toFixed(1)} MiB`;

async function once(repeat: number): Promise<{ local: number; queued: number }> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'tlx-bench-queue-'));
  const redis = await startRedis(work);
  const mlflow = await startMlflowServer({ dataDir: path.join(work, 'mlflow') });
  const env = { MLFLOW_TRACKING_URI: mlflow.url, TLX_QUEUE_URL: redis.url };
  const sweepArgs = ['sweep', config, '--set', 'sweep.export=best', '--set', `name=bench-queue-${repeat}`];
  const workers: ResultPromise[] = [];
  try {
    let started = performance.now();
    const local = await execa(process.execPath, [tlx, '--runs-dir', path.join(work, 'local'), ...sweepArgs], {
      env,
      reject: false,
    });
    const localSeconds = (performance.now() - started) / 1000;
    if (local.exitCode !== 0) throw new Error(`local sweep: ${String(local.stderr).slice(-2000)}`);
    for (const name of ['w1', 'w2']) {
      const dir = path.join(work, name);
      fs.mkdirSync(path.join(dir, 'tmp'), { recursive: true });
      workers.push(
        execa(process.execPath, [tlx, '--runs-dir', path.join(dir, 'runs'), 'worker'], {
          env: { ...env, TLX_CACHE_DIR: path.join(dir, 'cache'), TMPDIR: path.join(dir, 'tmp') },
          reject: false,
        }),
      );
    }
    started = performance.now();
    const queued = await execa(
      process.execPath,
      [tlx, '--runs-dir', path.join(work, 'submitter'), ...sweepArgs, '--queue', '--wait'],
      { env, reject: false },
    );
    const queuedSeconds = (performance.now() - started) / 1000;
    if (queued.exitCode !== 0) throw new Error(`queued sweep: ${String(queued.stderr).slice(-2000)}`);
    for (const worker of workers) worker.kill('SIGTERM');
    const workerLogs = await Promise.all(workers.map(async (worker) => logLines(String((await worker).stderr))));
    console.log(
      `repeat ${repeat}: local ${localSeconds.toFixed(1)} s, queued on 2 workers ${queuedSeconds.toFixed(1)} s (${(queuedSeconds / localSeconds).toFixed(2)}x)`,
    );
    for (const [i, lines] of workerLogs.entries()) {
      for (const line of lines.filter((l) => typeof l.bytes_sent === 'number'))
        console.log(
          `  w${i + 1} trial ${String(line.trial)}: sent ${mib(line.bytes_sent as number)}, received ${mib(line.bytes_received as number)}`,
        );
    }
    const shipped = logLines(String(queued.stderr)).find(
      (line) => typeof line.bytes === 'number' && String(line.key).startsWith('tlx/datasets/'),
    );
    if (shipped) console.log(`  dataset shipped once: ${mib(shipped.bytes as number)}`);
    console.log(
      `  the artifact store holds ${mib(folderBytes(path.join(work, 'mlflow', 'artifacts', 'tlx')))} of tlx/ (the copies of 3 trials and the data) at the end`,
    );
    return { local: localSeconds, queued: queuedSeconds };
  } finally {
    for (const worker of workers) worker.kill('SIGTERM');
    await Promise.allSettled(workers);
    await mlflow.stop();
    await redis.stop();
    fs.rmSync(work, { recursive: true, force: true });
  }
}

const results = [];
for (let repeat = 0; repeat < Number(options.repeats); repeat++) results.push(await once(repeat));
const median = (values: number[]) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)];
const local = median(results.map((r) => r.local));
const queued = median(results.map((r) => r.queued));
console.log(
  `median: local ${local.toFixed(1)} s, queued ${queued.toFixed(1)} s, ${(queued / local).toFixed(2)}x (${os.cpus().length} cores, ${os.cpus()[0]?.model})`,
);
