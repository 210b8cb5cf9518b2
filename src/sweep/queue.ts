import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DelayedError, Queue, UnrecoverableError, WaitingChildrenError, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';
import { minimalEnv, signalGroup, spawnChild } from '../core/child.ts';
import { UserError, errorMessage } from '../core/errors.ts';
import { removeDeadTemps, tempPathFor } from '../core/files.ts';
import type { Logger } from '../core/log.ts';
import { projectRoot } from '../core/project.ts';
import { redactText, redactUrl } from '../core/redact.ts';
import { writeChartPng } from '../plots/render.ts';
import { findCheckpoint } from '../run-folder/checkpoints.ts';
import { RunFolder } from '../run-folder/run-folder.ts';
import { SweepFolder } from '../run-folder/sweep-folder.ts';
import { SweepParentRun } from '../track/sweep-parent.ts';
import { trackingUriFor } from '../track/sync.ts';
import { describeAssignments, parentRunOf, planRecordOf, type GridValue, type SweepPlanned, type TrialJob } from './plan.ts';
import { bestTrial, resultsCsv, sweepPlotSpec, type SweepMetric, type TrialRow } from './report.ts';
import { trialRunId, type QueuedTrial } from './trial.ts';

/**
 * Sweeps across machines on BullMQ (Redis): the coordinator plans the sweep exactly as a
 * local one and enqueues its trials; `tlx worker` processes on any number of machines run
 * them, each trial in a child process of its own (training blocks the event loop; the
 * worker's own loop stays free to renew the job's lock, so a busy trial is never taken for
 * stalled, bullmq#2857).
 *
 * - Job ids are `<sweep>.trial-<n>`: a second coordinator, or the same command again,
 *   attaches to the sweep instead of enqueueing it twice. Completed jobs are kept.
 * - A shared feature-extraction phase is a parent job: the group's first trial trains it
 *   (and its own fine-tuning), then adds the group's other trials as its children, which
 *   start from its checkpoint; it completes when they have.
 * - A worker that dies (SIGKILL, power cut) stops renewing its lock: BullMQ detects the job
 *   as stalled and hands it to another worker, which resumes the trial's run folder from its
 *   last checkpoint (run folders live in the shared --artifacts folder, under fixed names).
 * - A trial that cannot succeed (invalid data: exit code 2; a failed export gate) fails once
 *   (UnrecoverableError); others are retried with backoff.
 * - Results are the jobs' return values, kept in Redis: the table is built from what the
 *   trials reported, whether or not a coordinator was watching.
 */

export const queueName = 'tlx-trials';

/** BullMQ's timings; a test makes them short to see a killed worker's job move on quickly. */
function timings(): { lockDuration: number; stalledInterval: number } {
  const lock = Number(process.env.TLX_QUEUE_LOCK_MS) || 30_000;
  return { lockDuration: lock, stalledInterval: Number(process.env.TLX_QUEUE_STALLED_MS) || lock };
}

export function connect(url: string): Redis {
  // BullMQ needs maxRetriesPerRequest null: commands wait out a Redis restart instead of failing.
  return new Redis(url, { maxRetriesPerRequest: null, enableReadyCheck: true, retryStrategy: (times) => Math.min(times * 200, 2000) });
}

interface TrialJobData {
  trial: QueuedTrial;
  /** The group's other trials, added as this job's children once its feature extraction is done. */
  followers: QueuedTrial[];
  step?: 'train' | 'children' | 'done';
  row?: TrialRow;
}

const jobOptions = { attempts: 3, backoff: { type: 'exponential', delay: 5000 }, removeOnComplete: false, removeOnFail: false } as const;

function jobId(sweepId: string, trial: number): string {
  return `${sweepId}.trial-${trial}`;
}

function queuedTrial(planned: SweepPlanned, job: TrialJob, runsDir: string, parentRunId: string | undefined, leaderTrial?: number): QueuedTrial {
  return {
    sweepId: planned.id,
    trial: job.plan.index,
    assignments: job.plan.assignments,
    config: job.experiment.config,
    configSha256: job.configSha256,
    files: job.experiment.files,
    baseDir: job.experiment.baseDir,
    ...(leaderTrial !== undefined ? { leaderTrial } : {}),
    runsDir,
    ...(parentRunId ? { parentRunId } : {}),
    export: planned.exportPolicy === 'all' && Boolean(job.experiment.config.export.tflite),
    jobId: jobId(planned.id, job.plan.index),
  };
}

export interface EnqueueOptions {
  queueUrl: string;
  /** The shared folder for run and sweep folders (every worker must see it at the same path). */
  artifactsDir: string;
  log: Logger;
}

