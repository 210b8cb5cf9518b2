import { someOf, UserError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { prepareDataset } from '../data/dataset.ts';
import type { Exporter } from '../export/python.ts';
import { buildClassifier, classifierSpecOf } from '../models/classifier.ts';
import { loadCheckpointWeights } from '../run-folder/checkpoints.ts';
import type { TfliteRecord } from '../run-folder/records.ts';
import type { RunFolder } from '../run-folder/run-folder.ts';
import { evaluate } from '../train/engine.ts';
import { exportToFolder, tfliteOptions, type Quantization } from './export-stage.ts';
import type { DatasetProvider } from './run.ts';

export interface ExportFinishedOptions {
  mode?: Quantization;
  cacheDir?: string;
  log: Logger;
  exporter?: Exporter;
  signal?: AbortSignal;
  /** Data already decoded for this config (a sweep's). */
  prepareData?: DatasetProvider;
}

/**
 * Exports a finished run's model again (`tlx convert`, or a sweep exporting its best trial):
 * the run folder must be locked by the caller. The record is added to summary.json only
 * when it verified; a failed export leaves the previous one, file and record, as it was.
 */
export async function exportFinishedRun(folder: RunFolder, options: ExportFinishedOptions): Promise<TfliteRecord> {
  if (!folder.hasModel() || !folder.hasSummary())
    throw new UserError(`${folder.dir}: the run has no trained model yet (finish or resume it first)`);
  const config = folder.readConfig();
  const run = folder.readRun();
  const summary = folder.readSummary();
  const known = folder.readDataset()?.archive_sha256;
  const dataset = options.prepareData
    ? await options.prepareData(config, run.base_dir, known)
    : await prepareDataset(config, {
        baseDir: run.base_dir,
        cacheDir: options.cacheDir,
        log: options.log,
        knownArchiveSha256: known,
      });
  if (dataset.classNames.join('\n') !== summary.dataset.classes.join('\n')) {
    const added = dataset.classNames.filter((name) => !summary.dataset.classes.includes(name));
    const missing = summary.dataset.classes.filter((name) => !dataset.classNames.includes(name));
    throw new UserError(
      `${folder.dir}: the dataset's ${dataset.classNames.length} classes are not the ${summary.dataset.classes.length} the run was trained on (new: ${someOf(added) || 'none'}; missing: ${someOf(missing) || 'none'}); the labels would not match the model`,
    );
  }
  const classifier = buildClassifier(classifierSpecOf(folder.readClassifier()));
  try {
    loadCheckpointWeights(folder.modelWeightsDir(), classifier.model);
    const name = dataset.splits.test.length > 0 ? 'test' : 'validation';
    const objective = { head: classifier.head, classCount: dataset.classNames.length, labelSmoothing: 0 };
    const evaluation = evaluate(classifier.model, objective, dataset.splits[name], config.dataset.batch_size);
    const { options: settings, configured } = tfliteOptions(config, options.mode);
    const record = await exportToFolder({
      folder,
      config,
      classifier,
      classNames: dataset.classNames,
      train: dataset.splits.train,
      measured: { name, split: dataset.splits[name], evaluation },
      log: options.log,
      mode: options.mode,
      exporter: options.exporter,
      signal: options.signal,
      finalWeights: summary.final_weights,
    });
    if (record.status === 'verified') {
      const exports = { ...(summary.export ?? {}) };
      if (configured) exports.tflite = record;
      else exports.tflite_modes = { ...(exports.tflite_modes ?? {}), [settings.quantization]: record };
      folder.writeSummary({ ...summary, export: exports });
    }
    return record;
  } finally {
    classifier.model.dispose();
  }
}
