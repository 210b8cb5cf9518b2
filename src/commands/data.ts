import path from 'node:path';
import { loadExperiment } from '../config/load.ts';
import type { Logger } from '../core/log.ts';
import { prepareDataset, splitCounts } from '../data/dataset.ts';
import { writeAugmentationPreview, writeSampleGrid } from '../data/pictures.ts';
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

/** `tlx data`: everything `run` does with the data, and the pictures, without a model. */
export async function dataCommand(options: DataCommandOptions): Promise<void> {
  const { config, baseDir } = loadExperiment(options.file, { overrides: options.overrides });
  const dataset = await prepareDataset(config, { baseDir, cacheDir: options.cacheDir, log: options.log });
  const out = path.resolve(options.out ?? path.join(options.runsDir, 'data', newRunId(config.name)));
  const pictures = { samples: path.join(out, 'samples.png'), augmentation: path.join(out, 'augmentation.png') };
  await writeSampleGrid(dataset.splits.train, dataset.classNames, config.seed, pictures.samples);
  await writeAugmentationPreview(dataset.splits.train, config.augmentation, config.seed, pictures.augmentation);
  const result = { classes: dataset.classNames, counts: splitCounts(dataset), skipped: dataset.skipped, storage: dataset.storage, root: dataset.source.root, digest: dataset.digest, pictures };
  if (options.json) {
    options.terminal.print(JSON.stringify(result));
    return;
  }
  const lines = [
    `classes (${result.classes.length}): ${result.classes.join(', ')}`,
    `train ${result.counts.train}, validation ${result.counts.validation}, test ${result.counts.test} images (${dataset.storage})`,
    `skipped ${result.skipped.length} file(s)${result.skipped.length ? `: ${result.skipped.slice(0, 5).map((s) => `${s.file} (${s.reason})`).join('; ')}${result.skipped.length > 5 ? '; ...' : ''}` : ''}`,
    `pictures: ${pictures.samples}, ${pictures.augmentation}`,
  ];
  options.terminal.print(lines.join('\n'));
}