/** Enqueues a planned sweep (idempotently) and returns how many trial jobs were new. */
export async function enqueueSweep(planned: SweepPlanned, options: EnqueueOptions): Promise<{ added: number; parentRunId?: string }> {
  if (planned.exportPolicy === 'best') throw new UserError('sweep.export: best is not available with --queue yet (every worker would need the data to export); use all or none');
  const runsDir = path.resolve(options.artifactsDir);
  const folder = SweepFolder.at(runsDir, planned.id);
  fs.mkdirSync(folder.dir, { recursive: true });
  if (!fs.existsSync(folder.file('plan.json'))) {
    folder.writePlan(planRecordOf(planned, path.resolve(planned.file)));
  }
  const trackingUri = trackingUriFor(planned.base.config);
  const parent = trackingUri
    ? await SweepParentRun.open(folder, { trackingUri, log: options.log, ...parentRunOf(planned) })
    : undefined;
  const connection = connect(options.queueUrl);
  const queue = new Queue<TrialJobData>(queueName, { connection });
  try {
    let added = 0;
    const groups = new Map<string, TrialJob[]>();
    for (const job of planned.jobs) groups.set(job.group, [...(groups.get(job.group) ?? []), job]);
    for (const members of groups.values()) {
      const [leader, ...rest] = members;
      const id = jobId(planned.id, leader.plan.index);
      if (await queue.getJob(id)) continue;
      const followers = leader.experiment.config.train.feature_extraction.epochs > 0 ? rest : [];
      const alone = leader.experiment.config.train.feature_extraction.epochs > 0 ? [] : rest;
      for (const job of [leader, ...alone]) {
        const data: TrialJobData = { trial: queuedTrial(planned, job, runsDir, parent?.runId), followers: job === leader ? followers.map((f) => queuedTrial(planned, f, runsDir, parent?.runId, leader.plan.index)) : [] };
        const existing = await queue.getJob(jobId(planned.id, job.plan.index));
        if (existing) continue;
        await queue.add('trial', data, { ...jobOptions, jobId: jobId(planned.id, job.plan.index) });
        added++;
      }
    }
    options.log.info({ sweep: planned.id, added, trials: planned.jobs.length, queue: redactUrl(options.queueUrl) }, added ? `sweep ${planned.id}: ${added} trial job(s) enqueued` : `sweep ${planned.id} is already on the queue; attaching to it`);
    return { added, parentRunId: parent?.runId };
  } finally {
    await queue.close();
    connection.disconnect();
  }
}

export interface TrialStatusRow extends TrialRow {
  job_state: string;
}

/** Each trial's state and result, from the queue alone. */
export async function sweepStatus(sweepId: string, trials: { trial: number; assignments: Record<string, GridValue> }[], queueUrl: string): Promise<TrialStatusRow[]> {
  const connection = connect(queueUrl);
  const queue = new Queue<TrialJobData>(queueName, { connection });
  try {
    const rows: TrialStatusRow[] = [];
    for (const { trial, assignments } of trials) {
      const queued = await queue.getJob(jobId(sweepId, trial));
      const state = queued ? await queued.getState() : 'not yet enqueued (waits for its group\'s feature extraction)';
      const value = (queued?.returnvalue as TrialRow | undefined) ?? queued?.data.row;
      const finished = state === 'completed' || (state === 'waiting-children' && value);
      rows.push({
        ...(value ?? { trial, assignments }),
        trial,
        assignments,
        status: finished ? 'finished' : state === 'failed' ? 'failed' : state === 'active' ? 'running' : 'pending',
        job_state: state,
        ...(state === 'failed' ? { error: redactText(queued?.failedReason ?? 'failed') } : {}),
      });
    }
    return rows;
  } finally {
    await queue.close();
    connection.disconnect();
  }
}

/** Follows a sweep until every trial has finished or failed, one line per trial as it ends. */
export async function waitForSweep(planned: SweepPlanned, options: EnqueueOptions & { pollMs?: number }): Promise<TrialStatusRow[]> {
  const told = new Set<number>();
  for (;;) {
    const rows = await sweepStatus(planned.id, planned.jobs.map((job) => ({ trial: job.plan.index, assignments: job.plan.assignments })), options.queueUrl);
    for (const row of rows) {
      if ((row.status === 'finished' || row.status === 'failed') && !told.has(row.trial)) {
        told.add(row.trial);
        options.log.info({ trial: row.trial, status: row.status, val_accuracy: row.val_accuracy }, `trial ${row.trial} (${describeAssignments(row.assignments)}): ${row.status}${row.val_accuracy !== undefined ? `, val_accuracy ${row.val_accuracy.toFixed(4)}` : ''}${row.error ? `: ${row.error}` : ''} [${told.size}/${rows.length}]`);
      }
    }
    if (rows.every((row) => row.status === 'finished' || row.status === 'failed')) return rows;
    await new Promise((resolve) => setTimeout(resolve, options.pollMs ?? 1000));
  }
}

