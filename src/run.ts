import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Optimizer as TfOptimizer, Tensor4D } from '@tensorflow/tfjs-node';
import YAML from 'yaml';
import { resolvedConfigYaml, type LoadedExperiment } from './config/load.ts';
import type { ResolvedExperiment } from './config/resolved.ts';
import { augmentBatch } from './data/augment.ts';
import { prepareDataset, splitCounts, type PreparedDataset } from './data/dataset.ts';
import { writeAugmentationPreview, writeSampleGrid } from './data/pictures.ts';
import { UserError, errorMessage } from './errors.ts';
import type { Logger } from './log.ts';
import { buildClassifier, setPhaseTrainable, trainableBaseLayerCount, type Classifier, type Phase } from './models/classifier.ts';
import { assignWeights, loadPretrainedWeights, type WeightsSource } from './models/weights.ts';
import { writeChartPng } from './plots/render.ts';
import { findCheckpoint, loadCheckpoint, loadOptimizerState, readCheckpointMeta, saveCheckpoint } from './train/checkpoint.ts';
import { evaluate, runPhase, type EpochRecord, type Evaluation } from './train/engine.ts';
import { balancedClassWeights, type Objective } from './train/objective.ts';
import { createOptimizer, learningRateAt } from './train/optimizers.ts';
import { classificationReport, confusionMatrixSpec, learningCurvesSpec, type ClassificationReport } from './train/report.ts';
import { RunFolder, type RunStatus } from './track/run-store.ts';
import { LiveTracker } from './track/sync.ts';
import { exportTflite, type TfliteRecord } from './export/tflite.ts';
import { version } from './version.ts';

/**
 * `tlx run` as a straight line: config -> data -> model -> train -> record. Each stage
 * takes plain values and returns plain values; this module only wires them and keeps
 * the run folder (the source of truth) up to date. Export and tracking hook in at the end.
 */

export interface RunOptions {
  runsDir: string;
  cacheDir?: string;
  log: Logger;
  /** Stop after the current batch when this returns true (Ctrl-C). */
  shouldStop?: () => boolean;
  /** MLflow parent run (sweep trials). */
  parentRunId?: string;
  /** Called whenever the run folder gained something worth logging (live tracking). */
  onProgress?: () => Promise<void>;
  /** Data already prepared for this config (a sweep decodes once for all its trials). */
  prepareData?: (config: ResolvedExperiment, baseDir: string) => Promise<PreparedDataset>;
}

/** run.json: what is needed to resume or understand the run without re-reading the YAML. */
export interface RunMeta {
  run_id: string;
  status: RunStatus;
  experiment_file?: string;
  base_dir: string;
  config_sha256: string;
  tlx_version: string;
  created: string;
  updated: string;
  error?: string;
  /** MLflow system tags fixed when the run starts (user, git commit). */
  tags: Record<string, string>;
}

function systemTags(experimentDir: string): Record<string, string> {
  const tags: Record<string, string> = { 'mlflow.user': os.userInfo().username };
  try {
    const commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: experimentDir, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    if (/^[0-9a-f]{40}$/.test(commit)) tags['mlflow.source.git.commit'] = commit;
  } catch {
    // not in a git checkout
  }
  return tags;
}

/** MLflow server for this run: the config's, else $MLFLOW_TRACKING_URI. */
export function trackingUriFor(config: ResolvedExperiment): string | undefined {
  return config.tracking.mlflow?.tracking_uri ?? (process.env.MLFLOW_TRACKING_URI || undefined);
}

export interface PhaseSummary {
  epochs: number;
  first_epoch: number;
  last_epoch: number;
  seconds: number;
  trainable_layers: number;
  trainable_variables: number;
  stopped_early?: boolean;
  restored_best_epoch?: number;
}

