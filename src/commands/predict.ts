import fs from 'node:fs';
import path from 'node:path';
import { csvTable } from '../core/csv.ts';
import { UserError } from '../core/errors.ts';
import { writeFileAtomic } from '../core/files.ts';
import type { Logger } from '../core/log.ts';
import { imageExtensions } from '../data/scan.ts';
import { callPythonOnce } from '../export/python.ts';
import type { TensorDescription } from '../export/tflite.ts';
import type { Terminal } from '../ui/terminal.ts';

export interface PredictOptions {
  model: string;
  images: string[];
  topK: number;
  resize: 'bilinear' | 'nearest';
  out?: string;
  json: boolean;
  log: Logger;
  terminal: Terminal;
}

interface PredictReport {
  input: TensorDescription;
  output: TensorDescription;
  embedded_labels: string[] | null;
  results: { file: string; probabilities?: number[]; error?: string }[];
}

interface Prediction {
  file: string;
  top: { label: string; probability: number }[];
  error?: string;
}

/** model.tflite from a file or a run folder, and labels.txt beside it when there is one. */
function resolveModel(model: string): { tflite: string; labelsFile?: string } {
  const tflite = fs.existsSync(model) && fs.statSync(model).isDirectory() ? path.join(model, 'model.tflite') : model;
  if (!fs.existsSync(tflite)) throw new UserError(`predict: ${tflite}: file not found`);
  const labelsFile = path.join(path.dirname(tflite), 'labels.txt');
  return { tflite, labelsFile: fs.existsSync(labelsFile) ? labelsFile : undefined };
}

function readLabels(file: string): string[] {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .map((line) => line.replace(/\r$/, ''))
    .filter((line) => line.length > 0);
}

/**
 * The labels to name the outputs with: the ones embedded in the model's metadata, checked
 * against labels.txt when both exist; labels.txt alone for a model without metadata.
 */
function labelsFor(tflite: string, labelsFile: string | undefined, report: PredictReport): string[] {
  const outputCount = report.output.shape[report.output.shape.length - 1];
  const sidecar = labelsFile ? readLabels(labelsFile) : undefined;
  const embedded = report.embedded_labels ?? undefined;
  if (sidecar && sidecar.length !== outputCount) {
    throw new UserError(
      `predict: ${tflite} outputs ${outputCount} scores but labels.txt has ${sidecar.length} labels; the files do not belong together`,
    );
  }
  if (embedded && sidecar && embedded.join('\n') !== sidecar.join('\n')) {
    throw new UserError(
      `predict: ${labelsFile} (${sidecar.length} labels: ${sidecar.slice(0, 5).join(', ')}) does not match the labels embedded in ${tflite} (${embedded.length}: ${embedded.slice(0, 5).join(', ')}); the files do not belong together`,
    );
  }
  const labels = embedded ?? sidecar;
  if (!labels)
    throw new UserError(
      `predict: ${tflite} has no embedded labels (TFLite metadata) and there is no labels.txt beside it`,
    );
  if (outputCount !== labels.length) {
    throw new UserError(
      `predict: ${tflite} outputs ${outputCount} scores but ${embedded ? 'its embedded labels have' : 'labels.txt has'} ${labels.length} labels; the files do not belong together`,
    );
  }
  return labels;
}

function expandImages(inputs: string[]): { files: string[]; folder: boolean } {
  const files: string[] = [];
  let folder = false;
  for (const input of inputs) {
    if (!fs.existsSync(input)) throw new UserError(`predict: ${input}: not found`);
    if (fs.statSync(input).isDirectory()) {
      folder = true;
      const walk = (dir: string) => {
        for (const entry of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
          const full = path.join(dir, entry.name);
          if (entry.isDirectory()) walk(full);
          else if (imageExtensions.includes(path.extname(entry.name).toLowerCase())) files.push(full);
        }
      };
      walk(input);
    } else files.push(input);
  }
  if (files.length === 0) throw new UserError('predict: no image files found');
  return { files, folder };
}

async function predictImages(
  model: string,
  images: string[],
  resize: 'bilinear' | 'nearest',
  topK: number,
  log: Logger,
): Promise<Prediction[]> {
  const { tflite, labelsFile } = resolveModel(model);
  const report = await callPythonOnce<PredictReport>(
    'predict',
    { model: path.resolve(tflite), images: images.map((f) => path.resolve(f)), resize },
    { onStderr: (line) => log.debug({ python: line }) },
  );
  const labels = labelsFor(tflite, labelsFile, report);
  return report.results.map((result, i) => ({
    file: images[i],
    error: result.error,
    top: (result.probabilities ?? [])
      .map((probability, index) => ({ label: labels[index], probability }))
      .sort((a, b) => b.probability - a.probability)
      .slice(0, topK),
  }));
}

function toCsv(predictions: Prediction[]): string {
  const k = Math.max(...predictions.map((p) => p.top.length));
  const header = [
    'file',
    ...Array.from({ length: k }, (_, i) => [`label_${i + 1}`, `probability_${i + 1}`]).flat(),
    'error',
  ];
  const rows = predictions.map((p) => [
    p.file,
    ...Array.from({ length: k }, (_, i) => [
      p.top[i]?.label ?? '',
      p.top[i] ? p.top[i].probability.toFixed(6) : '',
    ]).flat(),
    p.error ?? '',
  ]);
  return csvTable(header, rows);
}

export async function predictCommand(options: PredictOptions): Promise<void> {
  const { files, folder } = expandImages(options.images);
  const predictions = await predictImages(options.model, files, options.resize, options.topK, options.log);
  if (options.out) {
    writeFileAtomic(
      options.out,
      options.out.endsWith('.json') ? `${JSON.stringify(predictions, null, 2)}\n` : toCsv(predictions),
    );
    options.log.info({ file: options.out, images: predictions.length }, 'predictions written');
  }
  if (options.json) {
    options.terminal.print(JSON.stringify(predictions));
    return;
  }
  if (folder && !options.out) {
    options.terminal.print(toCsv(predictions));
    return;
  }
  for (const p of predictions) {
    options.terminal.print(
      p.error
        ? `${p.file}: error: ${p.error}`
        : `${p.file}: ${p.top.map((t) => `${t.label} ${(t.probability * 100).toFixed(1)}%`).join(', ')}`,
    );
  }
}
