import path from 'node:path';
import type { LoadedExperiment } from '../config/load.ts';
import { InterruptedError, UserError, errorMessage } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { ExportFailedError, executeRun, type RunStart, type TrialOf } from '../run/run.ts';
import { startFromFeatureExtraction } from '../run/start-from-leader.ts';
import { RunFolder } from '../run-folder/run-folder.ts';
import { SweepFolder } from '../run-folder/sweep-folder.ts';
import type { MlflowClient } from '../track/mlflow-client.ts';
import { InvalidJobError, type TrialTask } from './job.ts';
import { TrialMirror } from './mirror.ts';
import type { GridValue } from './plan.ts';
import type { TrialRow } from './report.ts';

/**
 * One trial, wherever it runs. Local sweeps and workers start a trial the same way
 * (startOfTrial): resume its own folder, else start from its group leader's
 * feature-extraction checkpoint (the state it would have reached itself), else afresh.
 * A queued trial (runQueuedTrial) finds its own folder and its leader's in the artifact
 * store, and keeps its own there as it runs.
 */

/** A queued trial's run folder name: fixed, so whoever continues the trial finds its copy. */
export function trialRunId(sweepId: string, trial: number): string {
  return `${sweepId}-trial-${trial}`;
}

/** A trial's row for the sweep table, from its run folder. */
export function trialRow(
  trial: number,
  assignments: Record<string, GridValue>,
  folder: RunFolder | undefined,
  status: string,
  extra: Partial<TrialRow> = {},
): TrialRow {
  const summary = folder?.hasSummary() ? folder.readSummary() : undefined;
  const tflite = summary?.export?.tflite;
  return {
    trial,
    assignments,
    status,
    run_id: folder?.id,
    run_dir: folder?.dir,
    best_val_accuracy: summary?.metrics.best_val_accuracy,
    val_accuracy: summary?.metrics.final?.val_accuracy,
    val_loss: summary?.metrics.final?.val_loss,
    test_accuracy: summary?.metrics.final?.test_accuracy,
    test_loss: summary?.metrics.final?.test_loss,
    tflite_quantization: tflite?.quantization,
    tflite_accuracy: tflite?.accuracy,
    tflite_bytes: tflite?.bytes,
    params: tflite?.params,
    macs_per_image: tflite?.macs_per_image,
    host_latency_ms_1: tflite?.host_latency_ms?.threads_1,
    host_latency_ms_4: tflite?.host_latency_ms?.threads_4,
    peak_memory_bytes: tflite?.peak_memory_bytes,
    footprint_trial: tflite?.macs_per_image !== undefined ? trial : undefined,
    exported: tflite?.status === 'verified',
    minutes: summary ? summary.seconds / 60 : undefined,
    ...extra,
  };
}

export interface TrialStartInput {
  experiment: LoadedExperiment;
  trial: TrialOf;
  runsDir: string;
  /** The trial's own folder from an earlier attempt. */
  own?: RunFolder;
  /** Its group leader's folder, holding the feature-extraction checkpoint it starts from. */
  leader?: RunFolder;
  /** A fixed run id (queued trials). */
  runId?: string;
  log: Logger;
}

/** Resume the trial's own folder, start from its leader's feature extraction, or start afresh. */
export function startOfTrial(input: TrialStartInput): { start: RunStart; shared: boolean } {
  const { experiment, trial, runsDir, own, leader, runId, log } = input;
  if (own) return { start: { resume: own.dir }, shared: false };
  if (leader && experiment.config.train.feature_extraction.epochs > 0) {
    if (leader.hasCheckpoint('feature_extraction')) {
      const started = startFromFeatureExtraction(experiment, runsDir, leader, trial, runId);
      log.info({ from: leader.id }, 'feature extraction shared: starting from its checkpoint');
      return { start: { resume: started.dir }, shared: true };
    }
    log.warn({ from: leader.id }, `${leader.id} has no feature-extraction checkpoint; this trial trains its own`);
  }
  return { start: { experiment, trial, ...(runId ? { runId } : {}) }, shared: false };
}

export interface QueuedTrialOptions {
  /** The worker's own runs folder: everything the trial writes goes here. */
  runsDir: string;
  cacheDir?: string;
  log: Logger;
  signal?: AbortSignal;
  /** The worker's tracking server: its artifact store holds the trial's copy. */
  client: MlflowClient;
  /** The queue job: a lock the same job left on a dead worker's process is taken over. */
  jobId: string;
  /** Seconds between two saves of the trial's copy while it trains (0: after every epoch). */
  copyEverySeconds?: number;
}

