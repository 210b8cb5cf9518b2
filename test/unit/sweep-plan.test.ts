import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, test } from 'node:test';
import {
  assignmentFlags,
  expandGrid,
  expandRange,
  featureExtractionIdentity,
  parseGridFlag,
  planRecordOf,
  planSweep,
} from '../../src/sweep/plan.ts';
import { inParallel } from '../../src/sweep/schedule.ts';
import { tempDir, writeFiles } from '../helpers/tmp.ts';

/** Sweep planning without running anything: grids, flags, groups, ids, and the local scheduler. */

describe('grid expansion (pure)', () => {
  test('lists and ranges expand to the grid product, last key fastest', () => {
    assert.deepEqual(expandRange({ from: 40, to: 150, step: 20 }, 'k'), [40, 60, 80, 100, 120, 140]);
    assert.deepEqual(expandRange({ from: 0.1, to: 0.3, step: 0.1 }, 'k'), [0.1, 0.2, 0.3]);
    const trials = expandGrid({ a: [1, 2], b: ['x', 'y', 'z'] });
    assert.equal(trials.length, 6);
    assert.deepEqual(trials[1].assignments, { a: 1, b: 'y' });
    assert.equal(expandGrid({ a: [1, 2, 3] }, 2).length, 2);
    assert.throws(() => expandGrid({}), /nothing to sweep/);
  });

  test('--grid flags read values as YAML, and ranges as from:to:step', () => {
    assert.deepEqual(parseGridFlag('train.fine_tune.fine_tune_at=40,80,100,120'), [
      'train.fine_tune.fine_tune_at',
      [40, 80, 100, 120],
    ]);
    assert.deepEqual(parseGridFlag('train.fine_tune.fine_tune_at=40:100:20'), [
      'train.fine_tune.fine_tune_at',
      [40, 60, 80, 100],
    ]);
    assert.deepEqual(parseGridFlag('model.weights=none,npm:nsfwjs'), ['model.weights', ['none', 'npm:nsfwjs']]);
    assert.throws(() => parseGridFlag('nokey'), /expected key\.path=v1,v2/);
    assert.deepEqual(assignmentFlags({ 'dataset.image_size': [64, 64], name: 'x' }), [
      'dataset.image_size=[64,64]',
      'name=x',
    ]);
  });

  test('fine-tuning and export keys do not change the feature-extraction identity; others do', () => {
    const a = {
      seed: 1,
      train: { feature_extraction: { epochs: 2 }, fine_tune: { fine_tune_at: 100 } },
      export: { tflite: {} },
    };
    const b = { seed: 1, train: { feature_extraction: { epochs: 2 }, fine_tune: { fine_tune_at: 40 } }, export: {} };
    const c = { seed: 2, train: { feature_extraction: { epochs: 2 }, fine_tune: { fine_tune_at: 100 } } };
    assert.deepEqual(featureExtractionIdentity(a), featureExtractionIdentity(b));
    assert.notDeepEqual(featureExtractionIdentity(a), featureExtractionIdentity(c));
  });

  test('trials run in order, at most `parallel` at once, and none starts once stopped', async () => {
    let running = 0;
    let peak = 0;
    const done: number[] = [];
    await inParallel(
      [1, 2, 3, 4, 5],
      2,
      async (n) => {
        peak = Math.max(peak, ++running);
        await new Promise((r) => setTimeout(r, 20));
        running--;
        done.push(n * 10);
      },
      () => false,
    );
    assert.deepEqual(
      done.sort((a, b) => a - b),
      [10, 20, 30, 40, 50],
    );
    assert.equal(peak, 2);
    const started: number[] = [];
    await inParallel(
      [1, 2, 3],
      1,
      async (n) => void started.push(n),
      () => started.length >= 2,
    );
    assert.deepEqual(started, [1, 2]);
  });
});

const work = tempDir('tlx-unit-plan-');

function experimentFile(name: string, body: string): string {
  writeFiles(work, {
    [`${name}.yaml`]: `name: ${name}\nseed: 3\ndataset: { path: data, validation_split: 0.3, image_size: [32, 32], batch_size: 8 }\nmodel: { alpha: 0.35, weights: none }\n${body}`,
  });
  return path.join(work, `${name}.yaml`);
}

