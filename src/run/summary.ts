import { version } from '../core/project.ts';
import type { PreparedDataset } from '../data/dataset.ts';
import { splitCounts } from '../data/dataset.ts';
import type { Phase } from '../models/classifier.ts';
import { accuracyInterval } from '../core/stats.ts';
import type { EpochRecord, FinalWeights, PhaseSummary, RunSummary, TfliteRecord } from '../run-folder/records.ts';
import { runArtifacts } from '../run-folder/run-folder.ts';
import type { FinalEvaluation } from './evaluate-stage.ts';
import type { RunModel } from './model-stage.ts';
import { memoryRecord, type TrainingMemory } from './memory-check.ts';
import type { RunContext } from './run.ts';

export interface SummaryInputs {
  data: PreparedDataset;
  model: RunModel;
  phases: Partial<Record<Phase, PhaseSummary>>;
  finalWeights: FinalWeights;
  evaluation: FinalEvaluation;
  exported?: TfliteRecord;
  memory: TrainingMemory;
}

/** The 95% interval of an accuracy on `images` images, when there is one to give. */
function intervalOf(accuracy: number | undefined, images: number): [number, number] | undefined {
  return accuracy !== undefined && Number.isFinite(accuracy) && images > 0
    ? accuracyInterval(accuracy, images)
    : undefined;
}

/** The metrics of summary.json: before training, after it (with 95% intervals on the splits' image counts), and the best validation accuracy. */
function finalMetrics(
  records: EpochRecord[],
  data: PreparedDataset,
  evaluation: FinalEvaluation,
): RunSummary['metrics'] {
  const initial = records.find((r) => r.epoch === 0);
  const trained = records.filter((r) => r.epoch > 0);
  const { validation, test } = evaluation;
  return {
    initial: initial ? { val_loss: initial.val_loss, val_accuracy: initial.val_accuracy } : undefined,
    final: {
      val_loss: validation.loss,
      val_accuracy: validation.accuracy,
      test_loss: test?.loss ?? Number.NaN,
      test_accuracy: test?.accuracy ?? Number.NaN,
      val_accuracy_ci95: intervalOf(validation.accuracy, data.splits.validation.length),
      test_accuracy_ci95: intervalOf(test?.accuracy, data.splits.test.length),
    },
    best_val_accuracy: trained.length > 0 ? Math.max(...trained.map((r) => r.val_accuracy)) : undefined,
  };
}

/** record: summary.json, the machine-readable account of the run (DESIGN.md). */
export function recordSummary(context: RunContext, inputs: SummaryInputs): RunSummary {
  const { folder, config } = context;
  const { data, model, phases, finalWeights, evaluation, exported, memory } = inputs;
  const records = folder.readMetrics().records;
  const exportFailed = exported?.status === 'failed';
  const summary: RunSummary = {
    run_id: folder.id,
    status: exportFailed ? 'FAILED' : 'FINISHED',
    ...(exportFailed ? { failed_stage: 'export', error: `export failed: ${exported.problems.join('; ')}` } : {}),
    name: config.name,
    config_sha256: context.run.config_sha256,
    tlx_version: version,
    head: {
      kind: model.classifier.head,
      units: model.classifier.units,
      loss:
        model.classifier.head === 'binary_logit'
          ? 'binary_crossentropy_from_logits'
          : 'categorical_crossentropy_from_logits',
    },
    weights: model.weights,
    dataset: {
      root: data.source.root,
      url: data.source.url ?? null,
      archive_sha256: data.source.archiveSha256,
      classes: data.classNames,
      counts: splitCounts(data),
      storage: data.storage,
      skipped: { count: data.skipped.length, files: data.skipped },
    },
    phases: phases as Record<string, PhaseSummary>,
    final_weights: finalWeights,
    metrics: finalMetrics(records, data, evaluation),
    test_report: evaluation.report.perClass,
    confusion_matrix: evaluation.report.confusion,
    artifacts: { ...runArtifacts },
    seconds: (performance.now() - context.started) / 1000,
    finished_at: Date.now(),
    memory: memoryRecord(memory),
    ...(exported ? { export: { tflite: exported } } : {}),
  };
  folder.writeSummary(summary);
  return summary;
}