/** The sweep folder's results from what the trials reported, and the parent run's last word. */
export async function writeQueuedResults(planned: SweepPlanned, rows: TrialRow[], options: EnqueueOptions): Promise<TrialRow | undefined> {
  const folder = SweepFolder.at(path.resolve(options.artifactsDir), planned.id);
  const metric = planned.metric as SweepMetric;
  const best = bestTrial(rows, metric, planned.goal);
  folder.writeResults(resultsCsv(rows), { sweep_id: planned.id, metric, goal: planned.goal, export: planned.exportPolicy, best_trial: best?.trial ?? null, best_run: best?.run_id ?? null, trials: rows });
  try {
    await writeChartPng(sweepPlotSpec(rows, metric), folder.plot());
  } catch (error) {
    options.log.warn({ error: errorMessage(error) }, 'could not draw the sweep plot');
  }
  const trackingUri = trackingUriFor(planned.base.config);
  if (trackingUri) {
    const parent = await SweepParentRun.open(folder, { trackingUri, log: options.log, ...parentRunOf(planned) });
    await parent?.finish({ metric, value: best ? (best[metric] as number | undefined) : undefined, runId: best?.run_id }, rows.some((r) => r.status === 'failed'));
  }
  return best;
}

// ---- the worker ------------------------------------------------------------------------

export interface WorkerOptions {
  queueUrl: string;
  concurrency: number;
  cacheDir?: string;
  log: Logger;
}

