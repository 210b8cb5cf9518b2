import { errorMessage } from '../core/errors.ts';
import type { PreparedDataset } from '../data/dataset.ts';
import type { ImageSplit } from '../data/images.ts';
import { chartPng } from '../plots/render.ts';
import {
  evaluate,
  validationOfCurrentWeights,
  type EpochRecord,
  type Evaluation,
  type ValidatedWeights,
} from '../train/engine.ts';
import {
  classificationReport,
  confusionMatrixSpec,
  learningCurvesSpec,
  type ClassificationReport,
} from '../train/classification-report.ts';
import type { RunModel } from './model-stage.ts';
import type { ResumePoint } from './resume.ts';
import type { RunContext } from './run.ts';

/** The evaluations of a run: before training (epoch 0) and after it (validation, test, report, plots). */

/** Whether the run still owes its epoch 0: a fresh run that has not recorded it yet. */
export function initialEvaluationDue(point: ResumePoint): boolean {
  return !point.checkpoint && !point.records.some((record) => record.epoch === 0);
}

/**
 * Epoch 0: the model before any training on the validation split (the tutorial's first
 * evaluate). The first phase passes it from its frozen layers' outputs cache; without one, the whole model runs.
 */
export async function recordInitialEvaluation(
  context: RunContext,
  model: RunModel,
  data: PreparedDataset,
  point: ResumePoint,
  computed?: Evaluation,
): Promise<void> {
  const initial =
    computed ??
    evaluate(model.classifier.model, model.objective, data.splits.validation, context.config.dataset.batch_size);
  const record: EpochRecord = {
    epoch: 0,
    phase: 'initial',
    loss: Number.NaN,
    accuracy: Number.NaN,
    val_loss: initial.loss,
    val_accuracy: initial.accuracy,
    learning_rate: 0,
    seconds: 0,
    time: Date.now(),
  };
  context.log.info(`before training: val_loss ${initial.loss.toFixed(4)} val_acc ${initial.accuracy.toFixed(4)}`);
  context.folder.appendMetric(record);
  point.records.push(record);
  await context.tracking?.update();
}

export interface FinalEvaluation {
  validation: Evaluation;
  test?: Evaluation;
  /** The split the report and the export are measured on: test, or validation without one. */
  measured: { name: 'test' | 'validation'; split: ImageSplit; evaluation: Evaluation };
  report: ClassificationReport;
}

/**
 * evaluate: final validation and test metrics, the per-class report, the plots, the saved
 * model. The validation metrics are the last epoch's when the model still has the weights
 * that epoch validated (no best weights restored since): the same model on the same images.
 */
export async function evaluateFinal(
  context: RunContext,
  model: RunModel,
  data: PreparedDataset,
  lastValidation?: ValidatedWeights,
): Promise<FinalEvaluation> {
  const { config, folder, log } = context;
  const batchSize = config.dataset.batch_size;
  const validation =
    validationOfCurrentWeights(model.classifier.model, lastValidation) ??
    evaluate(model.classifier.model, model.objective, data.splits.validation, batchSize);
  const test =
    data.splits.test.length > 0
      ? evaluate(model.classifier.model, model.objective, data.splits.test, batchSize)
      : undefined;
  log.info(
    `final: val_loss ${validation.loss.toFixed(4)} val_acc ${validation.accuracy.toFixed(4)}${test ? ` test_loss ${test.loss.toFixed(4)} test_acc ${test.accuracy.toFixed(4)}` : ''}`,
  );
  const measured = test
    ? { name: 'test' as const, split: data.splits.test, evaluation: test }
    : { name: 'validation' as const, split: data.splits.validation, evaluation: validation };
  const report = classificationReport(data.classNames, measured.split.labels, measured.evaluation.predictions);
  const fineTuneStart = config.train.fine_tune.epochs > 0 ? config.train.feature_extraction.epochs + 1 : undefined;
  try {
    const records = folder.readMetrics().records.filter((r) => r.epoch > 0);
    folder.writePlot('learning_curves.png', await chartPng(learningCurvesSpec(records, fineTuneStart)));
    const title = `Confusion matrix (${measured.name} split)`;
    folder.writePlot('confusion_matrix.png', await chartPng(confusionMatrixSpec(data.classNames, report, title)));
  } catch (error) {
    log.warn({ error: errorMessage(error) }, 'could not draw the plots');
  }
  await saveModel(context, model);
  return { validation, test, measured, report };
}

/** The trained model in tfjs layers format, its weights as a named checkpoint, and what rebuilding it needs. */
async function saveModel(context: RunContext, model: RunModel): Promise<void> {
  const { classifier } = model;
  await context.folder.saveModel(classifier.model, {
    ...classifier.spec,
    head: classifier.head,
    units: classifier.units,
  });
}
