import fs from 'node:fs';
import path from 'node:path';
import { Queue } from 'bullmq';
import { execa, type ResultPromise } from 'execa';
import { connect, queueName } from '../../src/sweep/queue.ts';
import { runTlx, tlxBin } from './cli.ts';
import { writeClassFolders } from './images.ts';
import { startMlflowServer, type MlflowServer } from './mlflow.ts';
import { startRedis, type RedisServer } from './redis.ts';
import { readMetrics, tinyDataAndModel, writeExperiment } from './runs.ts';
import { tempDir } from './tmp.ts';

/**
 * Machines that share nothing but a Redis and an MLflow server, on one: a real redis-server
 * (with a password) and MLflow server, a submitter's folder with its data, and `tlx worker`
 * processes, each in a mount namespace of its own (`unshare -m`) where a tmpfs hides the
 * submitter's folders, the servers' data and the other workers' folders: a worker sees its
 * own folders, the Redis and the MLflow server, as on another machine. Workers use short
 * BullMQ lock timings so that a killed worker's job moves on within seconds.
 */
export class QueueLab {
  readonly work: string;
  readonly submitter: string;
  readonly runsDir: string;
  readonly workerNames = ['w1', 'w2', 'w3'];
  redis!: RedisServer;
  mlflow!: MlflowServer;
  private readonly workers: ResultPromise[] = [];

  constructor(prefix: string) {
    this.work = tempDir(prefix);
    this.submitter = path.join(this.work, 'submitter');
    this.runsDir = path.join(this.submitter, 'runs');
  }

  async start(): Promise<void> {
    await writeClassFolders(path.join(this.submitter, 'data'), ['ants', 'bees'], 12, { size: 32 });
    this.redis = await startRedis(path.join(this.work, 'redis'));
    this.mlflow = await startMlflowServer({ dataDir: path.join(this.work, 'mlflow') });
  }

  async stop(): Promise<void> {
    await this.stopWorkers();
    await this.redis?.stop();
    await this.mlflow?.stop();
  }

  workerDir(name: string): string {
    return path.join(this.work, name);
  }

  /** Everything a worker may not see: the submitter's folder, the servers' data, the other workers' folders. */
  private hiddenFrom(name: string): string[] {
    const others = this.workerNames.filter((other) => other !== name).map((other) => this.workerDir(other));
    return [
      this.submitter,
      ...['redis', 'mlflow', 'local', 'elsewhere'].map((folder) => path.join(this.work, folder)),
      ...others,
    ];
  }