export interface RunSummary {
  run_id: string;
  status: RunStatus;
  name: string;
  config_sha256: string;
  tlx_version: string;
  head: { kind: string; units: number; loss: string };
  weights: WeightsSource;
  dataset: {
    root: string;
    url?: string;
    archive_sha256?: string;
    classes: string[];
    counts: Record<string, number>;
    storage: string;
    skipped: { count: number; files: { file: string; reason: string }[] };
  };
  phases: Partial<Record<Phase, PhaseSummary>>;
  metrics: {
    initial?: { val_loss: number; val_accuracy: number };
    final?: { val_loss: number; val_accuracy: number; test_loss: number; test_accuracy: number };
    best_val_accuracy?: number;
  };
  test_report?: ClassificationReport['perClass'];
  confusion_matrix?: number[][];
  artifacts: Record<string, string>;
  seconds: number;
  finished_at: number;
  export?: Record<string, unknown>;
  error?: string;
}

function identityAugment(images: Tensor4D): Tensor4D {
  return images.clone();
}

function objectiveFor(config: ResolvedExperiment, classifier: Classifier, dataset: PreparedDataset): Objective {
  const classCount = dataset.classNames.length;
  const weights = config.train.class_weight;
  let classWeights: number[] | undefined;
  if (weights === 'auto') classWeights = balancedClassWeights(dataset.splits.train.labels, classCount);
  else if (typeof weights === 'object') {
    const unknown = Object.keys(weights).filter((name) => !dataset.classNames.includes(name));
    if (unknown.length) throw new UserError(`train.class_weight: unknown class(es) ${unknown.join(', ')}; classes are ${dataset.classNames.join(', ')}`);
    classWeights = dataset.classNames.map((name) => weights[name] ?? 1);
  }
  return { head: classifier.head, classCount, labelSmoothing: config.train.label_smoothing, classWeights };
}

interface PhasePlan {
  phase: Phase;
  firstEpoch: number;
  epochs: number;
}

/** Epoch ranges of the two phases, numbered continuously from 1 (0 = before training). */
export function planPhases(config: ResolvedExperiment): PhasePlan[] {
  const fe = config.train.feature_extraction.epochs;
  return [
    { phase: 'feature_extraction', firstEpoch: 1, epochs: fe },
    { phase: 'fine_tune', firstEpoch: fe + 1, epochs: config.train.fine_tune.epochs },
  ];
}

async function writeDataPictures(folder: RunFolder, dataset: PreparedDataset, config: ResolvedExperiment, log: Logger): Promise<void> {
  try {
    await writeSampleGrid(dataset.splits.train, dataset.classNames, config.seed, folder.file('plots', 'samples.png'));
    await writeAugmentationPreview(dataset.splits.train, config.augmentation, config.seed, folder.file('plots', 'augmentation.png'));
  } catch (error) {
    log.warn({ error: errorMessage(error) }, 'could not draw the data pictures');
  }
}

export interface RunResult {
  folder: RunFolder;
  summary: RunSummary;
}

/** Starts a new run, or continues one (`resume`), and returns its summary. */
export async function executeRun(experiment: LoadedExperiment | undefined, options: RunOptions & { resume?: string }): Promise<RunResult> {
  const { log } = options;
  const started = performance.now();
  let folder: RunFolder;
  let config: ResolvedExperiment;
  let meta: RunMeta;
  if (options.resume) {
    folder = RunFolder.open(options.resume);
    meta = folder.readJson<RunMeta>('run.json');
    if (meta.status === 'FINISHED') throw new UserError(`${options.resume}: the run already finished; nothing to resume`);
    config = YAML.parse(fs.readFileSync(folder.file('config.yaml'), 'utf8')) as ResolvedExperiment;
    log.info({ run: folder.id }, 'resuming run');
  } else {
    if (!experiment) throw new Error('executeRun needs an experiment or resume');
    ({ folder, meta } = createRunFolder(experiment, options.runsDir));
    config = experiment.config;
    log.info({ run: folder.id, dir: folder.dir }, 'run started');
  }
  const setStatus = (status: RunStatus, error?: string) => {
    meta = { ...meta, status, updated: new Date().toISOString(), ...(error ? { error } : {}) };
    folder.writeJson('run.json', meta);
  };
  setStatus('RUNNING');
  const trackingUri = trackingUriFor(config);
  const tracker = trackingUri ? new LiveTracker(folder, { trackingUri, log, parentRunId: options.parentRunId }) : undefined;
  await tracker?.update();
  try {
    const summary = await trainRun(folder, config, meta, { ...options, onProgress: async () => tracker?.update() }, started);
    await tracker?.update();
    return { folder, summary };
  } catch (error) {
    const killed = error instanceof InterruptedRun;
    setStatus(killed ? 'KILLED' : 'FAILED', killed ? undefined : errorMessage(error));
    await tracker?.update();
    throw error;
  }
}

