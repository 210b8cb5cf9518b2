import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ResolvedExperiment } from '../config/resolved.ts';
import { UserError } from '../core/errors.ts';
import { canonicalJson, sha256Hex, sha256OfFile } from '../core/hash.ts';
import type { Logger } from '../core/log.ts';
import { redactUrl } from '../core/redact.ts';
import { packFolder } from '../data/pack.ts';
import type { TrialState } from '../run-folder/records.ts';
import { RunFolder } from '../run-folder/run-folder.ts';
import { MlflowClient } from '../track/mlflow-client.ts';
import { trackingUriFor } from '../track/sync.ts';
import { jobDataOf, type TrialTask } from './job.ts';
import { TrialMirror } from './mirror.ts';
import { describeAssignments, type SweepPlanned, type TrialJob } from './plan.ts';
import { TrialQueue } from './queue.ts';
import type { TrialRow } from './report.ts';
import { ended, leadersAndFollowers, type SchedulerHooks, type TrialScheduler } from './schedule.ts';
import { trialRunId } from './trial.ts';
import { formatBytes } from '../core/bytes.ts';

export interface QueuedOptions {
  queueUrl: string;
  /** Follow the sweep until every trial has ended; without it, look once. */
  wait: boolean;
  /** Send the trials first (idempotent); `tlx sweep status` only looks. */
  enqueue: boolean;
  /** This machine's runs folder: the best trial is brought home here. */
  runsDir: string;
  log: Logger;
  signal?: AbortSignal;
  pollMs?: number;
}

/**
 * A sweep's trials on `tlx worker` processes that share nothing with this machine but the
 * Redis and the MLflow tracking server. Before anything is queued, each trial's config is
 * made to name nothing on this machine: a local dataset folder (or weights file) is put in
 * the tracking server's artifact store once, under its digest, and named by its
 * mlflow-artifacts:/ URI. Trials report their rows through the queue; the best trial's run
 * folder is brought home from its copy in the artifact store.
 */
export class QueueScheduler implements TrialScheduler {
  private queue?: TrialQueue;
  private client?: MlflowClient;
  private sweepId = '';
  /** Trials that start from another's feature extraction, with the task to enqueue should that one's worker not. */
  private readonly followers = new Map<number, { task: TrialTask; leader: number }>();

  constructor(private readonly options: QueuedOptions) {}

  async run(planned: SweepPlanned, states: TrialState[], hooks: SchedulerHooks): Promise<boolean> {
    const trackingUri = trackingUriFor(planned.base.config);
    if (!trackingUri)
      throw new UserError(
        "sweep --queue: set MLFLOW_TRACKING_URI (or tracking.mlflow.tracking_uri): queued trials, their data and their checkpoints travel through the tracking server's artifact store",
      );
    this.client = new MlflowClient({ trackingUri });
    this.queue = new TrialQueue(this.options.queueUrl);
    this.sweepId = planned.id;
    if (this.options.enqueue) {
      const shipping = new Shipping(this.client, this.options.log);
      const tasks = new Map<TrialJob, TrialTask>();
      for (const job of planned.jobs) tasks.set(job, await shipping.taskOf(planned, job, hooks.parentRunId));
      const added = await this.enqueue(planned, tasks);
      this.options.log.info(
        { sweep: planned.id, added, trials: planned.jobs.length, queue: redactUrl(this.options.queueUrl) },
        added
          ? `sweep ${planned.id}: ${added} trial job(s) enqueued`
          : `sweep ${planned.id} is already on the queue; attaching to it`,
      );
    }
    return this.follow(planned, states, hooks);
  }

