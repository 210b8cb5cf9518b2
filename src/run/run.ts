import { execFileSync } from 'node:child_process';
import os from 'node:os';
import type { LoadedExperiment } from '../config/load.ts';
import type { ResolvedExperiment } from '../config/resolved.ts';
import { InterruptedError, UserError, errorMessage } from '../core/errors.ts';
import { setLogFile, type Logger } from '../core/log.ts';
import { version } from '../core/project.ts';
import { redactUrl } from '../core/redact.ts';
import type { PreparedDataset } from '../data/dataset.ts';
import type { RunJson, RunStatus, RunSummary } from '../run-folder/records.ts';
import { RunFolder } from '../run-folder/run-folder.ts';
import { PythonWorker, type Exporter } from '../export/python.ts';
import type { FrozenPrefixStore } from '../engine/frozen-outputs.ts';
import { estimateRunMemory } from './memory-check.ts';
import { buildModel, prepareData, type RunModel } from './model-stage.ts';
import { evaluateFinal } from './evaluate-stage.ts';
import { describeClassifier, exportStage } from './export-stage.ts';
import { recordSummary } from './summary.ts';
import { restoreBestWeights, trainPhases } from './train-stage.ts';
import type { RunProgress, RunProgressFactory } from './progress.ts';
import { findResumePoint, type ResumePoint } from './resume.ts';
import { startTracking, type RunTracking } from './tracking.ts';

/**
 * `tlx run` as a straight line of stages; each takes plain values and returns plain
 * values, and the run folder (the source of truth) is kept up to date as they go:
 *
 *   open -> data -> model -> restore or start -> train phases -> evaluate -> export -> record
 */

export interface RunOptions {
  runsDir: string;
  cacheDir?: string;
  log: Logger;
  /** Ctrl-C: the run stops after the current batch (or stops its export) and is KILLED. */
  signal?: AbortSignal;
  /** Terminal progress (run-level line and per-epoch bar), made once the run's config is known. */
  progress?: RunProgressFactory;
  /** Export TFLite after training (default: when the config asks for it). */
  export?: boolean;
  /** Register the exported model in MLflow's registry when the config names one (a sweep registers only its best trial). */
  register?: boolean;
  /** What the run is given instead of making it itself (a sweep shares them between its trials). */
  services?: RunServices;
  /** The run's place in a sweep, when it is a trial. */
  sweep?: SweepPlace;
}

/** The decoded dataset of a config (a sweep decodes once for all its trials). */
export type DatasetProvider = (
  config: ResolvedExperiment,
  baseDir: string,
  knownArchiveSha256?: string,
) => Promise<PreparedDataset>;

/** Shared parts a run uses instead of its own: data, the Python exporter, the frozen layers' outputs, a backup. */
interface RunServices {
  dataset?: DatasetProvider;
  /** A long-lived Python worker to export with (a sweep starts TensorFlow once). */
  exporter?: Exporter;
  /**
   * With export false: a worker that will export a model like this one later (a sweep's best
   * trial), prepared while this run trains, so its TensorFlow import is off the export's path.
   */
  warmForLater?: Exporter;
  /**
   * A store of the frozen layers' outputs trials share: the base layers below `fineTuneAt`
   * (the smallest fine_tune_at of the trials that share this one's data).
   */
  frozenOutputs?: { store: FrozenPrefixStore; fineTuneAt: number };
  /** A copy of the run kept elsewhere (a queued trial's, in the artifact store). */
  backup?: RunBackup;
}

/** Where a trial sits: its MLflow parent run, its queue job, and who to tell its folder. */
interface SweepPlace {
  parentRunId?: string;
  /** The queue job this run belongs to: a lock left by the same job on a dead worker is taken over. */
  job?: string;
  /** Told the run's folder as soon as it is open (a sweep records it, to resume it after an interruption). */
  onOpen?: (folder: RunFolder) => void;
}

/**
 * A copy of a run folder kept elsewhere: saved after an epoch, before MLflow hears of the
 * epoch (so a copy never lags what the server has), and once more, whole, when the run ends.
 * It may skip a save (too soon after the last one): MLflow then hears of the epoch with the
 * next one that is saved.
 */
export interface RunBackup {
  /** True when saved; false when skipped. */
  save(folder: RunFolder, final: boolean): Promise<boolean>;
}

/** A sweep trial's place: its swept values and its sweep. */
export interface TrialOf {
  assignments: Record<string, unknown>;
  sweep: { id: string; dir: string };
}

export type RunStart = { experiment: LoadedExperiment; trial?: TrialOf; runId?: string } | { resume: string };