/** A new run folder with the resolved config and run.json: the start of every run. */
export function createRunFolder(experiment: LoadedExperiment, runsDir: string): { folder: RunFolder; meta: RunMeta } {
  const folder = RunFolder.create(runsDir, experiment.config.name);
  const now = new Date().toISOString();
  const meta: RunMeta = {
    run_id: folder.id,
    status: 'RUNNING',
    experiment_file: experiment.files[0],
    base_dir: experiment.baseDir,
    config_sha256: experiment.configSha256,
    tlx_version: version,
    created: now,
    updated: now,
    tags: systemTags(experiment.baseDir),
  };
  folder.writeText('config.yaml', `# Resolved config of run ${folder.id} (defaults filled, extends and --set applied)\n${resolvedConfigYaml(experiment.config)}`);
  folder.writeJson('run.json', meta);
  return { folder, meta };
}

/**
 * A new run that starts where another run's feature extraction ended: its records of
 * epochs 0..N and the checkpoint of that moment are copied in, so resuming it trains only
 * the fine-tuning phase, exactly as the run would have continued.
 */
export function seedRunFromFeatureExtraction(experiment: LoadedExperiment, runsDir: string, source: RunFolder): RunFolder {
  const checkpoint = source.file('checkpoints', 'feature_extraction');
  const meta = readCheckpointMeta(checkpoint);
  const { folder } = createRunFolder(experiment, runsDir);
  const records = source.readJsonLines<EpochRecord>('metrics.jsonl').filter((r) => r.epoch <= meta.epoch);
  for (const record of records) folder.appendJsonLine('metrics.jsonl', record);
  for (const name of ['feature_extraction', 'best']) {
    const from = source.file('checkpoints', name);
    if (!fs.existsSync(from) || (name === 'best' && readCheckpointMeta(from).epoch > meta.epoch)) continue;
    fs.cpSync(from, folder.file('checkpoints', name), { recursive: true });
  }
  fs.cpSync(checkpoint, folder.file('checkpoints', 'last'), { recursive: true });
  for (const picture of ['samples.png', 'augmentation.png']) {
    if (source.exists(`plots/${picture}`)) fs.cpSync(source.file('plots', picture), folder.file('plots', picture));
  }
  return folder;
}

export class InterruptedRun extends Error {
  override name = 'InterruptedRun';
}

