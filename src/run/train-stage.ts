import path from 'node:path';
import type { Optimizer } from '@tensorflow/tfjs-node';
import type { ResolvedExperiment } from '../config/resolved.ts';
import { InterruptedError } from '../core/errors.ts';
import type { PreparedDataset } from '../data/dataset.ts';
import { setPhaseTrainable, trainableBaseLayerCount, type Phase } from '../models/classifier.ts';
import { loadCheckpointWeights, readCheckpointMeta } from '../run-folder/checkpoints.ts';
import type { FinalWeights, PhaseOutcome, PhaseSummary } from '../run-folder/records.ts';
import type { EarlyStopping } from '../train/callbacks.ts';
import { imageVariants } from '../data/augment.ts';
import { resolveCacheDir } from '../net/cache-dir.ts';
import { FrozenPrefixStore } from '../engine/frozen-outputs.ts';
import {
  fitPhase,
  type Callback,
  type Evaluation,
  type FitInputs,
  type PhaseSpan,
  type ValidatedWeights,
} from '../train/engine.ts';
import { PreferredKernel } from '../tfjs/native-ops.ts';
import { createOptimizer, learningRateAt } from '../train/optimizers.ts';
import { EpochLog, InterruptCallback, TrackingCallback } from './callbacks.ts';
import { initialEvaluationDue, recordInitialEvaluation } from './evaluate-stage.ts';
import type { RunModel } from './model-stage.ts';
import {
  earlyStoppingFor,
  phaseDone,
  restoreCheckpoint,
  restoreOptimizer,
  resumeAfter,
  RunRecorder,
  type ResumePoint,
} from './resume.ts';
import type { RunContext } from './run.ts';

/** The two phases of the tutorial, numbered continuously from epoch 1 (0 is before training). */
export function phaseSpans(config: ResolvedExperiment): (PhaseSpan & { phase: Phase })[] {
  const fe = config.train.feature_extraction.epochs;
  const ft = config.train.fine_tune.epochs;
  return [
    { phase: 'feature_extraction', first: 1, last: fe, resumeAfter: 0 },
    { phase: 'fine_tune', first: fe + 1, last: fe + ft, resumeAfter: fe },
  ];
}

/** Which of the kernels tlx prefers ran (debug), and a warning when one is missing from the TensorFlow build (its slower fallback ran). */
function reportKernels(context: RunContext): void {
  const kernels = PreferredKernel.report();
  context.log.debug({ kernels }, 'native kernels');
  const missing = Object.keys(kernels).filter((name) => kernels[name] === false);
  if (missing.length > 0)
    context.log.warn({ kernels }, `not in this TensorFlow build, so the slower unfused ops ran: ${missing.join(', ')}`);
}

export interface TrainedPhases {
  summaries: Partial<Record<Phase, PhaseSummary>>;
  /** The last phase's last validation in this process, and the weights it saw. */
  lastValidation?: ValidatedWeights;
}

/**
 * train: epoch 0 (before training), then the phases from the resume point on, with the
 * run's callbacks; returns each phase's summary and the last validation.
 */
