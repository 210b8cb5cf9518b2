import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { DelayedError, Queue, UnrecoverableError, Worker, type Job, type JobJsonRaw } from 'bullmq';
import { Redis } from 'ioredis';
import { minimalEnv, signalGroup, spawnChild } from '../core/child.ts';
import { UserError, errorMessage } from '../core/errors.ts';
import { stopSignals } from '../core/interrupt.ts';
import { removeDeadTemps, tempPathFor, writeJsonAtomic } from '../core/files.ts';
import type { Logger } from '../core/log.ts';
import { projectRoot } from '../core/project.ts';
import { redactText, redactUrl } from '../core/redact.ts';
import { InvalidJobError, checkJob, jobDataOf, type CheckedJob, type QueuedJobData } from './job.ts';
import type { TrialRow } from './report.ts';
import type { TrialFailure } from './trial.ts';

/**
 * The queue's transport on BullMQ (Redis): the coordinator adds trial jobs and reads their
 * outcomes; `tlx worker` processes on any number of machines run them, each trial in a
 * child process (training blocks the event loop; the worker's own loop stays free to renew
 * the job's lock, so a busy trial is never taken for stalled, bullmq#2857).
 *
 * - Job ids are `<sweep>.trial-<n>`: the same sweep enqueued twice adds nothing.
 * - A job is untrusted input (job.ts): checked before anything runs; a malformed one (not
 *   JSON, wrong shape, invalid config, prototype keys, traversal ids) fails at once, without
 *   retries, with a one-line reason, and the worker goes on.
 * - A group leader's job carries its followers; once it has run, its worker adds them,
 *   starting from its feature extraction (which they fetch from the artifact store).
 * - A worker that dies stops renewing its lock: BullMQ hands the job to another worker, which
 *   continues the trial from its copy in the artifact store.
 */

export const queueName = 'tlx-trials';

