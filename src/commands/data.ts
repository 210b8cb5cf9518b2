import path from 'node:path';
import { loadExperiment } from '../config/load.ts';
import type { ResolvedExperiment } from '../config/resolved.ts';
import { writeFileAtomic } from '../core/files.ts';
import type { Logger } from '../core/log.ts';
import { prepareDataset, splitCounts, type PreparedDataset } from '../data/dataset.ts';
import { augmentationPreviewPng, sampleGridPng } from '../data/pictures.ts';
import { buildClassifier } from '../models/classifier.ts';
import { estimateTrainingMemory, judgeTrainingMemory, mebibytes, type TrainingMemory } from '../run/memory-check.ts';
import { newRunId } from '../run-folder/run-folder.ts';
import type { Terminal } from '../ui/terminal.ts';

export interface DataCommandOptions {
  file: string;
  overrides: string[];
  out?: string;
  cacheDir?: string;
  runsDir: string;
  json: boolean;
  log: Logger;
  terminal: Terminal;
}

/** What training this experiment would need, from its model's graph (random weights: the same shapes). */
function trainingMemoryOf(config: ResolvedExperiment, dataset: PreparedDataset): TrainingMemory {
  const classifier = buildClassifier({
    base: config.model.base,
    alpha: config.model.alpha,
    minimalistic: config.model.minimalistic,
    imageSize: config.dataset.image_size as [number, number],
    classCount: dataset.classNames.length,
    dropout: config.model.dropout,
    seed: config.seed,
  });
  try {
    return estimateTrainingMemory(config, classifier, dataset.splits);
  } finally {
    classifier.model.dispose();
  }
}

/** `tlx data`: everything `run` does with the data, the pictures, and the memory training would need. */
export async function dataCommand(options: DataCommandOptions): Promise<void> {
  const { config, baseDir } = loadExperiment(options.file, { overrides: options.overrides });
  const dataset = await prepareDataset(config, { baseDir, cacheDir: options.cacheDir, log: options.log });
  const out = path.resolve(options.out ?? path.join(options.runsDir, 'data', newRunId(config.name)));
  const pictures = { samples: path.join(out, 'samples.png'), augmentation: path.join(out, 'augmentation.png') };
  writeFileAtomic(pictures.samples, await sampleGridPng(dataset.splits.train, dataset.classNames, config.seed));
  const augmented = await augmentationPreviewPng(dataset.splits.train, config.augmentation, config.seed);
  writeFileAtomic(pictures.augmentation, augmented);
  const estimate = trainingMemoryOf(config, dataset);
  const { verdict, message } = judgeTrainingMemory(estimate);
  const memory = {
    estimated_peak_mb: mebibytes(estimate.highest?.peak ?? estimate.resident),
    limit_mb: mebibytes(estimate.limit.bytes),
    limit_source: estimate.limit.source,
    verdict,
    phases: estimate.phases.map((phase) => ({
      phase: phase.phase,
      batch: phase.batch,
      peak_mb: mebibytes(phase.peak),
      moment: phase.moment,
    })),
  };
  const result = {
    classes: dataset.classNames,
    counts: splitCounts(dataset),
    skipped: dataset.skipped,
    storage: dataset.storage,
    root: dataset.source.root,
    digest: dataset.digest,
    pictures,
    memory,
  };
  if (options.json) {
    options.terminal.print(JSON.stringify(result));
    return;
  }
  const lines = [
    `classes (${result.classes.length}): ${result.classes.join(', ')}`,
    `train ${result.counts.train}, validation ${result.counts.validation}, test ${result.counts.test} images (${dataset.storage})`,
    `skipped ${result.skipped.length} file(s)${
      result.skipped.length
        ? `: ${result.skipped
            .slice(0, 5)
            .map((s) => `${s.file} (${s.reason})`)
            .join('; ')}${result.skipped.length > 5 ? '; ...' : ''}`
        : ''
    }`,
    `pictures: ${pictures.samples}, ${pictures.augmentation}`,
    verdict === 'does not fit' ? `${message} (tlx run would refuse it)` : message,
  ];
  options.terminal.print(lines.join('\n'));
}
