import { z } from 'zod';
import { validateExperimentValue } from '../config/load.ts';
import type { ResolvedExperiment } from '../config/resolved.ts';
import { forbiddenKeyPaths } from '../config/sources.ts';
import { ConfigError, errorMessage, someOf } from '../core/errors.ts';
import { canonicalJson, sha256Hex } from '../core/hash.ts';
import type { LoadedExperiment } from '../config/load.ts';
import type { GridValue } from './plan.ts';

/**
 * A queued trial as it travels through Redis, and the worker's check of it. Anyone who can
 * write to the Redis can write a job, so a job is untrusted input: its shape is checked, its
 * config is validated again with the schema (the messages a file would get), ids must match
 * strict patterns (they become folder names), and nothing in it may name a place on the
 * worker: no dataset.path, no file: URL, no weights file, no tracking server. The data and
 * weights of a queued sweep travel as mlflow-artifacts:/ URIs, read through the worker's
 * own tracking server.
 */

/** A sweep id: the experiment name (the schema's pattern) and ten hex digits of the plan's hash. */
const sweepId = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,199}-[0-9a-f]{10}$/, 'expected <experiment name>-<10 hex digits>');
const trialIndex = z.number().int().min(0).max(99_999);

const QueuedTaskShape = z
  .object({
    sweepId,
    trial: trialIndex,
    assignments: z.record(z.string(), z.unknown()),
    config: z.unknown(),
    /** Export this trial's model (sweep.export: all). */
    exportModel: z.boolean(),
    /** The sweep's MLflow parent run. */
    parentRunId: z
      .string()
      .regex(/^[0-9a-f]{32}$/, 'expected an MLflow run id (32 hex digits)')
      .optional(),
    /** The trial whose feature-extraction phase this one starts from (same sweep). */
    startFrom: trialIndex.optional(),
  })
  .strict();
type QueuedTaskData = z.infer<typeof QueuedTaskShape>;

const QueuedJobShape = QueuedTaskShape.extend({ followers: z.array(QueuedTaskShape).max(10_000) }).strict();
export type QueuedJobData = z.infer<typeof QueuedJobShape>;

/** A trial a worker may run: checked ids, a validated config, nothing pointing into the worker. */
export interface TrialTask {
  sweepId: string;
  trial: number;
  assignments: Record<string, GridValue>;
  experiment: LoadedExperiment;
  exportModel: boolean;
  parentRunId?: string;
  startFrom?: number;
}

export interface CheckedJob {
  task: TrialTask;
  /** The group's other trials, enqueued by the worker once this one has finished (already checked). */
  followers: TrialTask[];
}

/** Why a job was refused: one line, for the job's failed reason and `tlx sweep status`. */
export class InvalidJobError extends Error {
  override name = 'InvalidJobError';
}

/** The place-naming keys a job may not use, each with why (checked after the schema). */
function foreignPlaces(config: ResolvedExperiment): string[] {
  const found: string[] = [];
  if (config.dataset.path !== undefined)
    found.push('dataset.path: a job may not name a folder (a queued sweep sends local data as mlflow-artifacts:/)');
  if (config.dataset.url?.startsWith('file:')) found.push('dataset.url: a job may not name a file: URL');
  const weights = config.model.weights;
  if (!['imagenet', 'none', 'npm:nsfwjs'].includes(weights) && !/^(https?:\/\/|mlflow-artifacts:\/)/.test(weights))
    found.push(
      'model.weights: a job may not name a file (expected imagenet, none, npm:nsfwjs, or an http(s) or mlflow-artifacts:/ URL)',
    );
  if (config.tracking.mlflow?.tracking_uri !== undefined)
    found.push('tracking.mlflow.tracking_uri: a worker logs to its own tracking server');
  return found;
}

function checkTask(data: QueuedTaskData, where: string, runsDir: string): TrialTask {
  let config: ResolvedExperiment;
  try {
    config = validateExperimentValue(data.config, `${where} config`);
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    const problems = error.problems.map((p) => `${p.keyPath ? `${p.keyPath}: ` : ''}${p.message}`);
    throw new InvalidJobError(`${where}: invalid config: ${someOf(problems, 3, '; ')}`);
  }
  const foreign = foreignPlaces(config);
  if (foreign.length > 0) throw new InvalidJobError(`${where}: ${foreign.join('; ')}`);
  // baseDir resolves relative paths, and a job has none: the worker's own folder keeps it inside.
  const experiment: LoadedExperiment = {
    config,
    files: [],
    baseDir: runsDir,
    configSha256: sha256Hex(canonicalJson(config)),
  };
  const { sweepId: id, trial, assignments, exportModel, parentRunId, startFrom } = data;
  if (startFrom === trial) throw new InvalidJobError(`${where}: startFrom: a trial cannot start from itself`);
  return {
    sweepId: id,
    trial,
    assignments: assignments as Record<string, GridValue>,
    experiment,
    exportModel,
    parentRunId,
    startFrom,
  };
}

/**
 * Checks a job's data, as the worker received it, into a task it may run. Any problem is an
 * InvalidJobError with a one-line reason: the job fails at once, without retries.
 */
export function checkJob(data: unknown, jobId: string, runsDir: string): CheckedJob {
  const where = `job ${JSON.stringify(String(jobId).slice(0, 120))}`;
  const forbidden = forbiddenKeyPaths(data);
  if (forbidden.length > 0)
    throw new InvalidJobError(
      `${where}: the key "${forbidden[0].at(-1)}" is not allowed (at ${forbidden[0].join('.')}): prototype keys are refused`,
    );
  const parsed = QueuedJobShape.safeParse(data);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new InvalidJobError(`${where}: ${issue.path.join('.') || '(data)'}: ${issue.message}`);
  }
  try {
    const task = checkTask(parsed.data, where, runsDir);
    const followers = parsed.data.followers.map((follower, i) => {
      if (follower.sweepId !== task.sweepId)
        throw new InvalidJobError(`${where}: followers.${i}: belongs to another sweep`);
      return checkTask(follower, `${where} follower ${follower.trial}`, runsDir);
    });
    return { task, followers };
  } catch (error) {
    if (error instanceof InvalidJobError) throw error;
    throw new InvalidJobError(`${where}: ${errorMessage(error).split('\n')[0]}`);
  }
}

/** The data of a queued trial (what the coordinator sends; the worker checks it with checkJob). */
export function jobDataOf(task: TrialTask, followers: TrialTask[] = []): QueuedJobData {
  const taskData = (t: TrialTask): QueuedTaskData => ({
    sweepId: t.sweepId,
    trial: t.trial,
    assignments: t.assignments,
    config: t.experiment.config,
    exportModel: t.exportModel,
    ...(t.parentRunId ? { parentRunId: t.parentRunId } : {}),
    ...(t.startFrom !== undefined ? { startFrom: t.startFrom } : {}),
  });
  return { ...taskData(task), followers: followers.map(taskData) };
}
