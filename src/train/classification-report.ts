import type { TopLevelSpec } from 'vega-lite';
import type { EpochRecord } from './engine.ts';

/** Confusion matrix [true][predicted] and per-class precision/recall/F1 (pure). */
export interface ClassificationReport {
  confusion: number[][];
  perClass: { class: string; precision: number; recall: number; f1: number; support: number }[];
  accuracy: number;
}

export function classificationReport(
  classNames: string[],
  truth: ArrayLike<number>,
  predicted: ArrayLike<number>,
): ClassificationReport {
  const k = classNames.length;
  const confusion = Array.from({ length: k }, () => new Array<number>(k).fill(0));
  for (let i = 0; i < truth.length; i++) confusion[truth[i]][predicted[i]]++;
  let correct = 0;
  const perClass = classNames.map((name, c) => {
    const tp = confusion[c][c];
    correct += tp;
    const predictedC = confusion.reduce((sum, row) => sum + row[c], 0);
    const support = confusion[c].reduce((a, b) => a + b, 0);
    const precision = predictedC === 0 ? 0 : tp / predictedC;
    const recall = support === 0 ? 0 : tp / support;
    const f1 = precision + recall === 0 ? 0 : (2 * precision * recall) / (precision + recall);
    return { class: name, precision, recall, f1, support };
  });
  return { confusion, perClass, accuracy: truth.length === 0 ? 0 : correct / truth.length };
}

/** The tutorial's learning curves: accuracy and loss, train and validation, fine-tune start marked. */
export function learningCurvesSpec(records: EpochRecord[], fineTuneStartEpoch: number | undefined): TopLevelSpec {
  const rows = records.flatMap((r) => [
    { epoch: r.epoch, metric: 'Accuracy', split: 'training', value: r.accuracy },
    { epoch: r.epoch, metric: 'Accuracy', split: 'validation', value: r.val_accuracy },
    { epoch: r.epoch, metric: 'Loss (cross-entropy)', split: 'training', value: r.loss },
    { epoch: r.epoch, metric: 'Loss (cross-entropy)', split: 'validation', value: r.val_loss },
  ]);
  const line = {
    mark: { type: 'line', point: true },
    encoding: {
      x: { field: 'epoch', type: 'quantitative', title: 'epoch', axis: { tickMinStep: 1 } },
      y: { field: 'value', type: 'quantitative', title: null, scale: { zero: false } },
      color: { field: 'split', type: 'nominal', title: null },
    },
  };
  const marker = {
    data: {
      values: fineTuneStartEpoch === undefined ? [] : [{ epoch: fineTuneStartEpoch - 0.5, label: 'Start fine-tuning' }],
    },
    layer: [
      {
        mark: { type: 'rule', color: 'green', strokeDash: [4, 4] },
        encoding: { x: { field: 'epoch', type: 'quantitative' } },
      },
      {
        mark: { type: 'text', align: 'left', dx: 4, dy: -4, color: 'green' },
        encoding: { x: { field: 'epoch', type: 'quantitative' }, y: { value: 12 }, text: { field: 'label' } },
      },
    ],
  };
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: 'Training and validation',
    vconcat: ['Accuracy', 'Loss (cross-entropy)'].map((metric) => ({
      title: metric,
      width: 480,
      height: 200,
      layer: [{ data: { values: rows.filter((r) => r.metric === metric) }, ...line }, marker],
    })),
  } as unknown as TopLevelSpec;
}

export function confusionMatrixSpec(classNames: string[], report: ClassificationReport, title: string): TopLevelSpec {
  const cells = report.confusion.flatMap((row, t) =>
    row.map((count, p) => ({ truth: classNames[t], predicted: classNames[p], count })),
  );
  const size = Math.max(160, 48 * classNames.length);
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title,
    data: { values: cells },
    width: size,
    height: size,
    encoding: {
      x: { field: 'predicted', type: 'nominal', sort: classNames, title: 'predicted' },
      y: { field: 'truth', type: 'nominal', sort: classNames, title: 'true class' },
    },
    layer: [
      {
        mark: 'rect',
        encoding: { color: { field: 'count', type: 'quantitative', scale: { scheme: 'blues' }, legend: null } },
      },
      {
        mark: { type: 'text', fontSize: 13 },
        encoding: {
          text: { field: 'count', type: 'quantitative' },
          color: {
            condition: { test: `datum.count > ${Math.max(1, ...cells.map((c) => c.count)) / 2}`, value: 'white' },
            value: 'black',
          },
        },
      },
    ],
  } as unknown as TopLevelSpec;
}
