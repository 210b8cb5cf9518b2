import path from 'node:path';
import type { Dataset as DatasetConfig } from '../config/resolved.ts';
import { UserError } from '../core/errors.ts';
import { Random } from '../core/random.ts';
import type { ClassFolderScan, SkippedFile } from './scan.ts';

export interface Sample {
  /** Absolute path of the image file. */
  file: string;
  label: number;
}

export type SplitName = 'train' | 'validation' | 'test';

export interface DataPlan {
  classNames: string[];
  splits: Record<SplitName, Sample[]>;
  skipped: SkippedFile[];
}

function samplesOf(scan: ClassFolderScan, root: string): Sample[] {
  return scan.filesByClass.flatMap((files, label) => files.map((file) => ({ file: path.join(root, file), label })));
}

/** At most `limit` samples per class, a seeded choice, original order kept. */
export function limitPerClass(samples: Sample[], limit: number | undefined, random: Random): Sample[] {
  if (limit === undefined) return samples;
  const keep = new Set<Sample>();
  const byLabel = new Map<number, Sample[]>();
  for (const sample of samples) byLabel.set(sample.label, [...(byLabel.get(sample.label) ?? []), sample]);
  for (const group of byLabel.values()) for (const sample of random.shuffle(group).slice(0, limit)) keep.add(sample);
  return samples.filter((sample) => keep.has(sample));
}

/**
 * The tutorial's test split: validation is shuffled once (with the seed), batched, and the
 * first floor(batches x fraction) batches become the test split (1000 images, batch 32:
 * 32 batches, 6 for test = 192 images, 808 left for validation).
 */
export function carveTestSplit(
  validation: Sample[],
  batchSize: number,
  fraction: number,
  random: Random,
): { validation: Sample[]; test: Sample[] } {
  const shuffled = random.shuffle(validation);
  const batches = Math.ceil(shuffled.length / batchSize);
  const testCount = Math.min(shuffled.length, Math.floor(batches * fraction) * batchSize);
  return { test: shuffled.slice(0, testCount), validation: shuffled.slice(testCount) };
}

export interface Scans {
  root: string;
  /** With train_dir/validation_dir: one scan each. With validation_split: `all`. */
  train?: ClassFolderScan;
  validation?: ClassFolderScan;
  all?: ClassFolderScan;
}

/** Pure planning: which file goes to which split, given the scans and the config. */
export function planSplits(scans: Scans, config: DatasetConfig, seed: number): DataPlan {
  let classNames: string[];
  let train: Sample[];
  let validation: Sample[];
  let skipped: SkippedFile[];
  if (scans.train && scans.validation && config.train_dir && config.validation_dir) {
    const trainRoot = path.join(scans.root, config.train_dir);
    const validationRoot = path.join(scans.root, config.validation_dir);
    if (scans.train.classNames.join('\n') !== scans.validation.classNames.join('\n')) {
      throw new UserError(
        `dataset: train_dir and validation_dir have different class folders: [${scans.train.classNames.join(', ')}] vs [${scans.validation.classNames.join(', ')}]`,
      );
    }
    classNames = scans.train.classNames;
    train = samplesOf(scans.train, trainRoot);
    validation = samplesOf(scans.validation, validationRoot);
    skipped = [
      ...scans.train.skipped.map((s) => ({ ...s, file: path.join(config.train_dir ?? '', s.file) })),
      ...scans.validation.skipped.map((s) => ({ ...s, file: path.join(config.validation_dir ?? '', s.file) })),
    ];
  } else if (scans.all && config.validation_split !== undefined) {
    classNames = scans.all.classNames;
    const all = new Random(seed, 'validation_split').shuffle(samplesOf(scans.all, scans.root));
    const validationCount = Math.floor(config.validation_split * all.length);
    train = all.slice(0, all.length - validationCount);
    validation = all.slice(all.length - validationCount);
    skipped = scans.all.skipped;
  } else {
    throw new Error('planSplits: scans do not match the dataset layout');
  }
  train = limitPerClass(train, config.max_images_per_class, new Random(seed, 'limit', 'train'));
  validation = limitPerClass(validation, config.max_images_per_class, new Random(seed, 'limit', 'validation'));
  if (train.length === 0) throw new UserError('dataset: the training split is empty');
  if (validation.length === 0)
    throw new UserError('dataset: the validation split is empty (raise validation_split or add validation images)');
  const carved = carveTestSplit(
    validation,
    config.batch_size,
    config.test_fraction_of_validation,
    new Random(seed, 'test_split'),
  );
  return { classNames, splits: { train, validation: carved.validation, test: carved.test }, skipped };
}