describe('planning a sweep from a file (every trial validated before any runs)', () => {
  test('trials that differ only after feature extraction share a group; a feature-extraction key splits groups', () => {
    const file = experimentFile(
      'groups',
      'sweep:\n  grid:\n    train.fine_tune.fine_tune_at: [100, 140]\n    train.feature_extraction.epochs: [1, 2]\n',
    );
    const planned = planSweep({ file, overrides: [], grid: {} });
    assert.equal(planned.jobs.length, 4);
    const groupOf = (fineTuneAt: number, epochs: number) =>
      planned.jobs.find(
        (j) =>
          j.plan.assignments['train.fine_tune.fine_tune_at'] === fineTuneAt &&
          j.plan.assignments['train.feature_extraction.epochs'] === epochs,
      )!.group;
    assert.equal(groupOf(100, 1), groupOf(140, 1));
    assert.equal(groupOf(100, 2), groupOf(140, 2));
    assert.notEqual(groupOf(100, 1), groupOf(100, 2));
    assert.equal(
      planned.jobs[1].experiment.config.train.feature_extraction.epochs,
      2,
      'each trial carries its own resolved config',
    );
    assert.equal(planned.base.config.sweep, undefined, 'the base experiment is stored without its sweep block');
  });

  test('the id depends on the experiment and the grid, not on formatting; --grid adds to the file', () => {
    const a = planSweep({
      file: experimentFile('ids', 'sweep:\n  grid:\n    seed: [1, 2]\n'),
      overrides: [],
      grid: {},
    });
    const b = planSweep({
      file: experimentFile('ids', 'sweep:   {grid: {seed: [1,   2]}}\n'),
      overrides: [],
      grid: {},
    });
    assert.equal(a.id, b.id);
    assert.match(a.id, /^ids-[0-9a-f]{10}$/);
    const wider = planSweep({
      file: experimentFile('ids', 'sweep:\n  grid:\n    seed: [1, 2]\n'),
      overrides: [],
      grid: { 'train.fine_tune.fine_tune_at': [100, 120] },
    });
    assert.equal(wider.jobs.length, 4);
    assert.notEqual(wider.id, a.id);
  });

  test('--set sweep keys with --grid on a file without a sweep block: the grid is merged before validation', () => {
    const file = experimentFile('nogrid', '');
    const planned = planSweep({
      file,
      overrides: ['sweep.export=best'],
      grid: { 'train.fine_tune.fine_tune_at': [80, 100, 120] },
    });
    assert.equal(planned.exportPolicy, 'best');
    assert.equal(planned.jobs.length, 3);
  });

  test('every invalid trial is named at once, and nothing is planned', () => {
    const file = experimentFile('invalid', 'sweep:\n  grid:\n    train.fine_tune.fine_tune_at: [100, 900, 1000]\n');
    assert.throws(
      () => planSweep({ file, overrides: [], grid: {} }),
      (error: Error) =>
        /2 of 3 trial\(s\) are invalid; nothing was run/.test(error.message) &&
        /trial 1 \(train\.fine_tune\.fine_tune_at=900\)/.test(error.message) &&
        /trial 2 /.test(error.message),
    );
  });

  test('--set applies to every trial; max_trials keeps the first trials', () => {
    const file = experimentFile('capped', 'sweep:\n  grid:\n    seed: [1, 2, 3, 4]\n');
    const planned = planSweep({ file, overrides: ['train.fine_tune.epochs=3'], grid: {}, maxTrials: 2 });
    assert.deepEqual(
      planned.jobs.map((j) => j.plan.assignments.seed),
      [1, 2],
    );
    assert.ok(planned.jobs.every((j) => j.experiment.config.train.fine_tune.epochs === 3));
  });

  test('the stored plan records each trial with its config digest and group', () => {
    const file = experimentFile(
      'stored',
      'sweep:\n  grid:\n    train.fine_tune.fine_tune_at: [100, 140]\n  metric: val_loss\n  goal: min\n  export: best\n',
    );
    const planned = planSweep({ file, overrides: [], grid: {} });
    const record = planRecordOf(planned, file);
    assert.deepEqual([record.metric, record.goal, record.export], ['val_loss', 'min', 'best']);
    assert.deepEqual(
      record.trials.map((t) => t.config_sha256),
      planned.jobs.map((j) => j.configSha256),
    );
    assert.equal(new Set(record.trials.map((t) => t.group)).size, 1);
  });
});