export async function trainPhases(
  context: RunContext,
  model: RunModel,
  data: PreparedDataset,
  point: ResumePoint,
): Promise<TrainedPhases> {
  const { config, folder } = context;
  const { classifier } = model;
  restoreCheckpoint(context, model, point);
  const summaries: Partial<Record<Phase, PhaseSummary>> = {};
  let initialDue = initialEvaluationDue(point);
  let lastValidation: ValidatedWeights | undefined;
  const ownPrefix = ownPrefixStore(context, point);
  try {
    for (const span of phaseSpans(config)) {
      const settings = config.train[span.phase];
      const trainableVariables = setPhaseTrainable(classifier, span.phase, config.train.fine_tune.fine_tune_at);
      const summary: PhaseSummary = {
        epochs: settings.epochs,
        first_epoch: span.first,
        last_epoch: span.last,
        seconds: 0,
        trainable_layers: trainableBaseLayerCount(classifier),
        trainable_variables: trainableVariables,
      };
      summaries[span.phase] = summary;
      const after = resumeAfter(span, point);
      if (settings.epochs > 0 && !phaseDone(span, point) && after < span.last) {
        // The first phase that trains evaluates epoch 0 through its own frozen layers' outputs.
        const beforeTraining = initialDue
          ? (evaluation: Evaluation) => recordInitialEvaluation(context, model, data, point, evaluation)
          : undefined;
        initialDue = false;
        lastValidation = await trainPhase(
          context,
          model,
          data,
          point,
          { ...span, resumeAfter: after },
          { beforeTraining, prefixStore: ownPrefix },
        );
      }
      const outcome: PhaseOutcome | undefined = context.run.phase_outcomes[span.phase];
      if (outcome?.stopped_early) summary.stopped_early = true;
      if (outcome?.restored_best_epoch !== undefined) summary.restored_best_epoch = outcome.restored_best_epoch;
      summary.seconds = folder
        .readMetrics()
        .records.filter((r) => r.phase === span.phase)
        .reduce((sum, r) => sum + r.seconds, 0);
    }
  } finally {
    ownPrefix?.dispose();
  }
  if (initialDue) await recordInitialEvaluation(context, model, data, point);
  reportKernels(context);
  return { summaries, lastValidation };
}

/**
 * Whether a run that trains both phases here keeps the outputs of the base layers below
 * fine_tune_at from feature extraction's pass over the frozen base, so fine-tuning reads them
 * instead of running those layers again: only when feature extraction caches its outputs
 * anyway (epochs enough to pay for every variant), so keeping them never costs it a pass.
 */
export function keepsFeatureExtractionOutputs(
  config: ResolvedExperiment,
  featureExtractionEpochsLeft: number,
): boolean {
  const variants = imageVariants(config.augmentation);
  return variants !== undefined && featureExtractionEpochsLeft >= variants.count && config.train.fine_tune.epochs > 0;
}

/** The run's own store for them (none when a sweep's store is given, or when it would not pay). */
function ownPrefixStore(context: RunContext, point: ResumePoint): FrozenPrefixStore | undefined {
  if (context.options.services?.frozenOutputs) return undefined;
  const [featureExtraction] = phaseSpans(context.config);
  const left = phaseDone(featureExtraction, point) ? 0 : featureExtraction.last - resumeAfter(featureExtraction, point);
  return keepsFeatureExtractionOutputs(context.config, left) ? new FrozenPrefixStore() : undefined;
}

/**
 * train.restore_best_weights: the weights of the epoch with the best validation accuracy (the
 * `best` checkpoint, the earliest of equal epochs) replace the last epoch's before the model is
 * evaluated, saved and exported; Keras's EarlyStopping(restore_best_weights=True) over the
 * whole run. Read from the checkpoint, so a resumed run (e.g. after a failed export) restores
 * the same epoch. Without the setting, or without a `best` checkpoint, the last epoch's stay.
 */
export function restoreBestWeights(context: RunContext, model: RunModel): FinalWeights {
  const trained = context.folder.readMetrics().records.filter((record) => record.epoch > 0);
  const last = trained.length > 0 ? Math.max(...trained.map((record) => record.epoch)) : 0;
  const lastEpoch: FinalWeights = { epoch: last, last_epoch: last, selected_by: 'last_epoch' };
  if (!context.config.train.restore_best_weights || last === 0) return lastEpoch;
  const dir = context.folder.findCheckpoint('best');
  if (!dir) {
    context.log.warn("train.restore_best_weights: the run has no best checkpoint; the last epoch's weights are kept");
    return lastEpoch;
  }
  const best = readCheckpointMeta(dir).epoch;
  if (best !== last) {
    loadCheckpointWeights(dir, model.classifier.model);
    const record = trained.find((r) => r.epoch === best);
    context.log.info(
      { epoch: best },
      `restored the weights of epoch ${best} (best val_accuracy${record ? ` ${record.val_accuracy.toFixed(4)}` : ''}; the last epoch was ${last})`,
    );
  }
  return { epoch: best, last_epoch: last, selected_by: 'best_val_accuracy' };
}

