import type { ResolvedExperiment } from '../config/resolved.ts';
import { InterruptedError, errorMessage } from '../core/errors.ts';
import { canonicalJson, sha256Hex } from '../core/hash.ts';
import type { Logger } from '../core/log.ts';
import { prepareDataset, type PreparedDataset } from '../data/dataset.ts';
import { PythonWorker } from '../export/python.ts';
import type { RunProgressFactory } from '../run/progress.ts';
import { executeRun, type RunOptions } from '../run/run.ts';
import type { TrialState } from '../run-folder/records.ts';
import { RunFolder } from '../run-folder/run-folder.ts';
import { SweepFolder } from '../run-folder/sweep-folder.ts';
import { FrozenPrefixStore } from '../engine/frozen-outputs.ts';
import { describeAssignments, type SweepPlanned, type TrialJob } from './plan.ts';
import { ended, inParallel, leadersAndFollowers, type SchedulerHooks, type TrialScheduler } from './schedule.ts';
import { startOfTrial } from './trial.ts';

export interface LocalOptions {
  runsDir: string;
  cacheDir?: string;
  log: Logger;
  /** Trials at once (1 by default: TensorFlow already uses every core). */
  parallel: number;
  signal?: AbortSignal;
  progress?: RunProgressFactory;
}

/**
 * Decoded datasets, one at a time: a sweep keeps one memory budget for the whole process,
 * so the data of another config replaces the previous one instead of adding to it.
 */
class DatasetCache {
  private current?: { key: string; data: Promise<PreparedDataset> };

  constructor(
    private readonly cacheDir: string | undefined,
    private readonly log: Logger,
  ) {}

  get(config: ResolvedExperiment, baseDir: string, knownArchiveSha256?: string): Promise<PreparedDataset> {
    const key = sha256Hex(canonicalJson({ dataset: config.dataset, seed: config.seed, baseDir }));
    if (this.current?.key !== key)
      this.current = {
        key,
        data: prepareDataset(config, { baseDir, cacheDir: this.cacheDir, log: this.log, knownArchiveSha256 }),
      };
    return this.current.data;
  }
}

/**
 * Trials as ordinary runs in this process, sharing what a sweep can share: the decoded
 * data, one Python exporter, each group's feature-extraction phase (its leader's
 * checkpoint) and the outputs of the frozen layers below the group's smallest fine_tune_at.
 */
export class LocalScheduler implements TrialScheduler {
  private readonly datasets: DatasetCache;
  private exporter?: PythonWorker;
  private readonly frozenPrefixes = new FrozenPrefixStore();

  constructor(private readonly options: LocalOptions) {
    this.datasets = new DatasetCache(options.cacheDir, options.log);
  }

  readonly prepareData = (config: ResolvedExperiment, baseDir: string, known?: string) =>
    this.datasets.get(config, baseDir, known);

  /** One worker for every trial's export; a new one if the last was stopped (stuck or killed). */
  private sharedExporter(): PythonWorker {
    if (!this.exporter?.running) this.exporter = PythonWorker.start((line) => this.options.log.debug({ python: line }));
    return this.exporter;
  }

  async run(planned: SweepPlanned, states: TrialState[], hooks: SchedulerHooks): Promise<boolean> {
    const { leaders, followers } = leadersAndFollowers(planned.jobs);
    const stateOf = (job: TrialJob) => states.find((s) => s.trial === job.plan.index)!;
    const execute = async (job: TrialJob) => {
      const members = planned.jobs.filter((j) => j.group === job.group);
      // The group's feature extraction comes from its first trial, or (when that one failed) from any that finished.
      const leader = members
        .map(stateOf)
        .find((s) => s.trial !== job.plan.index && s.status === 'finished' && s.run_dir);
      await this.execute(job, stateOf(job), { planned, hooks, leader, members });
    };
    const stopped = () => Boolean(this.options.signal?.aborted);
    await inParallel(leaders, this.options.parallel, execute, stopped);
    await inParallel(followers, this.options.parallel, execute, stopped);
    return states.every(ended);
  }

  async folderOf(state: TrialState): Promise<RunFolder | undefined> {
    return state.run_dir ? RunFolder.tryOpen(state.run_dir) : undefined;
  }

  exportServices() {
    return { prepareData: this.prepareData, exporter: this.sharedExporter() };
  }

  async close(): Promise<void> {
    this.frozenPrefixes.dispose();
    await this.exporter?.close();
  }

  private async execute(
    job: TrialJob,
    state: TrialState,
    context: { planned: SweepPlanned; hooks: SchedulerHooks; leader?: TrialState; members: TrialJob[] },
  ): Promise<void> {
    const { log } = this.options;
    if (state.status === 'finished') return;
    const started = performance.now();
    log.info(
      { trial: job.plan.index, assignments: job.plan.assignments },
      `trial ${job.plan.index}: ${describeAssignments(job.plan.assignments)}`,
    );
    try {
      const own = state.run_dir ? RunFolder.tryOpen(state.run_dir) : undefined;
      const leaderFolder = context.leader?.run_dir ? RunFolder.tryOpen(context.leader.run_dir) : undefined;
      const trial = {
        assignments: job.plan.assignments,
        sweep: { id: context.planned.id, dir: SweepFolder.at(this.options.runsDir, context.planned.id).dir },
      };
      const { start, shared } = startOfTrial({
        experiment: job.experiment,
        trial,
        runsDir: this.options.runsDir,
        own,
        leader: leaderFolder,
        log,
      });
      if ('resume' in start) state.run_dir = start.resume;
      if (shared) state.shared_feature_extraction = true;
      state.status = 'running';
      state.error = undefined;
      context.hooks.save();
      const result = await executeRun(start, this.runOptions(state, job, context));
      state.run_dir = result.folder.dir;
      state.status = 'finished';
    } catch (error) {
      if (error instanceof InterruptedError) {
        state.status = 'killed';
      } else {
        state.status = 'failed';
        state.error = errorMessage(error).split('\n')[0];
        log.error({ trial: job.plan.index, error: state.error }, `trial ${job.plan.index} failed; the sweep goes on`);
      }
    }
    state.minutes = (state.minutes ?? 0) + (performance.now() - started) / 60_000;
    context.hooks.save();
    context.hooks.onTrialEnd?.(state);
  }

  private runOptions(
    state: TrialState,
    job: TrialJob,
    context: { planned: SweepPlanned; hooks: SchedulerHooks; members: TrialJob[] },
  ): RunOptions {
    const { runsDir, cacheDir, log, signal, progress } = this.options;
    const tflite = Boolean(context.planned.base.config.export.tflite);
    const exportsTrials = context.planned.exportPolicy === 'all' && tflite;
    const onOpen = (opened: RunFolder) => {
      state.run_dir = opened.dir;
      context.hooks.save();
    };
    // sweep.export best: the exporter starts with the first trial and is ready when the winner is known.
    const warmForLater = context.planned.exportPolicy === 'best' && tflite ? this.sharedExporter() : undefined;
    const fineTuneAt = Math.min(
      ...context.members.map((member) => member.experiment.config.train.fine_tune.fine_tune_at),
    );
    const frozenOutputs = context.members.length > 1 ? { store: this.frozenPrefixes, fineTuneAt } : undefined;
    return {
      runsDir,
      cacheDir,
      log,
      signal,
      progress,
      export: exportsTrials,
      register: false,
      services: {
        dataset: this.prepareData,
        exporter: exportsTrials ? this.sharedExporter() : undefined,
        warmForLater,
        frozenOutputs,
      },
      sweep: { parentRunId: context.hooks.parentRunId, onOpen },
    };
  }
}
