import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { imageExtensions } from '../data/scan.ts';
import { UserError } from '../errors.ts';
import { callPython } from '../export/bridge.ts';
import type { TensorDescription } from '../export/tflite.ts';
import type { Logger } from '../log.ts';
import { writeFileAtomic } from '../track/run-store.ts';

export interface PredictOptions {
  model: string;
  images: string[];
  topK: number;
  resize: 'bilinear' | 'nearest';
  out?: string;
  json: boolean;
  log: Logger;
}

interface PredictReport {
  input: TensorDescription;
  output: TensorDescription;
  results: { file: string; probabilities?: number[]; error?: string }[];
}

export interface Prediction {
  file: string;
  top: { label: string; probability: number }[];
  error?: string;
}

/** model.tflite and its labels.txt, from a file or a run folder. */
export function resolveModel(model: string): { tflite: string; labels: string[] } {
  const tflite = fs.existsSync(model) && fs.statSync(model).isDirectory() ? path.join(model, 'model.tflite') : model;
  if (!fs.existsSync(tflite)) throw new UserError(`predict: ${tflite}: file not found`);
  const labelsFile = path.join(path.dirname(tflite), 'labels.txt');
  if (!fs.existsSync(labelsFile)) throw new UserError(`predict: no labels.txt beside ${tflite}`);
  const labels = fs.readFileSync(labelsFile, 'utf8').split('\n').map((l) => l.trim()).filter(Boolean);
  return { tflite, labels };
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

export async function predictImages(model: string, images: string[], resize: 'bilinear' | 'nearest', topK: number, log: Logger): Promise<Prediction[]> {
  const { tflite, labels } = resolveModel(model);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'tlx-predict-'));
  try {
    const { report } = await callPython<PredictReport>({ script: 'tlx_predict.py', workDir: work, request: { model: path.resolve(tflite), images: images.map((f) => path.resolve(f)), resize }, onStderr: (line) => log.debug({ python: line }) });
    const outputCount = report.output.shape[report.output.shape.length - 1];
    if (outputCount !== labels.length) {
      throw new UserError(`predict: ${tflite} outputs ${outputCount} scores but labels.txt has ${labels.length} labels; the files do not belong together`);
    }
    return report.results.map((result, i) => ({
      file: images[i],
      error: result.error,
      top: (result.probabilities ?? [])
        .map((probability, index) => ({ label: labels[index], probability }))
        .sort((a, b) => b.probability - a.probability)
        .slice(0, topK),
    }));
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

function toCsv(predictions: Prediction[]): string {
  const quote = (v: string) => (/[",\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v);
  const k = Math.max(...predictions.map((p) => p.top.length));
  const header = ['file', ...Array.from({ length: k }, (_, i) => [`label_${i + 1}`, `probability_${i + 1}`]).flat(), 'error'];
  const rows = predictions.map((p) => [quote(p.file), ...Array.from({ length: k }, (_, i) => [quote(p.top[i]?.label ?? ''), p.top[i] ? p.top[i].probability.toFixed(6) : '']).flat(), quote(p.error ?? '')].join(','));
  return `${header.join(',')}\n${rows.join('\n')}\n`;
}

export async function predictCommand(options: PredictOptions): Promise<void> {
  const { files, folder } = expandImages(options.images);
  const predictions = await predictImages(options.model, files, options.resize, options.topK, options.log);
  if (options.out) {
    writeFileAtomic(options.out, options.out.endsWith('.json') ? `${JSON.stringify(predictions, null, 2)}\n` : toCsv(predictions));
    options.log.info({ file: options.out, images: predictions.length }, 'predictions written');
  }
  if (options.json || (folder && !options.out)) {
    if (folder && !options.json) process.stdout.write(toCsv(predictions));
    else process.stdout.write(`${JSON.stringify(predictions)}\n`);
    return;
  }
  for (const p of predictions) {
    process.stdout.write(p.error ? `${p.file}: error: ${p.error}\n` : `${p.file}: ${p.top.map((t) => `${t.label} ${(t.probability * 100).toFixed(1)}%`).join(', ')}\n`);
  }
}