/** Where a run's frozen layers' outputs go when too large for memory: files under the cache folder (beside the pixel files). */
export function frozenOutputsStorage(context: RunContext): FitInputs['cacheStorage'] {
  return { dir: path.join(resolveCacheDir(context.options.cacheDir), 'frozen-outputs') };
}

/**
 * The base layers whose outputs are shared, and where they are kept: below the sweep group's
 * smallest fine_tune_at in a sweep's store, or below the run's fine_tune_at in its own.
 */
export function sharedPrefixOf(
  context: RunContext,
  model: RunModel,
  own?: FrozenPrefixStore,
): FitInputs['sharedPrefix'] {
  const shared = context.options.services?.frozenOutputs;
  const fineTuneAt = context.config.train.fine_tune.fine_tune_at;
  const store = shared?.store ?? own;
  if (!store) return undefined;
  const below = shared ? Math.min(shared.fineTuneAt, fineTuneAt) : fineTuneAt;
  return { layers: model.classifier.base.layers.slice(0, below), store };
}

/** The callbacks of one phase: Ctrl-C, early stopping, the run's record, the epoch log, progress and live tracking. */
function phaseCallbacks(
  context: RunContext,
  model: RunModel,
  optimizer: Optimizer,
  earlyStopping: EarlyStopping | undefined,
): Callback[] {
  const { folder, log, options } = context;
  const recorded = folder.readMetrics().records.filter((r) => r.epoch > 0);
  const recorder = new RunRecorder(
    folder,
    model.classifier.model,
    optimizer,
    { bestValAccuracy: Math.max(-1, ...recorded.map((r) => r.val_accuracy)) },
    earlyStopping,
    (phase, outcome) => context.setRun({ phase_outcomes: { ...context.run.phase_outcomes, [phase]: outcome } }),
  );
  return [
    ...(options.signal ? [new InterruptCallback(options.signal)] : []),
    ...(earlyStopping ? [earlyStopping] : []),
    recorder,
    new EpochLog(log),
    ...(context.progress ? [context.progress.callback()] : []),
    ...(context.tracking ? [new TrackingCallback(() => context.tracking!.update())] : []),
  ];
}

async function trainPhase(
  context: RunContext,
  model: RunModel,
  data: PreparedDataset,
  point: ResumePoint,
  span: PhaseSpan & { phase: Phase },
  extra: { beforeTraining?: FitInputs['beforeTraining']; prefixStore?: FrozenPrefixStore },
): Promise<ValidatedWeights | undefined> {
  const { config, folder, log } = context;
  const settings = config.train[span.phase];
  const optimizer = createOptimizer(settings.optimizer);
  try {
    const inside = await restoreOptimizer(point, span, optimizer);
    const earlyStopping = earlyStoppingFor(context, model, span.phase, point, inside);
    const callbacks = phaseCallbacks(context, model, optimizer, earlyStopping);
    const trainable = model.classifier.model.trainableWeights.length;
    const epochs = `${span.resumeAfter + 1}..${span.last}`;
    log.info(
      { phase: span.phase, trainable_variables: trainable, epochs },
      `phase ${span.phase}: ${trainable} trainable variables`,
    );
    const end = await fitPhase(
      {
        model: model.classifier.model,
        objective: model.objective,
        train: data.splits.train,
        validation: data.splits.validation,
        batchSize: config.dataset.batch_size,
        seed: config.seed,
        augment: model.augment,
        variants: imageVariants(config.augmentation),
        cacheStorage: frozenOutputsStorage(context),
        // Both phases: feature extraction's pass keeps the shared layers' outputs for fine-tuning.
        sharedPrefix: sharedPrefixOf(context, model, extra.prefixStore),
        beforeTraining: extra.beforeTraining,
        log: (message, fields) => log.info(fields ?? {}, message),
      },
      {
        ...span,
        optimizer,
        learningRateAt: (epochInPhase) =>
          learningRateAt(settings.optimizer.learning_rate, settings.schedule, epochInPhase, settings.epochs),
      },
      callbacks,
    );
    if (!end.complete)
      throw new InterruptedError(`stopped during ${span.phase}; resume with: tlx run --resume ${folder.dir}`);
    return end.lastValidation;
  } finally {
    optimizer.dispose();
  }
}
