import fs from 'node:fs';
import path from 'node:path';
import type { Export } from '../config/resolved.ts';
import { UserError } from '../core/errors.ts';
import { writeFileAtomic, writeJsonAtomic } from '../core/files.ts';
import type { Logger } from '../core/log.ts';
import { Random } from '../core/random.ts';
import type { ImageSplit } from '../data/images.ts';
import type { FinalWeights, TfliteRecord } from '../run-folder/records.ts';
import { modelCardMarkdown, preprocessingNote } from './model-card.ts';
import { exportStallMs, type CallOptions, type Exporter } from './python.ts';
import type { BaseModelName } from '../config/bases.ts';
import { accuracyInterval } from '../core/stats.ts';
import { gateSentence, judgeExport } from './gate.ts';

/**
 * Export to TFLite with TensorFlow's own converter (python/tlx_export.py), then prove the
 * file works by running it: output shape = number of labels, accuracy on the evaluation
 * split, agreement with the trained model, latency, the embedded metadata read back, and
 * MediaPipe Tasks' ImageClassifier on the same images. The app never has to guess a shape
 * or keep a labels array: the output is [1, labels] and the labels are inside the file.
 */

export type TfliteOptions = NonNullable<Export['tflite']>;

export interface TensorDescription {
  name: string;
  shape: number[];
  dtype: string;
  quantization: { scale: number; zero_point: number };
}

interface ExportReport {
  mode: string;
  io_type: string;
  bytes: number;
  input: TensorDescription;
  output: TensorDescription;
  labels_count: number;
  accuracy?: number;
  /** Top-1 class of the .tflite per evaluation image, in order. */
  predictions?: number[];
  reference_accuracy?: number;
  agreement_with_trained_model?: number;
  max_abs_diff_vs_trained_model?: number;
  median_latency_ms?: number;
  params: number;
  macs_per_image: number;
  host_latency_ms?: { '1': number; '4': number };
  peak_memory_bytes?: number;
  accuracy_nearest_resize?: number;
  keras_vs_tlx_max_abs_diff: number;
  weights_assigned: number;
  checks: Record<string, boolean>;
  problems: string[];
  seconds: Record<string, number>;
  metadata?: Record<string, unknown> | null;
  mediapipe?: {
    accuracy?: number;
    agreement_with_tflite?: number;
    named_results?: number;
    images?: number;
    skipped?: string;
  };
}

export interface ClassifierDescription {
  base: BaseModelName;
  alpha: number;
  minimalistic: boolean;
  imageSize: [number, number];
  classCount: number;
  head: string;
  units: number;
}

export interface ExportInputs {
  /** Staging folder: model.tflite, labels.txt and the model card are written here. */
  outputDir: string;
  /** tlx's named checkpoint of the trained weights. */
  weightsDir: string;
  /** Which epoch those weights are from (the card says it). */
  finalWeights?: FinalWeights;
  classifier: ClassifierDescription;
  classNames: string[];
  train: ImageSplit;
  /** Split the file is measured on (test, or validation when there is no test split). */
  evaluation: {
    name: string;
    split: ImageSplit;
    probabilities: Float32Array;
    predictions: Int32Array;
    accuracy: number;
  };
  options: TfliteOptions;
  /** Model name, description, version (tlx version + run id), author and license. */
  metadata: { name: string; description: string; version: string; author?: string; license?: string };
  seed: number;
  maxImagePixels: number;
  exporter: Exporter;
  call?: CallOptions;
  log: Logger;
}

function writeImages(file: string, split: ImageSplit, indices: number[]): void {
  const bytes = new Uint8Array(indices.length * split.bytesPerImage);
  indices.forEach((index, i) => bytes.set(split.imageBytes(index), i * split.bytesPerImage));
  fs.writeFileSync(file, bytes);
}

function pct(value?: number): string {
  return value === undefined ? 'n/a' : `${(value * 100).toFixed(1)}%`;
}

/** The converter's inputs as raw files in `work`: representative and test images, test labels, the trained model's probabilities. */
function writeConverterInputs(work: string, inputs: ExportInputs): Record<string, unknown> {
  const { evaluation, options } = inputs;
  fs.mkdirSync(work, { recursive: true });
  const representative = new Random(inputs.seed, 'representative')
    .permutation(inputs.train.length)
    .slice(0, options.representative_images);
  writeImages(path.join(work, 'representative.u8'), inputs.train, representative);
  writeImages(
    path.join(work, 'test.u8'),
    evaluation.split,
    Array.from({ length: evaluation.split.length }, (_, i) => i),
  );
  const bytesOf = (array: Int32Array | Float32Array) => Buffer.from(array.buffer, array.byteOffset, array.byteLength);
  fs.writeFileSync(path.join(work, 'test-labels.i32'), bytesOf(evaluation.split.labels));
  fs.writeFileSync(path.join(work, 'reference.f32'), bytesOf(evaluation.probabilities));
  return {
    representative_images: path.join(work, 'representative.u8'),
    representative_count: representative.length,
    test_images: path.join(work, 'test.u8'),
    test_labels: path.join(work, 'test-labels.i32'),
    test_count: evaluation.split.length,
    test_files: evaluation.split.samples.map((s) => s.file),
    reference_probabilities: path.join(work, 'reference.f32'),
  };
}

