import fs from 'node:fs';
import path from 'node:path';
import type { Export } from '../config/resolved.ts';

type Tflite = NonNullable<Export['tflite']>;
import type { ImageSplit } from '../data/images.ts';
import type { Logger } from '../log.ts';
import { Random } from '../random.ts';
import { writeFileAtomic, writeJsonAtomic } from '../track/run-store.ts';
import { callPython } from './bridge.ts';

/**
 * Export to TFLite with TensorFlow's own converter (python/tlx_export.py), then prove the
 * file works by running it: output shape = number of labels, accuracy on the test split,
 * agreement with the trained model, latency. The app never has to guess a shape: the
 * output is always [1, labels], and labels.txt and the model card sit beside the file.
 */

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
  reference_accuracy?: number;
  agreement_with_trained_model?: number;
  max_abs_diff_vs_trained_model?: number;
  median_latency_ms?: number;
  accuracy_nearest_resize?: number;
  keras_vs_tlx_max_abs_diff: number;
  weights_assigned: number;
  checks: Record<string, boolean>;
  problems: string[];
}

export interface TfliteRecord {
  status: 'verified' | 'failed';
  path: string;
  quantization: string;
  io_type: string;
  bytes: number;
  input: TensorDescription;
  output: TensorDescription;
  labels_file: string;
  labels: string[];
  model_card: string;
  evaluated_on: string;
  accuracy?: number;
  trained_model_accuracy?: number;
  accuracy_drop?: number;
  agreement_with_trained_model?: number;
  max_abs_diff_vs_trained_model?: number;
  median_latency_ms?: number;
  accuracy_nearest_resize?: number;
  preprocessing: string;
  problems: string[];
}

export interface ClassifierDescription {
  base: string;
  alpha: number;
  imageSize: [number, number];
  classCount: number;
  head: string;
  units: number;
}

export interface ExportInputs {
  /** Where model.tflite, labels.txt and the model card go. */
  outputDir: string;
  /** tlx's named checkpoint of the trained weights. */
  weightsDir: string;
  classifier: ClassifierDescription;
  classNames: string[];
  train: ImageSplit;
  /** Split the file is measured on (test, or validation when there is no test split). */
  evaluation: { name: string; split: ImageSplit; probabilities: Float32Array; accuracy: number };
  options: Tflite;
  seed: number;
  log: Logger;
}

export const preprocessingNote =
  'Input: raw RGB pixels 0..255 at the training size, resized bilinearly (as in training). The model scales them to [-1, 1] (x / 127.5 - 1) inside; do not normalise in the app.';

function writeImages(file: string, split: ImageSplit, indices: number[]): void {
  const bytes = new Uint8Array(indices.length * split.bytesPerImage);
  indices.forEach((index, i) => bytes.set(split.imageBytes(index), i * split.bytesPerImage));
  fs.writeFileSync(file, bytes);
}

function pct(value?: number): string {
  return value === undefined ? 'n/a' : `${(value * 100).toFixed(1)}%`;
}

function cardMarkdown(record: TfliteRecord, classifier: ClassifierDescription): string {
  const q = (t: TensorDescription) => (t.dtype === 'float32' ? 'none (float32)' : `scale ${t.quantization.scale}, zero point ${t.quantization.zero_point}`);
  const outputArray = record.output.dtype === 'float32' ? 'FloatArray' : 'ByteArray';
  return `# Model card: ${path.basename(record.path)}

| | |
|---|---|
| status | ${record.status}${record.problems.length ? ` (${record.problems.join('; ')})` : ''} |
| base | ${classifier.base} alpha ${classifier.alpha}, ${classifier.imageSize[0]}x${classifier.imageSize[1]} |
| quantization | ${record.quantization}${record.quantization === 'int8' ? ` (input/output ${record.io_type})` : ''} |
| size | ${record.bytes} bytes |
| input | shape [${record.input.shape.join(', ')}], ${record.input.dtype}, quantization: ${q(record.input)} |
| pixel preprocessing | ${record.preprocessing} |
| output | shape [${record.output.shape.join(', ')}], ${record.output.dtype}, quantization: ${q(record.output)}: one probability per line of labels.txt |
| labels | ${record.labels.join(', ')} |
| accuracy (${record.evaluated_on} split, run through the .tflite) | ${pct(record.accuracy)} (trained model: ${pct(record.trained_model_accuracy)}) |
| accuracy with nearest-neighbour resize (Android createScaledBitmap filter=false) | ${pct(record.accuracy_nearest_resize)} |
| agreement with the trained model (top-1) | ${pct(record.agreement_with_trained_model)} |
| median latency per image (1 thread, this machine) | ${record.median_latency_ms?.toFixed(2) ?? 'n/a'} ms |

Size the output from labels.txt, never by hand:

\`\`\`kotlin
val labels = context.assets.open("labels.txt").bufferedReader().readLines().filter { it.isNotBlank() }
val output = Array(1) { ${outputArray}(labels.size) }   // [1, ${record.labels.length}]
interpreter.run(input, output)
\`\`\`
`;
}