export interface RunResult {
  folder: RunFolder;
  summary: RunSummary;
}

export interface RunContext {
  folder: RunFolder;
  config: ResolvedExperiment;
  log: Logger;
  options: RunOptions;
  tracking?: RunTracking;
  progress?: RunProgress;
  /** The Python worker this run exports with (the sweep's, or its own, started while it trains). */
  exporter?: Exporter;
  ownExporter?: PythonWorker;
  started: number;
  run: RunJson;
  /** Updates run.json (whole-file write). */
  setRun(patch: Partial<RunJson>): void;
}

export class ExportFailedError extends Error {
  override name = 'ExportFailedError';
}

/** The stages after the model is built: memory, train, evaluate, export, record; `onStage` names each as it starts. */
async function trainAndRecord(
  context: RunContext,
  data: PreparedDataset,
  model: RunModel,
  point: ResumePoint,
  onStage: (stage: string) => void,
): Promise<RunSummary> {
  onStage('memory');
  const memory = estimateRunMemory(context, model, data);
  warmExporter(context, model);
  onStage('train');
  const { summaries: phases, lastValidation } = await trainPhases(context, model, data, point);
  onStage('evaluate');
  const finalWeights = restoreBestWeights(context, model);
  const evaluation = await evaluateFinal(context, model, data, lastValidation);
  onStage('export');
  const exported = await exportStage(context, model, data, evaluation, finalWeights);
  onStage('record');
  const summary = recordSummary(context, { data, model, phases, finalWeights, evaluation, exported, memory });
  const failure = summary.error ? { error: summary.error, stage: summary.failed_stage } : undefined;
  await closeRun(context, summary.status, failure);
  if (exported?.status === 'failed')
    throw new ExportFailedError(
      `export failed: ${exported.problems.join('; ')} (the trained model and its results are kept in ${context.folder.dir})`,
    );
  return summary;
}

/**
 * Data tlx refuses (one class, empty class folders, no such folder) and training that cannot
 * fit in memory are problems of the experiment, not runs: a new run leaves no folder behind.
 * Sweep trials keep theirs (the sweep's record points at it).
 */
function discardsFolder(start: RunStart, stage: string, error: unknown): boolean {
  const newRun = !('resume' in start) && !start.trial && !start.runId;
  return (stage === 'data' || stage === 'memory') && error instanceof UserError && newRun;
}

/** Starts a new run, or continues one, and returns its summary. */
export async function executeRun(start: RunStart, options: RunOptions): Promise<RunResult> {
  const context = openRun(start, options);
  startExporter(context);
  let stage = 'data';
  let discard = false;
  try {
    const data = await prepareData(context);
    stage = 'resume';
    const point = findResumePoint(context.folder, context.log);
    stage = 'model';
    const model = await buildModel(context, data, point);
    try {
      const summary = await trainAndRecord(context, data, model, point, (next) => (stage = next));
      return { folder: context.folder, summary };
    } finally {
      disposeModel(model);
    }
  } catch (error) {
    discard = discardsFolder(start, stage, error);
    if (!discard && !(error instanceof ExportFailedError)) {
      const interrupted = error instanceof InterruptedError;
      const failure = interrupted ? undefined : { error: errorMessage(error), stage };
      await closeRun(context, interrupted ? 'KILLED' : 'FAILED', failure);
    }
    throw error;
  } finally {
    await context.ownExporter?.close();
    context.progress?.close();
    setLogFile(context.log, undefined);
    context.folder.unlock();
    if (discard) context.folder.remove();
  }
}