  /** Each group's first trial carries the others, which its worker enqueues once it has run; trials that share nothing go alone. */
  private async enqueue(planned: SweepPlanned, tasks: Map<TrialJob, TrialTask>): Promise<number> {
    const { leaders, followers, leaderOf } = leadersAndFollowers(planned.jobs);
    const shares = (job: TrialJob) => job.experiment.config.train.feature_extraction.epochs > 0;
    let added = 0;
    for (const job of [...leaders, ...followers.filter((f) => !shares(f))]) {
      const carried =
        leaders.includes(job) && shares(job) ? followers.filter((f) => leaderOf(f) === job && shares(f)) : [];
      for (const follower of carried)
        this.followers.set(follower.plan.index, { task: tasks.get(follower)!, leader: job.plan.index });
      if (
        await this.queue!.add(
          jobDataOf(
            tasks.get(job)!,
            carried.map((f) => tasks.get(f)!),
          ),
        )
      )
        added++;
    }
    return added;
  }

  /** Reads each trial's job until all have ended (or once, without --wait); one line per trial as it ends. */
  private async follow(planned: SweepPlanned, states: TrialState[], hooks: SchedulerHooks): Promise<boolean> {
    for (;;) {
      for (const state of states.filter((s) => !ended(s))) {
        await this.enqueueOrphan(state, states);
        const outcome = await this.queue!.outcome(planned.id, state.trial);
        state.status = outcome.status;
        if (outcome.row) state.result = withoutLocalPaths(outcome.row);
        state.error = outcome.error;
        if (ended(state)) {
          const done = states.filter(ended).length;
          const value = outcome.row?.val_accuracy;
          this.options.log.info(
            { trial: state.trial, status: state.status, val_accuracy: value },
            `trial ${state.trial} (${describeAssignments(state.assignments as Record<string, never>)}): ${state.status}${value !== undefined ? `, val_accuracy ${value.toFixed(4)}` : ''}${state.error ? `: ${state.error}` : ''} [${done}/${states.length}]`,
          );
          hooks.onTrialEnd?.(state);
        }
      }
      hooks.save();
      if (states.every(ended)) return true;
      if (!this.options.wait || this.options.signal?.aborted) return false;
      await sleep(this.options.pollMs ?? 1000);
    }
  }

  /**
   * A follower whose leader has ended without enqueuing it (its job was refused before it
   * ran, or removed) is enqueued here; it starts from the leader's copy if there is one.
   */
  private async enqueueOrphan(state: TrialState, states: TrialState[]): Promise<void> {
    const follower = this.followers.get(state.trial);
    const leader = follower && states.find((s) => s.trial === follower.leader);
    if (!follower || !leader || !ended(leader)) return;
    if (await this.queue!.add(jobDataOf({ ...follower.task, startFrom: follower.leader })))
      this.options.log.warn(
        { trial: state.trial, leader: follower.leader },
        `trial ${state.trial}: enqueued here, as trial ${follower.leader} ${leader.status} without enqueuing it`,
      );
    this.followers.delete(state.trial);
  }

  /** The trial's run folder here: brought from its copy in the artifact store (once). */
  async folderOf(state: TrialState): Promise<RunFolder | undefined> {
    const id = trialRunId(this.sweepId, state.trial);
    const here = RunFolder.tryOpen(path.join(this.options.runsDir, id));
    const folder = here?.hasSummary()
      ? here
      : await TrialMirror.of(this.client!, this.sweepId, state.trial).restore(this.options.runsDir, id);
    if (folder) state.run_dir = folder.dir;
    return folder;
  }

  exportServices() {
    return {};
  }

  async close(): Promise<void> {
    await this.queue?.close();
  }
}

/** A worker's row names its own folder: the coordinator keeps the run id, not the path. */
function withoutLocalPaths(row: TrialRow): Record<string, unknown> {
  const { run_dir: _elsewhere, ...rest } = row;
  return rest;
}

/** Makes trial configs name nothing on this machine; each local file or folder is sent once. */
class Shipping {
  private readonly sent = new Map<string, Promise<{ uri: string; sha256: string }>>();

  constructor(
    private readonly client: MlflowClient,
    private readonly log: Logger,
  ) {}