interface ChildResult {
  exitCode?: number;
  row?: TrialRow;
  error?: string;
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
async function runTrialChild(trial: QueuedTrial, options: WorkerOptions, active: Set<ReturnType<typeof spawnChild>>): Promise<ChildResult> {
  const leftovers = removeDeadTemps(trialWorkRoot());
  if (leftovers.length) options.log.debug({ removed: leftovers }, `removed ${leftovers.length} trial folder(s) of workers that died`);
  const work = tempPathFor(path.join(trialWorkRoot(), `${trial.sweepId}-${trial.trial}`));
  fs.mkdirSync(work, { recursive: true });
  const request = path.join(work, 'trial.json');
  const result = path.join(work, 'result.json');
  fs.writeFileSync(request, JSON.stringify(trial));
  const env = { ...minimalEnv(), ...Object.fromEntries(Object.entries(process.env).filter(([key]) => key.startsWith('MLFLOW_') || key.startsWith('TLX_') || key === 'TF_CPP_MIN_LOG_LEVEL')) } as Record<string, string>;
  const child = spawnChild(process.execPath, [path.join(projectRoot, 'bin', 'tlx.mjs'), '--json', ...(options.cacheDir ? ['--cache-dir', options.cacheDir] : []), '__trial', request, result], { env, watchParent: true, buffer: false });
  active.add(child);
  child.stderr?.on('data', (chunk: Buffer) => process.stderr.write(chunk));
  try {
    const done = await child;
    const row = fs.existsSync(result) ? (JSON.parse(fs.readFileSync(result, 'utf8')) as { row?: TrialRow; error?: string }) : {};
    return { exitCode: done.exitCode ?? undefined, ...row };
  } finally {
    active.delete(child);
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** A failed leader's followers, as jobs of their own (idempotent: the same job ids). */
async function enqueueOrphans(queue: Queue<TrialJobData>, leader: QueuedTrial, followers: QueuedTrial[]): Promise<void> {
  const leaderFolder = RunFolder.tryOpen(path.join(leader.runsDir, trialRunId(leader.sweepId, leader.trial)));
  const shareable = Boolean(leaderFolder && findCheckpoint(leaderFolder.checkpoint('feature_extraction')));
  for (const follower of followers) {
    const { leaderTrial: _leader, ...alone } = follower;
    await queue.add('trial', { trial: shareable ? follower : alone, followers: [] }, { ...jobOptions, jobId: follower.jobId });
  }
}

/**
 * `tlx worker`: runs queued trials until stopped. Ctrl-C once: finish the current trials,
 * then exit; twice: stop them at the next batch (checkpointed) and give them back to the
 * queue for another worker; three times: exit at once.
 */
export async function runWorker(options: WorkerOptions): Promise<void> {
  const { log } = options;
  const connection = connect(options.queueUrl);
  const queue = new Queue<TrialJobData>(queueName, { connection });
  const active = new Set<ReturnType<typeof spawnChild>>();
  let givingBack = false;
  const processor = async (job: Job<TrialJobData>, token?: string): Promise<TrialRow | undefined> => {
    const { trial } = job.data;
    let step = job.data.step ?? 'train';
    if (step === 'train') {
      log.info({ job: job.id, trial: trial.trial, attempt: job.attemptsMade + 1 }, `trial ${trial.trial} (${describeAssignments(trial.assignments)}): starting`);
      const outcome = await runTrialChild(trial, options, active);
      if (outcome.exitCode === 130 && givingBack) {
        // Checkpointed and given back: another worker resumes it; no attempt is spent.
        await job.moveToDelayed(Date.now() + 1000, token);
        throw new DelayedError();
      }
      if (outcome.exitCode !== 0 || !outcome.row) {
        const message = outcome.error ?? `the trial process exited with code ${outcome.exitCode}`;
        if (outcome.exitCode === 2 || /^export failed/.test(message)) {
          // The group's other trials must still run (a sweep waits for every trial): from this
          // trial's feature extraction when it got that far, as in a local sweep, else on their own.
          await enqueueOrphans(queue, trial, job.data.followers);
          throw new UnrecoverableError(message);
        }
        if (job.attemptsMade + 1 >= (job.opts.attempts ?? 1)) await enqueueOrphans(queue, trial, job.data.followers);
        throw new Error(message);
      }
      await job.updateData({ ...job.data, row: outcome.row, step: job.data.followers.length ? 'children' : 'done' });
      step = job.data.followers.length ? 'children' : 'done';
      if (step === 'children') {
        for (const follower of job.data.followers) {
          await queue.add('trial', { trial: follower, followers: [] }, { ...jobOptions, jobId: follower.jobId, parent: { id: job.id!, queue: job.queueQualifiedName }, ignoreDependencyOnFailure: true });
        }
        log.info({ job: job.id, children: job.data.followers.length }, `trial ${trial.trial}: feature extraction shared with ${job.data.followers.length} trial(s)`);
      }
    }
    if (step === 'children') {
      if (await job.moveToWaitingChildren(token!)) throw new WaitingChildrenError();
      await job.updateData({ ...job.data, step: 'done' });
    }
    return job.data.row;
  };
  const workerConnection = connect(options.queueUrl);
  const worker = new Worker<TrialJobData>(queueName, processor, { connection: workerConnection, concurrency: options.concurrency, ...timings(), maxStalledCount: 3, autorun: true });
  worker.on('completed', (job) => job.data.step === 'done' && log.info({ job: job.id }, `trial ${job.data.trial.trial}: done`));
  worker.on('failed', (job, error) => job && !(error instanceof DelayedError) && log.warn({ job: job.id, error: redactText(error.message) }, `trial ${job.data.trial.trial}: ${redactText(error.message)}`));
  worker.on('error', (error) => log.warn({ error: redactText(error.message) }, 'queue connection problem; retrying'));
  let signals = 0;
  let connected = false;
  const stopped = new Promise<void>((resolve) => {
    const onSignal = () => {
      signals++;
      if (signals === 1 && active.size === 0) {
        // Nothing to finish: stop now, even when Redis is unreachable (a graceful close would
        // wait for it). Before the first connection, BullMQ's close would drop the listeners
        // of a connection still being set up, whose failure then ends the process with an
        // unhandled 'error' event; a job claimed in between goes back to the queue as stalled.
        log.warn('worker: stopping (no trial running)');
        if (connected) void withinSeconds(worker.close(true), 5).then(resolve);
        else resolve();
      } else if (signals === 1) {
        log.warn('worker: finishing the current trial(s), then stopping (Ctrl-C again to checkpoint them and give them back)');
        void worker.close().then(resolve);
      } else if (signals === 2) {
        givingBack = true;
        log.warn('worker: stopping the current trial(s) after their batch and giving them back to the queue');
        for (const child of active) signalGroup(child, 'SIGINT');
      } else process.exit(130);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  });
  // Ready means connected: both connections have answered, so a stop from here on closes cleanly.
  void Promise.all([worker.waitUntilReady(), queue.waitUntilReady()]).then(
    () => {
      connected = true;
      if (signals === 0) log.info({ queue: redactUrl(options.queueUrl), concurrency: options.concurrency, pid: process.pid }, 'worker ready');
    },
    () => undefined,
  );
  await stopped;
  if (connected) await withinSeconds(queue.close(), 5);
  // ioredis reconnects for ever; nothing may keep the process alive once the worker is closed.
  connection.disconnect();
  workerConnection.disconnect();
  log.info('worker stopped');
}

/** Waits for a promise at most this long (closing against an unreachable Redis never ends). */
async function withinSeconds(promise: Promise<unknown>, seconds: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([promise.catch(() => undefined), new Promise((resolve) => (timer = setTimeout(resolve, seconds * 1000)))]);
  clearTimeout(timer);
}