  /**
   * `tlx worker` in its own mount namespace, with its own runs folder, cache and temp folder;
   * the queue URL in its environment. A trial's copy is saved after every epoch (`--copy-every
   * 0`): the tests' trials take a second, not the default 30 s.
   */
  startWorker(name: string, env: Record<string, string> = {}, args: string[] = ['--copy-every', '0']): ResultPromise {
    const dir = this.workerDir(name);
    for (const sub of ['runs', 'cache', 'tmp']) fs.mkdirSync(path.join(dir, sub), { recursive: true });
    const hidden = this.hiddenFrom(name);
    for (const folder of hidden) fs.mkdirSync(folder, { recursive: true });
    const mounts = hidden.map((folder) => `mount -t tmpfs tmpfs '${folder}'`);
    const script = [
      ...mounts,
      `exec '${process.execPath}' '${tlxBin}' --runs-dir '${path.join(dir, 'runs')}' worker --cache-dir '${path.join(dir, 'cache')}' ${args.join(' ')}`,
    ].join(' && ');
    const worker = execa('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script], {
      cwd: dir,
      // --cache-dir, not $TLX_CACHE_DIR, says where downloads go (a test looks there).
      env: {
        TLX_QUEUE_URL: this.redis.url,
        MLFLOW_TRACKING_URI: this.mlflow.url,
        TLX_QUEUE_LOCK_MS: '3000',
        TLX_CACHE_DIR: path.join(dir, 'not-the-cache'),
        TMPDIR: path.join(dir, 'tmp'),
        ...env,
      },
      reject: false,
    });
    this.workers.push(worker);
    return worker;
  }

  /** A worker that is already gone (killed by a test) is forgotten. */
  forget(worker: ResultPromise): void {
    this.workers.splice(this.workers.indexOf(worker), 1);
  }

  async stopWorkers(): Promise<void> {
    for (const worker of this.workers.splice(0)) {
      worker.kill('SIGTERM');
      await worker;
    }
  }

  /** The coordinator, as a user runs it: the queue URL from $TLX_QUEUE_URL (so the password is not in `ps`). */
  sweep(args: string[], env: Record<string, string> = {}, runsDir = this.runsDir) {
    return runTlx(['--runs-dir', runsDir, 'sweep', ...args], {
      cwd: this.submitter,
      env: { TLX_QUEUE_URL: this.redis.url, MLFLOW_TRACKING_URI: this.mlflow.url, ...env },
      timeout: 600_000,
    });
  }

  experiment(
    name: string,
    grid: string,
    train = 'feature_extraction: { epochs: 2 }, fine_tune: { epochs: 1 }',
    extra = '',
    mlflow = 'experiment: tlx-queue',
  ): string {
    return writeExperiment(
      this.submitter,
      name,
      `seed: 4\n${tinyDataAndModel}train: { ${train} }\ntracking: { mlflow: { ${mlflow} } }\n${extra}sweep:\n  grid:\n${grid}\n`,
    );
  }

  /** The run folders of a sweep's trials on the workers, the first worker's of each (a leader's folder may be on several: its copy). */
  trialFolders(sweepName: string): Map<string, string> {
    return new Map([...this.trialCopies(sweepName)].map(([entry, dirs]) => [entry, dirs[0]]));
  }

  /** Every worker's folder of each trial: the one that ran it, and the copies followers brought of a leader's. */
  trialCopies(sweepName: string): Map<string, string[]> {
    const found = new Map<string, string[]>();
    for (const name of this.workerNames) {
      const dir = path.join(this.workerDir(name), 'runs');
      if (!fs.existsSync(dir)) continue;
      for (const entry of fs.readdirSync(dir).filter((d) => d.startsWith(`${sweepName}-`) && /-trial-\d+$/.test(d)))
        found.set(entry, [...(found.get(entry) ?? []), path.join(dir, entry)]);
    }
    return found;
  }

  /** The jobs whose ids start with `prefix`, with their state, attempts and reason. */
  async jobs(prefix: string): Promise<{ id: string; state: string; attempts: number; reason?: string }[]> {
    return this.withQueue(async (queue) => {
      const all = await queue.getJobs([
        'completed',
        'failed',
        'active',
        'wait',
        'delayed',
        'waiting-children',
        'prioritized',
      ]);
      const mine = all.filter((job) => job?.id?.startsWith(prefix));
      return (
        await Promise.all(
          mine.map(async (job) => ({
            id: job.id!,
            state: await job.getState(),
            attempts: job.attemptsMade,
            reason: job.failedReason,
          })),
        )
      ).sort((a, b) => a.id.localeCompare(b.id));
    });
  }

  async withQueue<T>(use: (queue: Queue, connection: ReturnType<typeof connect>) => Promise<T>): Promise<T> {
    const connection = connect(this.redis.url);
    const queue = new Queue(queueName, { connection });
    try {
      return await use(queue, connection);
    } finally {
      await queue.close();
      connection.disconnect();
    }
  }
}

/** The numbers each trial computed, by its swept values. */
export function trialNumbers(dirs: string[]): Record<string, unknown[]> {
  return Object.fromEntries(
    dirs.map((dir) => {
      const run = JSON.parse(fs.readFileSync(path.join(dir, 'run.json'), 'utf8')) as { trial: Record<string, unknown> };
      return [
        JSON.stringify(run.trial),
        readMetrics(dir).map((r) => [r.epoch, r.phase, r.loss, r.val_loss, r.val_accuracy]),
      ];
    }),
  );
}