async function trainRun(folder: RunFolder, config: ResolvedExperiment, meta: RunMeta, options: RunOptions, started: number): Promise<RunSummary> {
  const { log } = options;
  const dataset = options.prepareData ? await options.prepareData(config, meta.base_dir) : await prepareDataset(config, { baseDir: meta.base_dir, cacheDir: options.cacheDir, log });
  const counts = splitCounts(dataset);
  log.info({ classes: dataset.classNames, counts, skipped: dataset.skipped.length }, `dataset: ${dataset.classNames.length} classes, ${counts.train} train / ${counts.validation} validation / ${counts.test} test images`);
  folder.writeText('labels.txt', `${dataset.classNames.join('\n')}\n`);
  folder.writeJson('dataset.json', { classes: dataset.classNames, class_count: dataset.classNames.length, counts, skipped: dataset.skipped.length, storage: dataset.storage, root: dataset.source.root, url: dataset.source.url ?? null });
  await options.onProgress?.();
  if (!folder.exists('plots/samples.png')) await writeDataPictures(folder, dataset, config, log);

  const classifier = buildClassifier({
    base: config.model.base,
    alpha: config.model.alpha,
    imageSize: config.dataset.image_size as [number, number],
    classCount: dataset.classNames.length,
    dropout: config.model.dropout,
    seed: config.seed,
  });
  const { weights, source: weightsSource } = await loadPretrainedWeights(config.model.weights, {
    baseDir: meta.base_dir,
    cacheDir: options.cacheDir,
    alpha: config.model.alpha,
    imageSize: config.dataset.image_size as [number, number],
    log,
  });
  if (weights) {
    const { assigned } = assignWeights(classifier.base, weights, { requireAll: true, what: `model.weights (${config.model.weights})` });
    log.info({ assigned, source: config.model.weights }, `loaded ${assigned} pretrained base weights`);
  }
  const objective = objectiveFor(config, classifier, dataset);
  const batchSize = config.dataset.batch_size;
  const augment = config.augmentation.length > 0 ? (images: Tensor4D, random: import('./random.ts').Random) => augmentBatch(images, config.augmentation, random) : identityAugment;

  const records = folder.readJsonLines<EpochRecord>('metrics.jsonl');
  const lastCheckpoint = findCheckpoint(folder.file('checkpoints', 'last'));
  const resume = lastCheckpoint ? { dir: lastCheckpoint, meta: readCheckpointMeta(lastCheckpoint) } : undefined;
  const resumeFrom = resume?.meta.epoch ?? 0;
  if (resume) {
    // A record the kill cut off (checkpoint written, line not yet) is restored from the checkpoint.
    const cut = resume.meta.record;
    if (cut && !records.some((r) => r.epoch === cut.epoch)) {
      folder.appendJsonLine('metrics.jsonl', cut);
      records.push(cut);
    }
    await loadCheckpoint(resume.dir, classifier.model);
  }

  if (!records.some((r) => r.epoch === 0)) {
    const initial = evaluate(classifier.model, objective, dataset.splits.validation, batchSize);
    const record: EpochRecord = { epoch: 0, phase: 'initial', loss: Number.NaN, accuracy: Number.NaN, val_loss: initial.loss, val_accuracy: initial.accuracy, learning_rate: 0, seconds: 0, time: Date.now() };
    log.info(`before training: val_loss ${initial.loss.toFixed(4)} val_acc ${initial.accuracy.toFixed(4)}`);
    folder.appendJsonLine('metrics.jsonl', { ...record, loss: null, accuracy: null });
    records.push(record);
  }

  const phases: RunSummary['phases'] = {};
  let bestValAccuracy = -1;
  for (const r of records) if (r.epoch > 0 && r.val_accuracy > bestValAccuracy) bestValAccuracy = r.val_accuracy;
  for (const plan of planPhases(config)) {
    const lastEpoch = plan.firstEpoch + plan.epochs - 1;
    const phaseConfig = config.train[plan.phase];
    const trainableVariables = setPhaseTrainable(classifier, plan.phase, config.train.fine_tune.fine_tune_at);
    const phaseSummary: PhaseSummary = {
      epochs: plan.epochs,
      first_epoch: plan.firstEpoch,
      last_epoch: lastEpoch,
      seconds: records.filter((r) => r.phase === plan.phase).reduce((s, r) => s + r.seconds, 0),
      trainable_layers: trainableBaseLayerCount(classifier),
      trainable_variables: trainableVariables,
    };
    phases[plan.phase] = phaseSummary;
    if (plan.epochs === 0 || resumeFrom >= lastEpoch) continue;
    const optimizer: TfOptimizer = createOptimizer(phaseConfig.optimizer);
    const startEpoch = Math.max(plan.firstEpoch - 1, resumeFrom);
    if (resume && startEpoch > plan.firstEpoch - 1) {
      // Continuing inside this phase: its optimizer state too, so the next step is the one an uninterrupted run takes.
      await loadOptimizerState(resume.dir, optimizer);
      log.info({ epoch: resumeFrom, phase: resume.meta.phase }, `continuing from the checkpoint of epoch ${resumeFrom}`);
    }
    log.info({ phase: plan.phase, trainable_variables: trainableVariables, trainable_layers: phaseSummary.trainable_layers, epochs: `${startEpoch + 1}..${lastEpoch}` }, `phase ${plan.phase}: ${trainableVariables} trainable variables`);
    const outcome = await runPhase(
      {
        model: classifier.model,
        objective,
        train: dataset.splits.train,
        validation: dataset.splits.validation,
        batchSize,
        seed: config.seed,
        augment,
        shouldStop: options.shouldStop ?? (() => false),
        cacheFrozenOutputs: config.augmentation.length === 0,
        progress: Boolean(process.stderr.isTTY),
        log: (message, fields) => log.info(fields ?? {}, message),
        onEpochEnd: async (record) => {
          await saveCheckpoint(folder.file('checkpoints', 'last'), classifier.model, optimizer, { epoch: record.epoch, phase: plan.phase, record });
          folder.appendJsonLine('metrics.jsonl', record);
          records.push(record);
          phaseSummary.seconds += record.seconds;
          await options.onProgress?.();
          if (record.val_accuracy > bestValAccuracy) {
            bestValAccuracy = record.val_accuracy;
            await saveCheckpoint(folder.file('checkpoints', 'best'), classifier.model, undefined, { epoch: record.epoch, phase: plan.phase, record });
          }
        },
      },
      {
        phase: plan.phase,
        startEpoch,
        endEpoch: lastEpoch,
        phaseStartEpoch: plan.firstEpoch - 1,
        optimizer,
        learningRateAt: (epochInPhase) => learningRateAt(phaseConfig.optimizer.learning_rate, phaseConfig.schedule, epochInPhase, plan.epochs),
        earlyStopping: phaseConfig.early_stopping,
      },
    );
    optimizer.dispose();
    if (outcome.interrupted) {
      await saveCheckpoint(folder.file('checkpoints', 'interrupted'), classifier.model, undefined, { epoch: records.at(-1)?.epoch ?? 0, phase: plan.phase });
      throw new InterruptedRun(`stopped during ${plan.phase}; resume with: tlx run --resume ${folder.dir}`);
    }
    if (outcome.stoppedEarly) {
      phaseSummary.stopped_early = true;
      phaseSummary.restored_best_epoch = outcome.restoredEpoch;
    }
    if (plan.phase === 'feature_extraction') {
      // The state every fine-tuning variant of this experiment starts from (sweeps share it).
      await saveCheckpoint(folder.file('checkpoints', 'feature_extraction'), classifier.model, undefined, { epoch: lastEpoch, phase: plan.phase, record: records.at(-1) });
    }
  }

  const validation = evaluate(classifier.model, objective, dataset.splits.validation, batchSize);
  const test: Evaluation | undefined = dataset.splits.test.length > 0 ? evaluate(classifier.model, objective, dataset.splits.test, batchSize) : undefined;
  log.info(`final: val_loss ${validation.loss.toFixed(4)} val_acc ${validation.accuracy.toFixed(4)}${test ? ` test_loss ${test.loss.toFixed(4)} test_acc ${test.accuracy.toFixed(4)}` : ''}`);
  const reportSplit = test ? dataset.splits.test : dataset.splits.validation;
  const report = classificationReport(dataset.classNames, reportSplit.labels, (test ?? validation).predictions);
  const fineTuneStart = config.train.fine_tune.epochs > 0 ? config.train.feature_extraction.epochs + 1 : undefined;
  try {
    await writeChartPng(learningCurvesSpec(records.filter((r) => r.epoch > 0), fineTuneStart), folder.file('plots', 'learning_curves.png'));
    await writeChartPng(confusionMatrixSpec(dataset.classNames, report, `Confusion matrix (${test ? 'test' : 'validation'} split)`), folder.file('plots', 'confusion_matrix.png'));
  } catch (error) {
    log.warn({ error: errorMessage(error) }, 'could not draw the plots');
  }
  await saveModel(classifier, folder);
  const exported = config.export.tflite
    ? await exportStage({ folder, config, dataset, classifier, evaluation: test ? { name: 'test', ...test } : { name: 'validation', ...validation }, log })
    : undefined;
  const initial = records.find((r) => r.epoch === 0);
  const summary: RunSummary = {
    run_id: folder.id,
    status: 'FINISHED',
    name: config.name,
    config_sha256: meta.config_sha256,
    tlx_version: version,
    head: { kind: classifier.head, units: classifier.units, loss: classifier.head === 'binary_logit' ? 'binary_crossentropy_from_logits' : 'categorical_crossentropy_from_logits' },
    weights: weightsSource,
    dataset: {
      root: dataset.source.root,
      url: dataset.source.url,
      archive_sha256: dataset.source.archiveSha256,
      classes: dataset.classNames,
      counts,
      storage: dataset.storage,
      skipped: { count: dataset.skipped.length, files: dataset.skipped },
    },
    phases,
    metrics: {
      initial: initial ? { val_loss: initial.val_loss, val_accuracy: initial.val_accuracy } : undefined,
      final: { val_loss: validation.loss, val_accuracy: validation.accuracy, test_loss: test?.loss ?? Number.NaN, test_accuracy: test?.accuracy ?? Number.NaN },
      best_val_accuracy: bestValAccuracy >= 0 ? bestValAccuracy : undefined,
    },
    test_report: report.perClass,
    confusion_matrix: report.confusion,
    artifacts: {
      config: 'config.yaml',
      metrics: 'metrics.jsonl',
      labels: 'labels.txt',
      model: 'model/model.json',
      checkpoint_last: 'checkpoints/last',
      checkpoint_best: 'checkpoints/best',
      learning_curves: 'plots/learning_curves.png',
      confusion_matrix: 'plots/confusion_matrix.png',
      samples: 'plots/samples.png',
      augmentation: 'plots/augmentation.png',
    },
    seconds: (performance.now() - started) / 1000,
    finished_at: Date.now(),
    ...(exported ? { export: { tflite: exported } } : {}),
  };
  folder.writeJson('summary.json', summary);
  const runMeta = folder.readJson<RunMeta>('run.json');
  folder.writeJson('run.json', { ...runMeta, status: 'FINISHED', updated: new Date().toISOString() });
  return summary;
}