/** The config as a run folder stores it: URLs without credentials or query strings. */
function withoutSecrets(config: ResolvedExperiment): ResolvedExperiment {
  const copy = structuredClone(config);
  if (copy.dataset.url) copy.dataset.url = redactUrl(copy.dataset.url);
  if (copy.tracking.mlflow?.tracking_uri)
    copy.tracking.mlflow.tracking_uri = redactUrl(copy.tracking.mlflow.tracking_uri);
  if (copy.model.weights && /^[a-z]+:\/\//i.test(copy.model.weights))
    copy.model.weights = redactUrl(copy.model.weights);
  return copy;
}

function systemTags(experimentDir: string): Record<string, string> {
  const tags: Record<string, string> = { 'mlflow.user': os.userInfo().username };
  try {
    const commit = execFileSync('git', ['rev-parse', 'HEAD'], {
      cwd: experimentDir,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
    if (/^[0-9a-f]{40}$/.test(commit)) tags['mlflow.source.git.commit'] = commit;
  } catch {
    // not in a git checkout
  }
  return tags;
}

/** A new run folder with the resolved config and run.json (not yet locked). */
export function createRunFolder(
  experiment: LoadedExperiment,
  runsDir: string,
  trial?: TrialOf,
  runId?: string,
): RunFolder {
  const folder = RunFolder.create(runsDir, experiment.config.name, runId);
  const now = new Date().toISOString();
  folder.writeConfig(withoutSecrets(experiment.config));
  folder.writeRun({
    run_id: folder.id,
    status: 'RUNNING',
    experiment_file: experiment.files[0],
    base_dir: experiment.baseDir,
    config_sha256: experiment.configSha256,
    tlx_version: version,
    created: now,
    updated: now,
    tags: systemTags(experiment.baseDir),
    phase_outcomes: {},
    ...(trial ? { trial: trial.assignments, sweep: trial.sweep } : {}),
  });
  return folder;
}

/** The folder, locked and cleaned of dead processes' temp files, its run marked RUNNING. */
function openRun(start: RunStart, options: RunOptions): RunContext {
  const { log } = options;
  const folder =
    'resume' in start
      ? RunFolder.open(start.resume)
      : createRunFolder(start.experiment, options.runsDir, start.trial, start.runId);
  folder.lock({
    job: options.sweep?.job,
    onTakeover: (owner, reason) =>
      log.warn(
        { run: folder.id, pid: owner?.pid, host: owner?.host },
        `taking over the lock of run ${folder.id} (${reason})`,
      ),
  });
  try {
    for (const removed of folder.removeDeadTemps())
      log.info({ removed }, 'removed a temp file left by a stopped process');
    let run = folder.readRun();
    if ('resume' in start) {
      if (run.status === 'FINISHED')
        throw new UserError(`${start.resume}: the run already finished; nothing to resume`);
      log.info({ run: folder.id }, 'resuming run');
    } else {
      log.info({ run: folder.id, dir: folder.dir }, 'run started');
    }
    // A new run keeps its experiment's config in memory, secrets included (a signed dataset
    // URL, a tracking URI with credentials); config.yaml has them removed.
    const config = 'resume' in start ? folder.readConfig() : start.experiment.config;
    const context: RunContext = {
      folder,
      config,
      log,
      options,
      started: performance.now(),
      run,
      setRun(patch) {
        run = { ...run, ...patch, updated: new Date().toISOString() };
        context.run = run;
        folder.writeRun(run);
      },
    };
    const { error: _error, failed_stage: _stage, ended: _ended, ...fresh } = run;
    context.run = fresh as RunJson;
    context.setRun({ status: 'RUNNING' });
    context.tracking = startTracking(context);
    context.progress = options.progress?.(config);
    setLogFile(log, folder.logFile());
    options.sweep?.onOpen?.(folder);
    return context;
  } catch (error) {
    folder.unlock();
    throw error;
  }
}

/** run.json's final status, and the tracker's last word (which never throws). */
async function closeRun(
  context: RunContext,
  status: RunStatus,
  failure?: { error?: string; stage?: string },
): Promise<void> {
  context.setRun({
    status,
    ended: new Date().toISOString(),
    ...(failure?.error ? { error: failure.error, failed_stage: failure.stage } : {}),
  });
  await context.tracking?.finish();
}

/**
 * The run's own Python worker starts with the run: TensorFlow's import (~5 s of one core) then
 * overlaps the decode and the model's build, which leave the second core idle, instead of
 * slowing the caching pass, whose kernels wait for both cores (~2 s on a 2-core machine).
 */
function startExporter(context: RunContext): void {
  if (!context.config.export.tflite || context.options.export === false || context.options.services?.exporter) return;
  context.ownExporter = PythonWorker.start((line) => context.log.debug({ python: line }));
}

/**
 * The worker that will export the model prepares while the model trains: Keras's rebuild of
 * the classifier happens on the side, off the export's path.
 */
function warmExporter(context: RunContext, model: RunModel): void {
  if (!context.config.export.tflite) return;
  let warming: Exporter | undefined = context.options.services?.warmForLater;
  if (context.options.export !== false)
    warming = context.exporter = context.options.services?.exporter ?? context.ownExporter;
  warming
    ?.call('warm', { classifier: describeClassifier(model.classifier) })
    .catch((error: unknown) =>
      context.log.debug({ error: String(error) }, 'the export worker could not prepare; the export will say why'),
    );
}

function disposeModel(model: RunModel): void {
  model.classifier.model.dispose();
}
