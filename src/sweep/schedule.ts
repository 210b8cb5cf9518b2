import type { PreparedDataset } from '../data/dataset.ts';
import type { ResolvedExperiment } from '../config/resolved.ts';
import type { PythonWorker } from '../export/python.ts';
import type { TrialState } from '../run-folder/records.ts';
import type { RunFolder } from '../run-folder/run-folder.ts';
import type { SweepPlanned, TrialJob } from './plan.ts';

/**
 * Where a sweep's trials run. The sweep (sweep.ts) plans, then hands the trials to a
 * scheduler, then reports; the scheduler decides where each trial runs and keeps the
 * trials' states: LocalScheduler (local.ts) in this process, QueueScheduler (queued.ts) on
 * `tlx worker` processes through Redis. Both start a trial the same way (trial.ts).
 */
export interface TrialScheduler {
  /**
   * Runs (or follows) the plan's trials, the first trial of a shared feature extraction
   * before the others of its group, updating `states` as trials end. True when every trial
   * has ended (finished or failed).
   */
  run(planned: SweepPlanned, states: TrialState[], hooks: SchedulerHooks): Promise<boolean>;
  /** A trial's run folder on this machine (a queued trial's is brought from the artifact store). */
  folderOf(state: TrialState): Promise<RunFolder | undefined>;
  /** What the best trial's export may reuse: the decoded data and the Python exporter of the trials. */
  exportServices(): {
    prepareData?: (
      config: ResolvedExperiment,
      baseDir: string,
      knownArchiveSha256?: string,
    ) => Promise<PreparedDataset>;
    exporter?: PythonWorker;
  };
  close(): Promise<void>;
}

export interface SchedulerHooks {
  /** The sweep's MLflow parent run, for the trials' runs. */
  parentRunId?: string;
  /** Writes the states (status.json). */
  save(): void;
  /** Told each trial as it ends. */
  onTrialEnd?(state: TrialState): void;
}

export function ended(state: TrialState): boolean {
  return state.status === 'finished' || state.status === 'failed';
}

/** The plan's jobs, each group's leader first: leaders, then the others (which start from their leader's feature extraction). */
export function leadersAndFollowers(jobs: TrialJob[]): {
  leaders: TrialJob[];
  followers: TrialJob[];
  leaderOf: (job: TrialJob) => TrialJob;
} {
  const order = [...jobs].sort((a, b) => a.group.localeCompare(b.group) || a.plan.index - b.plan.index);
  const leaderOf = (job: TrialJob) => order.find((j) => j.group === job.group)!;
  return {
    leaders: order.filter((job) => leaderOf(job) === job),
    followers: order.filter((job) => leaderOf(job) !== job),
    leaderOf,
  };
}

/** Runs items `parallel` at a time, in order; no new item starts once `stopped()` says so (Ctrl-C). */
export async function inParallel<T>(
  items: T[],
  parallel: number,
  run: (item: T) => Promise<void>,
  stopped: () => boolean,
): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < items.length && !stopped()) await run(items[next++]);
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(parallel, items.length)) }, lane));
}
