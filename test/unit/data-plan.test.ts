import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { Dataset } from '../../src/config/resolved.ts';
import { Random } from '../../src/core/random.ts';
import { carveTestSplit, limitPerClass, planSplits, type Sample, type Scans } from '../../src/data/plan.ts';
import type { ClassFolderScan } from '../../src/data/scan.ts';

/** Which file goes to which split: pure, from folder scans and the config. */

function scan(classes: Record<string, number>): ClassFolderScan {
  const classNames = Object.keys(classes).sort();
  return {
    classNames,
    filesByClass: classNames.map((name) =>
      Array.from({ length: classes[name] }, (_, i) => `${name}/${String(i).padStart(4, '0')}.png`),
    ),
    skipped: [],
  };
}

const dataset = (extra: Partial<Dataset>): Dataset =>
  ({ image_size: [32, 32], batch_size: 8, test_fraction_of_validation: 0.2, on_bad_file: 'skip', ...extra }) as Dataset;
const files = (samples: Sample[]) => samples.map((s) => s.file);

describe('splits', () => {
  test("the tutorial's test split: 1000 validation images in batches of 32 give 6 test batches (192) and 808 validation", () => {
    const validation = Array.from({ length: 1000 }, (_, i) => ({ file: `v${i}`, label: i % 2 }));
    const carved = carveTestSplit(validation, 32, 0.2, new Random(1, 'test_split'));
    assert.equal(carved.test.length, 192);
    assert.equal(carved.validation.length, 808);
    assert.equal(
      new Set([...files(carved.test), ...files(carved.validation)]).size,
      1000,
      'every image in exactly one split',
    );
  });

  test('validation_split: a seeded, disjoint, complete split; the same seed gives the same files, another seed others', () => {
    const scans: Scans = { root: '/data', all: scan({ ants: 30, bees: 20 }) };
    const plan = planSplits(scans, dataset({ validation_split: 0.3 }), 7);
    const all = [...plan.splits.train, ...plan.splits.validation, ...plan.splits.test];
    assert.equal(all.length, 50);
    assert.equal(new Set(files(all)).size, 50);
    assert.equal(plan.splits.train.length, 35);
    assert.deepEqual(plan.classNames, ['ants', 'bees']);
    assert.ok(
      plan.splits.train.every((s) => s.file.startsWith(`/data/${plan.classNames[s.label]}/`)),
      'labels follow the class folders',
    );
    assert.deepEqual(
      files(planSplits(scans, dataset({ validation_split: 0.3 }), 7).splits.validation),
      files(plan.splits.validation),
    );
    assert.notDeepEqual(
      files(planSplits(scans, dataset({ validation_split: 0.3 }), 8).splits.validation),
      files(plan.splits.validation),
    );
  });

  test('train_dir and validation_dir are used as they are; different class folders are refused, naming both', () => {
    const scans: Scans = { root: '/data', train: scan({ a: 4, b: 4 }), validation: scan({ a: 2, b: 2 }) };
    const plan = planSplits(
      scans,
      dataset({ train_dir: 'train', validation_dir: 'validation', test_fraction_of_validation: 0 }),
      1,
    );
    assert.equal(plan.splits.train.length, 8);
    assert.ok(plan.splits.validation.every((s) => s.file.startsWith('/data/validation/')));
    const mismatched: Scans = { root: '/data', train: scan({ a: 4, b: 4 }), validation: scan({ a: 2, c: 2 }) };
    assert.throws(
      () => planSplits(mismatched, dataset({ train_dir: 'train', validation_dir: 'validation' }), 1),
      /different class folders: \[a, b\] vs \[a, c\]/,
    );
  });

  test('max_images_per_class keeps at most n of each class, a seeded choice in the original order', () => {
    const samples = Array.from({ length: 20 }, (_, i) => ({ file: String(i).padStart(2, '0'), label: i % 2 }));
    const kept = limitPerClass(samples, 3, new Random(5, 'limit'));
    assert.equal(kept.filter((s) => s.label === 0).length, 3);
    assert.equal(kept.filter((s) => s.label === 1).length, 3);
    assert.deepEqual(files(kept), [...files(kept)].sort(), 'original order kept');
    assert.equal(limitPerClass(samples, undefined, new Random(5)), samples);
  });

  test('an empty split is a clear error', () => {
    const tiny: Scans = { root: '/data', all: scan({ a: 1, b: 1 }) };
    assert.throws(() => planSplits(tiny, dataset({ validation_split: 0.1 }), 1), /the validation split is empty/);
  });
});