/** The Redis URL: --queue, else $TLX_QUEUE_URL (which keeps a password out of `ps`). */
export function queueUrlOf(flag: string | boolean | undefined): string {
  const url = typeof flag === 'string' ? flag : process.env.TLX_QUEUE_URL;
  if (!url)
    throw new UserError(
      "--queue: expected a Redis URL (redis:// or rediss://), as the flag's value or in $TLX_QUEUE_URL",
    );
  if (!/^rediss?:\/\//.test(url))
    throw new UserError(`--queue: ${redactUrl(url)}: expected a redis:// or rediss:// URL`);
  return url;
}

/** BullMQ's timings; a test makes them short to see a killed worker's job move on quickly. */
function timings(): { lockDuration: number; stalledInterval: number } {
  const lock = Number(process.env.TLX_QUEUE_LOCK_MS) || 30_000;
  return { lockDuration: lock, stalledInterval: Number(process.env.TLX_QUEUE_STALLED_MS) || lock };
}

export function connect(url: string): Redis {
  // BullMQ needs maxRetriesPerRequest null: commands wait out a Redis restart instead of failing.
  return new Redis(url, {
    maxRetriesPerRequest: null,
    enableReadyCheck: true,
    retryStrategy: (times) => Math.min(times * 200, 2000),
  });
}

function jobIdOf(sweepId: string, trial: number): string {
  return `${sweepId}.trial-${trial}`;
}

const jobOptions = {
  attempts: 3,
  backoff: { type: 'exponential', delay: 5000 },
  removeOnComplete: false,
  removeOnFail: false,
} as const;

/** Where a queued trial stands, from its job. */
export interface JobOutcome {
  status: 'pending' | 'running' | 'finished' | 'failed';
  /** BullMQ's own word for it (waiting, active, delayed, completed, failed, or not enqueued yet). */
  jobState: string;
  row?: TrialRow;
  error?: string;
}

/** The coordinator's side of the queue: add trial jobs, read their outcomes. */
export class TrialQueue {
  private readonly connection: Redis;
  private readonly queue: Queue<QueuedJobData>;

  constructor(url: string) {
    this.connection = connect(url);
    this.queue = new Queue<QueuedJobData>(queueName, { connection: this.connection });
  }

  /** Adds a trial's job unless the queue has it already; true when added. */
  async add(data: QueuedJobData): Promise<boolean> {
    const id = jobIdOf(data.sweepId, data.trial);
    if (await this.queue.getJob(id)) return false;
    await this.queue.add('trial', data, { ...jobOptions, jobId: id });
    return true;
  }

  async outcome(sweepId: string, trial: number): Promise<JobOutcome> {
    const job = await this.queue.getJob(jobIdOf(sweepId, trial));
    if (!job) return { status: 'pending', jobState: "not enqueued yet (waits for its group's feature extraction)" };
    const state = await job.getState();
    if (state === 'completed') return { status: 'finished', jobState: state, row: job.returnvalue as TrialRow };
    if (state === 'failed')
      return { status: 'failed', jobState: state, error: redactText(job.failedReason ?? 'failed').split('\n')[0] };
    return { status: state === 'active' ? 'running' : 'pending', jobState: state };
  }

  async close(): Promise<void> {
    await this.queue.close();
    this.connection.disconnect();
  }
}

// ---- the worker ------------------------------------------------------------------------

export interface WorkerOptions {
  queueUrl: string;
  concurrency: number;
  /** The worker's own folders: every trial's run folder, and the download cache. */
  runsDir: string;
  cacheDir?: string;
  /** Seconds between two saves of a trial's copy while it trains (0: after every epoch). */
  copyEverySeconds: number;
  log: Logger;
}

interface ChildResult {
  exitCode?: number;
  /** The signal that ended the trial process, when one did (SIGKILL: out of memory, or killed). */
  signal?: string;
  row?: TrialRow;
  error?: string;
  failure?: TrialFailure;
}

/** Job data that is not JSON, as the processor sees it: a reason instead of data. */
interface Unreadable {
  unreadable: string;
}

/**
 * A BullMQ worker that survives job data it cannot parse: BullMQ would throw while fetching
 * such a job and leave it active for ever; here it becomes a job whose processing fails at
 * once with the reason.
 */
class CheckingWorker extends Worker<QueuedJobData | Unreadable> {
  protected override createJob(data: JobJsonRaw, jobId: string): Job<QueuedJobData | Unreadable> {
    try {
      return super.createJob(data, jobId);
    } catch (error) {
      const reason = `job ${JSON.stringify(String(jobId).slice(0, 120))}: its data is not JSON (${errorMessage(error).split('\n')[0].slice(0, 120)})`;
      return super.createJob(
        { ...data, data: JSON.stringify({ unreadable: reason }), opts: JSON.stringify({ attempts: 1 }) },
        jobId,
      );
    }
  }
}

/**
 * Where a worker keeps each trial's request and result while the trial runs: a folder of
 * tlx's own (per user), so that what a SIGKILLed worker left there can be told by its pid
 * and removed before any worker's next trial, without touching anyone else's temp files.
 */
export function trialWorkRoot(tmpDir = os.tmpdir()): string {
  return path.join(tmpDir, `tlx-trials-${os.userInfo().uid}`);
}

/** Runs one trial in a child process (`tlx __trial`); it exits if this worker dies. */
async function runTrialChild(
  jobId: string,
  data: QueuedJobData,
  options: WorkerOptions,
  active: Set<ReturnType<typeof spawnChild>>,
): Promise<ChildResult> {
  const leftovers = removeDeadTemps(trialWorkRoot());
  if (leftovers.length)
    options.log.debug({ removed: leftovers }, `removed ${leftovers.length} trial folder(s) of workers that died`);
  const work = tempPathFor(path.join(trialWorkRoot(), 'trial'));
  fs.mkdirSync(work, { recursive: true });
  const request = path.join(work, 'trial.json');
  const result = path.join(work, 'result.json');
  writeJsonAtomic(request, { jobId, data, copyEverySeconds: options.copyEverySeconds });
  const env = {
    ...minimalEnv(),
    ...Object.fromEntries(
      Object.entries(process.env).filter(
        ([key]) => key.startsWith('MLFLOW_') || key.startsWith('TLX_') || key === 'TF_CPP_MIN_LOG_LEVEL',
      ),
    ),
  } as Record<string, string>;
  const args = [
    path.join(projectRoot, 'bin', 'tlx.mjs'),
    '--json',
    '--runs-dir',
    options.runsDir,
    ...(options.cacheDir ? ['--cache-dir', options.cacheDir] : []),
    '__trial',
    request,
    result,
  ];
  const child = spawnChild(process.execPath, args, { env, watchParent: true, buffer: false });
  active.add(child);
  child.stderr?.on('data', (chunk: Buffer) => process.stderr.write(chunk));
  try {
    const done = await child;
    const reported = fs.existsSync(result)
      ? (JSON.parse(fs.readFileSync(result, 'utf8')) as Omit<ChildResult, 'exitCode'>)
      : {};
    return { exitCode: done.exitCode ?? undefined, signal: done.signal ?? undefined, ...reported };
  } finally {
    active.delete(child);
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** The group's other trials, as jobs of their own starting from this one (idempotent: fixed job ids). */
async function addFollowers(queue: Queue<QueuedJobData | Unreadable>, checked: CheckedJob): Promise<void> {
  for (const follower of checked.followers) {
    const id = jobIdOf(follower.sweepId, follower.trial);
    if (!(await queue.getJob(id)))
      await queue.add('trial', jobDataOf({ ...follower, startFrom: checked.task.trial }), { ...jobOptions, jobId: id });
  }
}

interface WorkerState {
  queue: Queue<QueuedJobData | Unreadable>;
  active: Set<ReturnType<typeof spawnChild>>;
  /** Ctrl-C twice: running trials are checkpointed and given back to the queue. */
  givingBack: boolean;
}

/** One job: checked, run in a child process, its followers added; how it ended decides retries. */
async function processJob(
  job: Job<QueuedJobData | Unreadable>,
  token: string | undefined,
  state: WorkerState,
  options: WorkerOptions,
): Promise<TrialRow> {
  if (typeof job.data === 'object' && job.data !== null && 'unreadable' in job.data) {
    // Stored as JSON from now on: whatever reads the queue next (a dashboard, a coordinator) can parse it.
    await job.updateData(job.data);
    throw new UnrecoverableError(String(job.data.unreadable));
  }
  let checked: CheckedJob;
  try {
    checked = checkJob(job.data, job.id ?? '', options.runsDir);
  } catch (error) {
    if (error instanceof InvalidJobError) throw new UnrecoverableError(error.message);
    throw error;
  }
  const { task } = checked;
  options.log.info(
    { job: job.id, trial: task.trial, attempt: job.attemptsMade + 1 },
    `trial ${task.trial} of ${task.sweepId}: starting`,
  );
  const outcome = await runTrialChild(job.id!, job.data, options, state.active);
  if (outcome.exitCode === 0 && outcome.row) {
    await addFollowers(state.queue, checked);
    return outcome.row;
  }
  if (outcome.failure === 'interrupted' && state.givingBack) {
    // Checkpointed and given back: another worker continues it; no attempt is spent.
    await job.moveToDelayed(Date.now() + 1000, token);
    throw new DelayedError();
  }
  const message =
    outcome.error ??
    (outcome.signal
      ? `the trial process was killed (${outcome.signal})`
      : `the trial process exited with code ${outcome.exitCode}`);
  const lastAttempt = job.attemptsMade + 1 >= (job.opts.attempts ?? 1);
  const final = outcome.failure === 'invalid' || outcome.failure === 'export';
  // The group's other trials still run (a sweep waits for every trial): from this one's
  // feature extraction when its copy has it, else each trains its own.
  if (final || lastAttempt) await addFollowers(state.queue, checked);
  throw final ? new UnrecoverableError(message) : new Error(message);
}

/**
 * `tlx worker`: runs queued trials until stopped. Ctrl-C (or SIGTERM, SIGHUP) once: finish
 * the current trials, then exit; twice: stop them at the next batch (checkpointed) and give
 * them back to the queue for another worker; three times: exit at once.
 */
export async function runWorker(options: WorkerOptions): Promise<void> {
  const { log } = options;
  if (!process.env.MLFLOW_TRACKING_URI)
    throw new UserError(
      'tlx worker: set MLFLOW_TRACKING_URI to the tracking server the sweeps log to: trials, their data and their checkpoints travel through its artifact store',
    );
  const connection = connect(options.queueUrl);
  const state: WorkerState = { queue: new Queue(queueName, { connection }), active: new Set(), givingBack: false };
  const workerConnection = connect(options.queueUrl);
  const worker = new CheckingWorker(queueName, (job, token) => processJob(job, token, state, options), {
    connection: workerConnection,
    concurrency: options.concurrency,
    ...timings(),
    maxStalledCount: 3,
    autorun: true,
  });
  worker.on('completed', (job) => log.info({ job: job.id }, `job ${job.id}: done`));
  worker.on(
    'failed',
    (job, error) =>
      job &&
      !(error instanceof DelayedError) &&
      log.warn({ job: job.id }, `job ${job.id}: ${redactText(error.message)}`),
  );
  worker.on('error', (error) => log.warn({ error: redactText(error.message) }, 'queue connection problem; retrying'));
  let connected = false;
  const stopped = stopOnSignals(worker, state, log, () => connected);
  // Ready means connected: both connections have answered, so a stop from here on closes cleanly.
  void Promise.all([worker.waitUntilReady(), state.queue.waitUntilReady()]).then(
    () => {
      connected = true;
      log.info(
        {
          queue: redactUrl(options.queueUrl),
          concurrency: options.concurrency,
          runs_dir: options.runsDir,
          pid: process.pid,
        },
        'worker ready',
      );
    },
    () => undefined,
  );
  await stopped;
  if (connected) await withinSeconds(state.queue.close(), 5);
  // ioredis reconnects for ever; nothing may keep the process alive once the worker is closed.
  connection.disconnect();
  workerConnection.disconnect();
  log.info('worker stopped');
}

/** Resolves when the worker has stopped after Ctrl-C, SIGTERM or SIGHUP (see runWorker). */
function stopOnSignals(worker: Worker, state: WorkerState, log: Logger, connected: () => boolean): Promise<void> {
  let signals = 0;
  return new Promise<void>((resolve) => {
    const onSignal = () => {
      signals++;
      if (signals === 1 && state.active.size === 0) {
        // Nothing to finish: stop now, even when Redis is unreachable (a graceful close would
        // wait for it). Before the first connection, BullMQ's close would drop the listeners
        // of a connection still being set up, whose failure then ends the process with an
        // unhandled 'error' event; a job claimed in between goes back to the queue as stalled.
        log.warn('worker: stopping (no trial running)');
        if (connected()) void withinSeconds(worker.close(true), 5).then(resolve);
        else resolve();
      } else if (signals === 1) {
        log.warn(
          'worker: finishing the current trial(s), then stopping (Ctrl-C again to checkpoint them and give them back)',
        );
        void worker.close().then(resolve);
      } else if (signals === 2) {
        state.givingBack = true;
        log.warn('worker: stopping the current trial(s) after their batch and giving them back to the queue');
        for (const child of state.active) signalGroup(child, 'SIGINT');
      } else process.exit(130);
    };
    for (const signal of stopSignals) process.on(signal, onSignal);
  });
}

/** Waits for a promise at most this long (closing against an unreachable Redis never ends). */
async function withinSeconds(promise: Promise<unknown>, seconds: number): Promise<void> {
  // An unref'd timer: a close that does finish lets the process exit without waiting it out.
  await Promise.race([promise.catch(() => undefined), delay(seconds * 1000, undefined, { ref: false })]);
}