/**
 * A queued trial on a worker. Its copy in the artifact store, when there is one, is where it
 * continues (another worker may have run it until it died; an epoch MLflow has is always in
 * the copy); else its leader's copy gives it the feature extraction to start from; else it
 * starts afresh. The run keeps its copy up to date as it goes.
 */
export async function runQueuedTrial(task: TrialTask, options: QueuedTrialOptions): Promise<TrialRow> {
  const { runsDir, log } = options;
  const runId = trialRunId(task.sweepId, task.trial);
  const mirror = TrialMirror.of(options.client, task.sweepId, task.trial, options.copyEverySeconds);
  const own = (await mirror.restore(runsDir, runId)) ?? RunFolder.tryOpen(path.join(runsDir, runId));
  if (own)
    log.info(
      { run: runId, received: mirror.traffic.received },
      `trial ${task.trial}: continuing its run from the copy in the artifact store`,
    );
  const finished = own?.hasSummary() === true && own.readSummary().status === 'FINISHED';
  if (own && finished) return rowOf(task, own, task.startFrom !== undefined);
  const leaderMirror =
    task.startFrom === undefined ? undefined : TrialMirror.of(options.client, task.sweepId, task.startFrom);
  const leader = own || !leaderMirror ? undefined : await leaderCopy(task, leaderMirror, options);
  const trial: TrialOf = {
    assignments: task.assignments,
    sweep: { id: task.sweepId, dir: SweepFolder.at(runsDir, task.sweepId).dir },
  };
  const { start, shared } = startOfTrial({ experiment: task.experiment, trial, runsDir, own, leader, runId, log });
  const result = await executeRun(start, {
    runsDir,
    cacheDir: options.cacheDir,
    log,
    signal: options.signal,
    export: task.exportModel,
    register: false,
    services: { backup: mirror },
    sweep: { parentRunId: task.parentRunId, job: options.jobId },
  });
  const received = mirror.traffic.received + (leaderMirror?.traffic.received ?? 0);
  log.info(
    { trial: task.trial, bytes_sent: mirror.traffic.sent, bytes_received: received },
    `trial ${task.trial}: its copy in the artifact store is complete`,
  );
  return rowOf(task, result.folder, shared || (own !== undefined && task.startFrom !== undefined));
}

/**
 * How a trial failed, as the worker acts on it: `invalid` and `export` fail the job for good
 * (another attempt gives the same answer), `interrupted` gives it back, `error` is retried.
 */
export type TrialFailure = 'invalid' | 'export' | 'interrupted' | 'error';

export function trialFailureOf(error: unknown): TrialFailure {
  if (error instanceof InterruptedError) return 'interrupted';
  if (error instanceof ExportFailedError) return 'export';
  if (error instanceof UserError || error instanceof InvalidJobError) return 'invalid';
  return 'error';
}

/** The row a worker reports: no local path (the folder is the worker's, not the coordinator's). */
function rowOf(task: TrialTask, folder: RunFolder, shared: boolean): TrialRow {
  const { run_dir: _local, ...row } = trialRow(task.trial, task.assignments, folder, 'finished', {
    shared_feature_extraction: shared,
  });
  return row;
}

/** The leader's run folder on this worker: its own if it ran the leader, else the leader's copy; undefined when neither can be had. */
async function leaderCopy(
  task: TrialTask,
  leaderMirror: TrialMirror,
  options: QueuedTrialOptions,
): Promise<RunFolder | undefined> {
  const id = trialRunId(task.sweepId, task.startFrom!);
  const local = RunFolder.tryOpen(path.join(options.runsDir, id));
  if (local?.hasSummary()) return local;
  try {
    const copy = await leaderMirror.restore(options.runsDir, id);
    if (!copy)
      options.log.warn(
        { leader: id },
        `trial ${task.startFrom}'s copy is not in the artifact store; this trial trains its own feature extraction`,
      );
    return copy;
  } catch (error) {
    options.log.warn(
      { leader: id, error: errorMessage(error) },
      `could not get trial ${task.startFrom}'s copy; this trial trains its own feature extraction`,
    );
    return undefined;
  }
}