  async taskOf(planned: SweepPlanned, job: TrialJob, parentRunId: string | undefined): Promise<TrialTask> {
    const config = await this.shipped(job.experiment.config, job.experiment.baseDir);
    const exportModel = planned.exportPolicy === 'all' && Boolean(config.export.tflite);
    return {
      sweepId: planned.id,
      trial: job.plan.index,
      assignments: job.plan.assignments,
      experiment: { ...job.experiment, config, configSha256: sha256Hex(canonicalJson(config)) },
      exportModel,
      parentRunId,
    };
  }

  private async shipped(original: ResolvedExperiment, baseDir: string): Promise<ResolvedExperiment> {
    const config = structuredClone(original);
    // A worker logs to its own tracking server (the same one, as it names it).
    if (config.tracking.mlflow) delete config.tracking.mlflow.tracking_uri;
    if (config.dataset.path !== undefined) {
      const { path: folder, ...dataset } = config.dataset;
      const shipped = await this.once(path.resolve(baseDir, folder), (local) => this.sendFolder(local));
      config.dataset = { ...dataset, url: shipped.uri, sha256: shipped.sha256, subdir: dataset.subdir ?? '.' };
    }
    const weights = config.model.weights;
    if (!['imagenet', 'none'].includes(weights) && !/^[a-z][\w+.-]*:/i.test(weights)) {
      if (!/\.(h5|hdf5)$/i.test(weights))
        throw new UserError(
          `model.weights: ${weights}: a queued sweep sends a local Keras .h5 file to its workers; a tfjs model.json with its shards cannot travel yet (give its http(s) URL)`,
        );
      config.model.weights = (
        await this.once(path.resolve(baseDir, weights), (local) =>
          this.sendFile(local, 'weights', path.extname(local).toLowerCase()),
        )
      ).uri;
    }
    return config;
  }

  private once(
    local: string,
    send: (local: string) => Promise<{ uri: string; sha256: string }>,
  ): Promise<{ uri: string; sha256: string }> {
    if (!this.sent.has(local)) this.sent.set(local, send(local));
    return this.sent.get(local)!;
  }

  /** A dataset folder as a tar stored under its sha256 (sent unless the store has it). */
  private async sendFolder(folder: string): Promise<{ uri: string; sha256: string }> {
    if (!fs.existsSync(folder) || !fs.statSync(folder).isDirectory())
      throw new UserError(`dataset.path: ${folder}: no such folder`);
    const work = fs.mkdtempSync(path.join(os.tmpdir(), 'tlx-ship-'));
    try {
      const archive = path.join(work, 'data.tar');
      const packed = await packFolder(folder, archive);
      if (packed.leftOut > 0)
        this.log.warn(
          { folder, left_out: packed.leftOut },
          `dataset.path: ${packed.leftOut} link(s) or special file(s) in ${folder} are not sent to the workers`,
        );
      const key = `tlx/datasets/${packed.sha256}.tar`;
      await this.put(key, archive, `dataset ${folder} (${packed.files} files, ${formatBytes(packed.bytes)})`);
      return { uri: `mlflow-artifacts:/${key}`, sha256: packed.sha256 };
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
  }

  private async sendFile(file: string, kind: string, extension: string): Promise<{ uri: string; sha256: string }> {
    if (!fs.existsSync(file)) throw new UserError(`model.weights: ${file}: file not found`);
    const sha256 = await sha256OfFile(file);
    const key = `tlx/${kind}/${sha256}${extension}`;
    await this.put(key, file, `${kind} ${file}`);
    return { uri: `mlflow-artifacts:/${key}`, sha256 };
  }

  private async put(key: string, file: string, what: string): Promise<void> {
    const folder = path.posix.dirname(key);
    if (
      (await this.client.listArtifacts(folder)).some(
        (entry) => entry.path === path.posix.basename(key) || entry.path === key,
      )
    ) {
      this.log.info({ key }, `${what}: already in the artifact store (mlflow-artifacts:/${key})`);
      return;
    }
    await this.client.putArtifact(key, file);
    this.log.info(
      { key, bytes: fs.statSync(file).size },
      `${what}: sent to the artifact store as mlflow-artifacts:/${key}`,
    );
  }
}
