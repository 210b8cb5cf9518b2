import { preprocessingInside, type BaseModelName } from '../config/bases.ts';
import type { TfliteRecord } from '../run-folder/records.ts';
import type { ClassifierDescription, TensorDescription } from './tflite.ts';

/** The model card (markdown) of an export: what the file takes and gives, how well it did, how an app uses it. */

/** Which preprocessing the model carries inside, per base. */
export function preprocessingNote(base: BaseModelName): string {
  return `Input: raw RGB pixels 0..255 at the training size, resized bilinearly (as in training). The model ${preprocessingInside(base)}; do not normalise in the app.`;
}

/** Markdown-escapes text from users (class names, license): no table breaks, no markup. */
export function escapeMarkdown(text: string): string {
  return text.replace(/[\\`*_{}[\]()#+\-.!|<>~]/g, (c) => `\\${c}`).replace(/[\r\n]+/g, ' ');
}

function pct(value?: number): string {
  return value === undefined ? 'n/a' : `${(value * 100).toFixed(1)}%`;
}

function pctInterval(
  value: number | undefined,
  interval: [number, number] | undefined,
  images: number | undefined,
): string {
  if (!interval) return pct(value);
  return `${pct(value)} (95% CI ${pct(interval[0])}-${pct(interval[1])}${images !== undefined ? ` on ${images} images` : ''})`;
}

/** What the gate measured and how small a drop it can see on this many images. */
function gateRow(record: TfliteRecord): string {
  const gate = record.gate;
  if (!gate) return '';
  const limit = `at most ${(gate.max_accuracy_drop * 100).toFixed(1)} points lost, unless chance explains it (exact McNemar, p >= ${gate.alpha})`;
  const power = `on ${gate.images} images it notices only a drop of ${(gate.smallest_detectable_drop * 100).toFixed(1)} points or more`;
  return `| export gate | ${gate.passed ? 'passed' : 'failed'}: ${gate.lost} images lost and ${gate.gained} gained against the trained model (drop ${(gate.accuracy_drop * 100).toFixed(1)} points, p = ${gate.p_value.toFixed(3)}); allowed ${limit}; ${power} |\n`;
}

/** What the phone pays: size is above; parameters, MACs (which carry across devices) and host latency (a proxy). */
function phoneCostRows(record: TfliteRecord): string {
  const rows: string[] = [];
  if (record.params !== undefined) rows.push(`| parameters | ${record.params.toLocaleString('en-US')} |`);
  if (record.macs_per_image !== undefined)
    rows.push(
      `| multiply-accumulates per image | ${(record.macs_per_image / 1e6).toFixed(1)} M (convolutions and dense layers; these carry across devices) |`,
    );
  const host = record.host_latency_ms;
  rows.push(
    host
      ? `| host latency per image (LiteRT + XNNPACK on the exporting machine: a proxy for a phone, not a phone) | ${host.threads_1.toFixed(2)} ms on 1 thread, ${host.threads_4.toFixed(2)} ms on 4 |`
      : `| median latency per image (1 thread, this machine) | ${record.median_latency_ms?.toFixed(2) ?? 'n/a'} ms |`,
  );
  if (record.peak_memory_bytes !== undefined)
    rows.push(
      `| peak memory to classify an image | ${(record.peak_memory_bytes / 1024 ** 2).toFixed(1)} MiB (resident memory LiteRT + XNNPACK adds to load this file and classify one image, on the exporting machine: the file's pages, packed weights, tensor arena, code) |`,
    );
  return rows.join('\n');
}

function weightsRow(record: TfliteRecord): string {
  const chosen = record.final_weights;
  if (!chosen) return '';
  return `| weights | epoch ${chosen.epoch} of ${chosen.last_epoch}${chosen.selected_by === 'best_val_accuracy' ? ' (best validation accuracy, train.restore_best_weights)' : ' (the last epoch)'} |\n`;
}

function quantization(t: TensorDescription): string {
  return t.dtype === 'float32'
    ? 'none (float32)'
    : `scale ${t.quantization.scale}, zero point ${t.quantization.zero_point}`;
}

export function modelCardMarkdown(
  record: TfliteRecord,
  classifier: ClassifierDescription,
  metadata: { name: string; version: string; author?: string; license?: string },
): string {
  const outputArray = record.output.dtype === 'float32' ? 'FloatArray' : 'ByteArray';
  const mediapipe = record.mediapipe as
    { accuracy?: number; agreement_with_tflite?: number; skipped?: string } | undefined;
  const int8Io = record.quantization === 'int8' && record.io_type === 'int8';
  const labels = record.labels.map(escapeMarkdown).join(', ');
  return `# Model card: ${escapeMarkdown(metadata.name)}

| | |
|---|---|
| status | ${record.status}${record.problems.length ? ` (${escapeMarkdown(record.problems.join('; '))})` : ''} |
| version | ${escapeMarkdown(metadata.version)} |
${metadata.author ? `| author | ${escapeMarkdown(metadata.author)} |\n` : ''}${metadata.license ? `| license | ${escapeMarkdown(metadata.license)} |\n` : ''}| base | ${classifier.base} alpha ${classifier.alpha}, ${classifier.imageSize[0]}x${classifier.imageSize[1]} |
| quantization | ${record.quantization}${record.quantization === 'int8' ? ` (input/output ${record.io_type})` : ''} |
| size | ${record.bytes} bytes |
| input | shape [${record.input.shape.join(', ')}], ${record.input.dtype}, quantization: ${quantization(record.input)} |
| pixel preprocessing | ${record.preprocessing} |
| output | shape [${record.output.shape.join(', ')}], ${record.output.dtype}, quantization: ${quantization(record.output)}: one probability per category |
| labels | ${labels} (embedded in the model as TFLite metadata, and in labels.txt) |
${weightsRow(record)}| accuracy (${record.evaluated_on} split, run through the .tflite) | ${pctInterval(record.accuracy, record.accuracy_ci95, record.gate?.images)} (trained model: ${pct(record.trained_model_accuracy)}) |
${gateRow(record)}| accuracy in MediaPipe Tasks' ImageClassifier | ${mediapipe?.skipped ? escapeMarkdown(mediapipe.skipped) : `${pct(mediapipe?.accuracy)} (top-1 agrees with the .tflite on ${pct(mediapipe?.agreement_with_tflite)})`} |
| accuracy with nearest-neighbour resize (Android createScaledBitmap filter=false) | ${pct(record.accuracy_nearest_resize)} |
| agreement with the trained model (top-1) | ${pct(record.agreement_with_trained_model)} |
${phoneCostRows(record)}

${
  int8Io
    ? `This file has int8 input and output: MediaPipe Tasks and the TFLite Task Library read only uint8 or float32, so use the raw interpreter below (or export with io_type: uint8, the default).`
    : `## Android: MediaPipe Tasks reads the labels and the output size from the model

\`\`\`kotlin
val classifier = ImageClassifier.createFromOptions(context,
    ImageClassifier.ImageClassifierOptions.builder()
        .setBaseOptions(BaseOptions.builder().setModelAssetPath("model.tflite").build())
        .setMaxResults(3)
        .build())
val result = classifier.classify(BitmapImageBuilder(bitmap).build())
val top = result.classificationResult().classifications()[0].categories()[0]
Log.i("tlx", "\${top.categoryName()} \${top.score()}")   // no labels array, no output size
\`\`\``
}

## Fallback: the raw TFLite interpreter (size the output from labels.txt, never by hand)

\`\`\`kotlin
val labels = context.assets.open("labels.txt").bufferedReader().readLines().filter { it.isNotBlank() }
val output = Array(1) { ${outputArray}(labels.size) }   // [1, ${record.labels.length}]
interpreter.run(input, output)
\`\`\`
`;
}
