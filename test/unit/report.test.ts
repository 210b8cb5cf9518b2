import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { csvCell } from '../../src/core/csv.ts';
import { bestTrial, resultsCsv, resultsTable, sweepPlotSpec, type TrialRow } from '../../src/sweep/report.ts';
import { classificationReport } from '../../src/train/classification-report.ts';

/** What a sweep and a run report, from numbers alone: the best trial, the table, CSV, the plot, per-class scores. */

const rows: TrialRow[] = [
  {
    trial: 0,
    assignments: { 'train.fine_tune.fine_tune_at': 100 },
    status: 'finished',
    val_accuracy: 0.7,
    val_loss: 0.5,
    run_id: 'r0',
  },
  { trial: 1, assignments: { 'train.fine_tune.fine_tune_at': 120 }, status: 'failed', error: 'boom, "quoted"' },
  {
    trial: 2,
    assignments: { 'train.fine_tune.fine_tune_at': 140 },
    status: 'finished',
    val_accuracy: 0.8,
    val_loss: 0.6,
    run_id: 'r2',
  },
  {
    trial: 3,
    assignments: { 'train.fine_tune.fine_tune_at': 150 },
    status: 'finished',
    val_accuracy: Number.NaN,
    val_loss: Number.NaN,
  },
];

describe('the sweep report', () => {
  test('the best trial follows metric and goal; CSV has one row per trial', () => {
    assert.equal(bestTrial(rows, 'val_accuracy', 'max')?.trial, 2);
    assert.equal(bestTrial(rows, 'val_loss', 'min')?.trial, 0);
    assert.equal(resultsCsv(rows).trim().split('\n').length, 5);
  });

  test('a trial without the metric (failed, or NaN) is never the best; no trial with it gives none', () => {
    assert.equal(bestTrial(rows, 'val_accuracy', 'max')?.trial, 2);
    assert.equal(bestTrial([rows[1], rows[3]], 'val_accuracy', 'max'), undefined);
    assert.equal(bestTrial(rows, 'test_accuracy', 'max'), undefined);
  });

  test('CSV: the swept key as a column, an error with a comma and quotes quoted, a diverged NaN said as NaN', () => {
    const [header, , failed, , nan] = resultsCsv(rows).split('\n');
    assert.match(header, /^trial,train\.fine_tune\.fine_tune_at,status,/);
    assert.ok(failed.endsWith(',"boom, ""quoted"""'), failed);
    assert.match(nan, /^3,150,finished,,NaN,/);
    assert.equal(csvCell('=HYPERLINK("x")'), `"'=HYPERLINK(""x"")"`, 'a cell a spreadsheet would run is defused');
    assert.equal(csvCell('-0.5'), '-0.5', 'a negative number stays a number');
  });

  test('the table marks the best trial with * and aligns its columns', () => {
    const lines = resultsTable(rows, rows[2]).split('\n');
    assert.equal(lines.length, 5);
    assert.ok(lines[3].startsWith('* 2 '), lines[3]);
    assert.ok(lines.filter((l) => l.startsWith('*')).length === 1);
    const statusColumn = lines[0].indexOf('status');
    for (const line of lines.slice(1)) assert.match(line.slice(statusColumn), /^(finished|failed)/);
  });

  test('the plot: the metric against one swept number; a heatmap for two swept keys', () => {
    const one = sweepPlotSpec(rows, 'val_accuracy') as unknown as {
      mark: { type: string };
      encoding: { x: { field: string; type: string } };
      data: { values: unknown[] };
    };
    assert.equal(one.mark.type, 'line');
    assert.deepEqual(one.encoding.x, {
      field: 'train.fine_tune.fine_tune_at',
      type: 'quantitative',
      scale: { zero: false },
    });
    assert.equal(one.data.values.length, 2, 'only trials with the metric are drawn');
    const two = sweepPlotSpec(
      [{ trial: 0, assignments: { a: 1, b: 'x' }, status: 'finished', val_accuracy: 0.5 }],
      'val_accuracy',
    ) as unknown as { layer: { mark: string | { type: string } }[] };
    assert.equal(two.layer[0].mark, 'rect');
  });
});

describe('per-class precision, recall and F1', () => {
  test('hand-computed: 3 classes, 8 images', () => {
    // truth:     a a a b b c c c     predicted: a a b b c c c a
    const report = classificationReport(['a', 'b', 'c'], [0, 0, 0, 1, 1, 2, 2, 2], [0, 0, 1, 1, 2, 2, 2, 0]);
    assert.deepEqual(report.confusion, [
      [2, 1, 0],
      [0, 1, 1],
      [1, 0, 2],
    ]);
    assert.equal(report.accuracy, 5 / 8);
    const [a, b, c] = report.perClass;
    assert.deepEqual([a.precision, a.recall, a.support], [2 / 3, 2 / 3, 3]);
    assert.deepEqual([b.precision, b.recall], [1 / 2, 1 / 2]);
    assert.ok(Math.abs(c.f1 - (2 * (2 / 3) * (2 / 3)) / (4 / 3)) < 1e-12);
  });

  test('a class never predicted has precision 0, not NaN; no images gives accuracy 0', () => {
    const report = classificationReport(['a', 'b'], [0, 1], [0, 0]);
    assert.equal(report.perClass[1].precision, 0);
    assert.equal(report.perClass[1].f1, 0);
    assert.equal(classificationReport(['a'], [], []).accuracy, 0);
  });
});