export async function exportTflite(inputs: ExportInputs): Promise<TfliteRecord> {
  const { outputDir, options, evaluation, log } = inputs;
  fs.mkdirSync(outputDir, { recursive: true });
  const work = fs.mkdtempSync(path.join(outputDir, '.export-'));
  try {
    const labelsFile = path.join(outputDir, 'labels.txt');
    writeFileAtomic(labelsFile, `${inputs.classNames.join('\n')}\n`);
    const representative = new Random(inputs.seed, 'representative').permutation(inputs.train.length).slice(0, options.representative_images);
    writeImages(path.join(work, 'representative.u8'), inputs.train, representative);
    const evalIndices = Array.from({ length: evaluation.split.length }, (_, i) => i);
    writeImages(path.join(work, 'test.u8'), evaluation.split, evalIndices);
    fs.writeFileSync(path.join(work, 'test-labels.i32'), Buffer.from(evaluation.split.labels.buffer, evaluation.split.labels.byteOffset, evaluation.split.labels.byteLength));
    fs.writeFileSync(path.join(work, 'reference.f32'), Buffer.from(evaluation.probabilities.buffer, evaluation.probabilities.byteOffset, evaluation.probabilities.byteLength));
    const output = path.join(outputDir, 'model.tflite');
    log.info({ mode: options.quantization, output }, `converting to TFLite (${options.quantization}) with TensorFlow's TFLiteConverter`);
    const { report } = await callPython<ExportReport>({
      script: 'tlx_export.py',
      workDir: work,
      onStderr: (line) => log.debug({ python: line }),
      request: {
        classifier: inputs.classifier,
        weights_dir: inputs.weightsDir,
        quantization: options.quantization,
        io_type: options.io_type,
        representative_images: path.join(work, 'representative.u8'),
        representative_count: representative.length,
        test_images: path.join(work, 'test.u8'),
        test_labels: path.join(work, 'test-labels.i32'),
        test_count: evalIndices.length,
        test_files: evaluation.split.samples.map((s) => s.file),
        reference_probabilities: path.join(work, 'reference.f32'),
        labels_file: labelsFile,
        output,
      },
    });
    const problems = [...report.problems];
    const drop = report.accuracy !== undefined ? evaluation.accuracy - report.accuracy : undefined;
    if (drop !== undefined && drop > options.max_accuracy_drop) {
      problems.push(`accuracy drop ${(drop * 100).toFixed(1)} points > export.tflite.max_accuracy_drop ${(options.max_accuracy_drop * 100).toFixed(1)}`);
    }
    const record: TfliteRecord = {
      status: problems.length === 0 ? 'verified' : 'failed',
      path: path.relative(outputDir, output),
      quantization: options.quantization,
      io_type: options.quantization === 'int8' ? options.io_type : report.input.dtype,
      bytes: report.bytes,
      input: report.input,
      output: report.output,
      labels_file: 'labels.txt',
      labels: inputs.classNames,
      model_card: 'model-card.json',
      evaluated_on: evaluation.name,
      accuracy: report.accuracy,
      trained_model_accuracy: evaluation.accuracy,
      accuracy_drop: drop,
      agreement_with_trained_model: report.agreement_with_trained_model,
      max_abs_diff_vs_trained_model: report.max_abs_diff_vs_trained_model,
      median_latency_ms: report.median_latency_ms,
      accuracy_nearest_resize: report.accuracy_nearest_resize,
      preprocessing: preprocessingNote,
      problems,
    };
    writeJsonAtomic(path.join(outputDir, 'model-card.json'), { ...record, classifier: inputs.classifier });
    writeFileAtomic(path.join(outputDir, 'model-card.md'), cardMarkdown(record, inputs.classifier));
    const line = `TFLite ${options.quantization}: ${record.bytes} bytes, output [${record.output.shape.join(', ')}] ${record.output.dtype}, accuracy ${pct(record.accuracy)} (trained ${pct(evaluation.accuracy)}), ${record.median_latency_ms?.toFixed(2)} ms/image`;
    if (record.status === 'verified') log.info({ tflite: record.path }, line);
    else log.error({ problems }, `${line}: export FAILED: ${problems.join('; ')}`);
    return record;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}
