import fs from 'node:fs';
import YAML from 'yaml';
import type { ResolvedExperiment } from '../config/resolved.ts';
import { prepareDataset } from '../data/dataset.ts';
import { UserError } from '../errors.ts';
import type { Logger } from '../log.ts';
import { buildClassifier, type ClassifierSpec } from '../models/classifier.ts';
import { exportStage, type RunMeta, type RunSummary } from '../run.ts';
import { loadCheckpoint } from '../train/checkpoint.ts';
import { evaluate } from '../train/engine.ts';
import { RunFolder } from '../track/run-store.ts';

type Quantization = NonNullable<ResolvedExperiment['export']['tflite']>['quantization'];

export interface ConvertOptions {
  runDir: string;
  quantization?: string;
  cacheDir?: string;
  log: Logger;
}

/** `tlx convert`: export a finished run again (another quantization mode), no retraining. */
export async function convertCommand(options: ConvertOptions): Promise<void> {
  const folder = RunFolder.open(options.runDir);
  if (!folder.exists('model/classifier.json') || !folder.exists('summary.json')) throw new UserError(`${options.runDir}: the run has no trained model yet (finish or resume it first)`);
  const config = YAML.parse(fs.readFileSync(folder.file('config.yaml'), 'utf8')) as ResolvedExperiment;
  const meta = folder.readJson<RunMeta>('run.json');
  const spec = folder.readJson<ClassifierSpec>('model/classifier.json');
  const dataset = await prepareDataset(config, { baseDir: meta.base_dir, cacheDir: options.cacheDir, log: options.log });
  const classifier = buildClassifier(spec);
  await loadCheckpoint(folder.file('model', 'named'), classifier.model);
  const split = dataset.splits.test.length > 0 ? 'test' : 'validation';
  const objective = { head: classifier.head, classCount: dataset.classNames.length, labelSmoothing: 0 };
  const evaluation = { name: split, ...evaluate(classifier.model, objective, dataset.splits[split], config.dataset.batch_size) };
  const quantization = options.quantization as Quantization | undefined;
  const record = await exportStage({ folder, config, dataset, classifier, evaluation, log: options.log, quantization });
  const summary = folder.readJson<RunSummary>('summary.json');
  const configured = config.export.tflite?.quantization ?? 'int8';
  const mode = quantization ?? configured;
  const exports = (summary.export ?? {}) as Record<string, unknown>;
  if (mode === configured) exports.tflite = record;
  else exports.tflite_modes = { ...((exports.tflite_modes as Record<string, unknown>) ?? {}), [mode]: { ...record, path: `tflite-${mode}/${record.path}` } };
  folder.writeJson('summary.json', { ...summary, export: exports });
  process.stdout.write(`${JSON.stringify({ run_id: folder.id, quantization: mode, status: record.status, bytes: record.bytes, accuracy: record.accuracy, median_latency_ms: record.median_latency_ms })}\n`);
  if (record.status !== 'verified') throw new Error(`export ${mode} failed verification: ${record.problems.join('; ')}`);
}
