import fs from 'node:fs';
import path from 'node:path';
import type { LoadedExperiment } from '../config/load.ts';
import type { ResolvedExperiment } from '../config/resolved.ts';
import { removeDeadTemps } from '../core/files.ts';
import type { Logger } from '../core/log.ts';
import { executeRun, type RunOptions } from '../run/run.ts';
import { seedFromFeatureExtraction } from '../run/seed.ts';
import { RunFolder } from '../run-folder/run-folder.ts';
import { SweepFolder } from '../run-folder/sweep-folder.ts';
import type { GridValue } from './plan.ts';
import type { TrialRow } from './report.ts';

/**
 * One queued trial, as a worker runs it: everything it needs travels in the job (the
 * resolved config, never the data), and its run folder has a fixed name in the shared
 * artifacts folder, so a worker that picks the trial up after another died finds the
 * folder and resumes it from its last checkpoint instead of starting again.
 */
export interface QueuedTrial {
  sweepId: string;
  trial: number;
  assignments: Record<string, GridValue>;
  config: ResolvedExperiment;
  configSha256: string;
  files: string[];
  baseDir: string;
  /** The trial whose feature-extraction checkpoint this one starts from (shared phase). */
  leaderTrial?: number;
  /** The shared folder holding the trials' run folders (--artifacts). */
  runsDir: string;
  parentRunId?: string;
  export: boolean;
  /** The queue job id: a lock this job left on a dead worker is taken over. */
  jobId: string;
}

export function trialRunId(sweepId: string, trial: number): string {
  return `${sweepId}-trial-${trial}`;
}

/** A trial's row for the sweep table, from its run folder. */
export function trialRow(trial: number, assignments: Record<string, GridValue>, folder: RunFolder | undefined, status: string, extra: Partial<TrialRow> = {}): TrialRow {
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
    exported: tflite?.status === 'verified',
    minutes: summary ? summary.seconds / 60 : undefined,
    ...extra,
  };
}

export async function runQueuedTrial(job: QueuedTrial, options: { log: Logger; interrupt?: { readonly requested: boolean }; cacheDir?: string }): Promise<TrialRow> {
  const runId = trialRunId(job.sweepId, job.trial);
  const dir = path.join(job.runsDir, runId);
  removeDeadTemps(job.runsDir);
  let folder = RunFolder.tryOpen(dir);
  // A folder without run.json is a creation cut short: nothing in it to keep.
  if (!folder && fs.existsSync(dir)) fs.rmSync(dir, { recursive: true, force: true });
  if (folder?.hasSummary() && folder.readSummary().status === 'FINISHED') return trialRow(job.trial, job.assignments, folder, 'finished');
  const experiment: LoadedExperiment = { config: job.config, files: job.files, baseDir: job.baseDir, configSha256: job.configSha256 };
  const runOptions: RunOptions = { runsDir: job.runsDir, cacheDir: options.cacheDir, log: options.log, interrupt: options.interrupt, parentRunId: job.parentRunId, export: job.export, register: false, job: job.jobId };
  const trial = { assignments: job.assignments, sweep: { id: job.sweepId, dir: SweepFolder.at(job.runsDir, job.sweepId).dir } };
  let shared = false;
  if (!folder && job.leaderTrial !== undefined && job.config.train.feature_extraction.epochs > 0) {
    const leader = RunFolder.open(path.join(job.runsDir, trialRunId(job.sweepId, job.leaderTrial)));
    folder = seedFromFeatureExtraction(experiment, job.runsDir, leader, trial, runId);
    options.log.info({ trial: job.trial, from: leader.id }, 'feature extraction shared: starting from its checkpoint');
    shared = true;
  }
  const result = folder ? await executeRun({ resume: folder.dir }, runOptions) : await executeRun({ experiment, trial, runId }, runOptions);
  return trialRow(job.trial, job.assignments, result.folder, 'finished', { shared_feature_extraction: shared || job.leaderTrial !== undefined });
}
