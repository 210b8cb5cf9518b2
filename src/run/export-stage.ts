import type { ResolvedExperiment } from '../config/resolved.ts';
import { schemaDefaults } from '../config/schema.ts';
import type { Logger } from '../core/log.ts';
import { version } from '../core/project.ts';
import type { PreparedDataset } from '../data/dataset.ts';
import type { ImageSplit } from '../data/images.ts';
import { defaultMaxImagePixels } from '../data/images.ts';
import { PythonWorker, type Exporter } from '../export/python.ts';
import { exportTflite, type ClassifierDescription, type TfliteOptions } from '../export/tflite.ts';
import type { Classifier } from '../models/classifier.ts';
import type { FinalWeights, TfliteRecord } from '../run-folder/records.ts';
import type { RunFolder } from '../run-folder/run-folder.ts';
import type { Evaluation } from '../train/engine.ts';
import type { FinalEvaluation } from './evaluate-stage.ts';
import type { RunModel } from './model-stage.ts';
import type { RunContext } from './run.ts';

/** The export stage, shared by `tlx run` and `tlx convert`. */

export type Quantization = TfliteOptions['quantization'];

export interface ExportJob {
  folder: RunFolder;
  config: ResolvedExperiment;
  classifier: Classifier;
  classNames: string[];
  train: ImageSplit;
  measured: { name: string; split: ImageSplit; evaluation: Evaluation };
  log: Logger;
  /** Another mode than the config's: written to tflite-<mode>/ beside the main export. */
  mode?: Quantization;
  exporter?: Exporter;
  signal?: AbortSignal;
  /** Which epoch's weights the run saved (summary.json's final_weights). */
  finalWeights?: FinalWeights;
}

/** The export settings of a run: the config's, else the schema's defaults; `mode` replaces the quantization. */
export function tfliteOptions(
  config: ResolvedExperiment,
  mode?: Quantization,
): { options: TfliteOptions; configured: boolean } {
  const configured = config.export.tflite ?? schemaDefaults<TfliteOptions>(['export', 'tflite']);
  return {
    options: { ...configured, quantization: mode ?? configured.quantization },
    configured: mode === undefined || mode === configured.quantization,
  };
}

export function describeClassifier(classifier: Classifier): ClassifierDescription {
  const { spec } = classifier;
  return {
    base: spec.base,
    alpha: spec.alpha,
    minimalistic: spec.minimalistic ?? false,
    imageSize: spec.imageSize,
    classCount: spec.classCount,
    head: classifier.head,
    units: classifier.units,
  };
}

/**
 * Exports into a staging folder of the run and moves the files into place only when the
 * export verified: a failed export never replaces a verified one (its record says why).
 */
export async function exportToFolder(job: ExportJob): Promise<TfliteRecord> {
  const { folder, config, log } = job;
  const { options, configured } = tfliteOptions(config, job.mode);
  const staging = folder.stagingDir('export');
  const owned = job.exporter ? undefined : PythonWorker.start((line) => log.debug({ python: line }));
  try {
    const record = await exportTflite({
      outputDir: staging,
      weightsDir: folder.modelWeightsDir(),
      finalWeights: job.finalWeights,
      classifier: describeClassifier(job.classifier),
      classNames: job.classNames,
      train: job.train,
      evaluation: {
        name: job.measured.name,
        split: job.measured.split,
        probabilities: job.measured.evaluation.probabilities,
        predictions: job.measured.evaluation.predictions,
        accuracy: job.measured.evaluation.accuracy,
      },
      options,
      metadata: {
        name: options.metadata?.name ?? config.name,
        description:
          options.metadata?.description ??
          `Image classifier (${config.model.base}, ${job.classNames.length} classes: ${job.classNames.join(', ')}) at ${config.dataset.image_size.join('x')}, trained with tlx.`,
        version: `tlx ${version}, run ${folder.id}`,
        ...(options.metadata?.author ? { author: options.metadata.author } : {}),
        ...(options.metadata?.license ? { license: options.metadata.license } : {}),
      },
      seed: config.seed,
      maxImagePixels: config.dataset.max_image_pixels ?? defaultMaxImagePixels,
      exporter: job.exporter ?? owned!,
      call: { signal: job.signal },
      log,
    });
    const relative = configured ? '.' : `tflite-${options.quantization}`;
    if (record.status === 'verified') folder.installExport(staging, relative);
    return configured
      ? record
      : {
          ...record,
          path: `${relative}/model.tflite`,
          labels_file: `${relative}/labels.txt`,
          model_card: `${relative}/model-card.json`,
        };
  } finally {
    folder.removeStaging(staging);
    await owned?.close();
  }
}

/** export: the trained model to a verified TFLite file, when the config asks for one. */
export async function exportStage(
  context: RunContext,
  model: RunModel,
  data: PreparedDataset,
  evaluation: FinalEvaluation,
  finalWeights: FinalWeights,
): Promise<TfliteRecord | undefined> {
  const { config, options } = context;
  if (!config.export.tflite || options.export === false) return undefined;
  context.progress?.stage('exporting TFLite');
  try {
    return await exportToFolder({
      folder: context.folder,
      config,
      classifier: model.classifier,
      classNames: data.classNames,
      train: data.splits.train,
      measured: evaluation.measured,
      log: context.log,
      exporter: context.exporter,
      signal: options.signal,
      finalWeights,
    });
  } finally {
    context.progress?.stage(undefined);
  }
}