/**
 * The model card's record from the converter's report: verified, or failed with its problems.
 * The accuracy gate pairs the file's answers with the trained model's on the same images (gate.ts).
 */
function exportRecord(report: ExportReport, inputs: ExportInputs): TfliteRecord {
  const { options, evaluation } = inputs;
  const problems = [...report.problems];
  const gate = report.predictions
    ? judgeExport(evaluation.split.labels, evaluation.predictions, report.predictions, options.max_accuracy_drop)
    : undefined;
  if (gate && !gate.passed) problems.push(gateSentence(gate));
  const images = evaluation.split.length;
  return {
    status: problems.length === 0 ? 'verified' : 'failed',
    path: 'model.tflite',
    quantization: options.quantization,
    io_type: options.quantization === 'int8' ? options.io_type : report.input.dtype,
    bytes: report.bytes,
    input: report.input,
    output: report.output,
    labels_file: 'labels.txt',
    labels: inputs.classNames,
    labels_embedded: report.metadata?.labels !== undefined && report.metadata?.labels !== null,
    model_card: 'model-card.json',
    evaluated_on: evaluation.name,
    accuracy: report.accuracy,
    ...(report.accuracy !== undefined ? { accuracy_ci95: accuracyInterval(report.accuracy, images) } : {}),
    trained_model_accuracy: evaluation.accuracy,
    accuracy_drop: gate?.accuracy_drop,
    ...(gate ? { gate } : {}),
    ...(inputs.finalWeights ? { final_weights: inputs.finalWeights } : {}),
    agreement_with_trained_model: report.agreement_with_trained_model,
    max_abs_diff_vs_trained_model: report.max_abs_diff_vs_trained_model,
    median_latency_ms: report.median_latency_ms,
    params: report.params,
    macs_per_image: report.macs_per_image,
    ...(report.host_latency_ms
      ? { host_latency_ms: { threads_1: report.host_latency_ms['1'], threads_4: report.host_latency_ms['4'] } }
      : {}),
    peak_memory_bytes: report.peak_memory_bytes,
    accuracy_nearest_resize: report.accuracy_nearest_resize,
    ...(report.mediapipe ? { mediapipe: report.mediapipe } : {}),
    preprocessing: preprocessingNote(inputs.classifier.base),
    problems,
  };
}

/**
 * One TFLite export into `outputDir`: labels.txt, the converter's inputs, TensorFlow's converter and
 * interpreter in the Python worker, then the model card (JSON and Markdown) from its report.
 */
export async function exportTflite(inputs: ExportInputs): Promise<TfliteRecord> {
  const { outputDir, options, evaluation, log } = inputs;
  // A diverged model (NaN weights) would reach the converter and MediaPipe, which never return on it.
  if (!evaluation.probabilities.every(Number.isFinite))
    throw new UserError(
      `cannot export: the trained model's outputs on the ${evaluation.name} split are not finite (NaN): training diverged (metrics.jsonl shows its loss); lower the learning rate`,
    );
  writeFileAtomic(path.join(outputDir, 'labels.txt'), `${inputs.classNames.join('\n')}\n`);
  const work = path.join(outputDir, '.inputs');
  const files = writeConverterInputs(work, inputs);
  log.info(
    { mode: options.quantization },
    `converting to TFLite (${options.quantization}) with TensorFlow's TFLiteConverter`,
  );
  const request = {
    classifier: inputs.classifier,
    weights_dir: inputs.weightsDir,
    quantization: options.quantization,
    io_type: options.io_type,
    ...files,
    labels: inputs.classNames,
    metadata: inputs.metadata,
    max_image_pixels: inputs.maxImagePixels,
    output_dir: outputDir,
  };
  const report = await inputs.exporter.call<ExportReport>('export', request, {
    ...inputs.call,
    stallMs: exportStallMs(),
  });
  fs.rmSync(work, { recursive: true, force: true });
  log.debug({ seconds: report.seconds }, 'export steps');
  const record = exportRecord(report, inputs);
  writeJsonAtomic(path.join(outputDir, 'model-card.json'), {
    ...record,
    classifier: inputs.classifier,
    metadata: inputs.metadata,
  });
  writeFileAtomic(path.join(outputDir, 'model-card.md'), modelCardMarkdown(record, inputs.classifier, inputs.metadata));
  const mediapipe = report.mediapipe;
  const line = `TFLite ${options.quantization}: ${record.bytes} bytes, output [${record.output.shape.join(', ')}] ${record.output.dtype}, accuracy ${pct(record.accuracy)} (trained ${pct(evaluation.accuracy)})${mediapipe?.accuracy !== undefined ? `, MediaPipe ${pct(mediapipe.accuracy)}` : ''}, ${record.median_latency_ms?.toFixed(2)} ms/image`;
  if (record.status === 'verified') log.info({ tflite: record.path }, line);
  else log.error({ problems: record.problems }, `${line}: export FAILED: ${record.problems.join('; ')}`);
  return record;
}