export interface ExportStageInputs {
  folder: RunFolder;
  config: ResolvedExperiment;
  dataset: PreparedDataset;
  classifier: Classifier;
  evaluation: Evaluation & { name: string };
  log: Logger;
  /** Another mode than the config's: written to tflite-<mode>/ beside the main export. */
  quantization?: NonNullable<ResolvedExperiment['export']['tflite']>['quantization'];
}

/** export: the trained model to a verified TFLite file with labels.txt and a model card. */
export async function exportStage(inputs: ExportStageInputs): Promise<TfliteRecord> {
  const { folder, config, dataset, classifier, evaluation } = inputs;
  const configured = config.export.tflite ?? { quantization: 'int8', io_type: 'uint8', representative_images: 300, max_accuracy_drop: 0.02 };
  const options = { ...configured, quantization: inputs.quantization ?? configured.quantization };
  const outputDir = inputs.quantization && inputs.quantization !== configured.quantization ? folder.file(`tflite-${inputs.quantization}`) : folder.dir;
  const split = evaluation.name === 'test' ? dataset.splits.test : dataset.splits.validation;
  return exportTflite({
    outputDir,
    weightsDir: folder.file('model', 'named'),
    classifier: { base: classifier.spec.base, alpha: classifier.spec.alpha, imageSize: classifier.spec.imageSize, classCount: classifier.spec.classCount, head: classifier.head, units: classifier.units },
    classNames: dataset.classNames,
    train: dataset.splits.train,
    evaluation: { name: evaluation.name, split, probabilities: evaluation.probabilities, accuracy: evaluation.accuracy },
    options,
    seed: config.seed,
    log: inputs.log,
  });
}

/** The trained model in tfjs layers format (model.json + weights), plus what rebuilding it needs. */
async function saveModel(classifier: Classifier, folder: RunFolder): Promise<void> {
  const target = folder.file('model');
  const temp = `${target}.tmp-${process.pid}`;
  fs.rmSync(temp, { recursive: true, force: true });
  await classifier.model.save(`file://${temp}`);
  await saveCheckpoint(path.join(temp, 'named'), classifier.model, undefined, { epoch: -1, phase: 'final' });
  fs.writeFileSync(path.join(temp, 'classifier.json'), `${JSON.stringify({ ...classifier.spec, head: classifier.head, units: classifier.units }, null, 2)}\n`);
  fs.rmSync(target, { recursive: true, force: true });
  fs.renameSync(temp, target);
}
