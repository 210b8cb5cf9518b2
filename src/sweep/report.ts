import type { TopLevelSpec } from 'vega-lite';
import { csvTable } from '../core/csv.ts';
import type { ParetoRow } from './budget.ts';
import type { GridValue } from './plan.ts';

/** A sweep's answer: one row per trial, the best one, a table, CSV and a plot (pure). */

export interface TrialRow {
  trial: number;
  assignments: Record<string, GridValue>;
  status: string;
  run_id?: string;
  run_dir?: string;
  best_val_accuracy?: number;
  val_accuracy?: number;
  val_loss?: number;
  test_accuracy?: number;
  test_loss?: number;
  tflite_quantization?: string;
  tflite_accuracy?: number;
  tflite_bytes?: number;
  /** What the .tflite costs (its own export's, or a trial's of the same architecture: footprint_trial). */
  params?: number;
  macs_per_image?: number;
  host_latency_ms_1?: number;
  host_latency_ms_4?: number;
  peak_memory_bytes?: number;
  /** The trial whose export measured this trial's costs (trials that differ only in training share it). */
  footprint_trial?: number;
  /** Against sweep.constraints: within, over (and why), or unmeasured. */
  budget?: 'within' | 'over' | 'unmeasured';
  over_budget?: string[];
  minutes?: number;
  shared_feature_extraction?: boolean;
  /** This trial's model was exported (all trials, or only the best with sweep.export: best). */
  exported?: boolean;
  error?: string;
}

export type SweepMetric = 'val_accuracy' | 'val_loss' | 'test_accuracy' | 'test_loss' | 'tflite_accuracy';

function metricOf(row: TrialRow, metric: SweepMetric): number | undefined {
  const value = row[metric];
  return typeof value === 'number' && Number.isFinite(value) ? value : undefined;
}

/** The best row by the metric; with `budget: 'within'`, the best of the rows within the sweep's budget. */
export function bestTrial(
  rows: TrialRow[],
  metric: SweepMetric,
  goal: 'max' | 'min',
  budget?: 'within',
): TrialRow | undefined {
  let best: TrialRow | undefined;
  for (const row of rows) {
    if (budget && row.budget !== budget) continue;
    const value = metricOf(row, metric);
    if (value === undefined) continue;
    const current = best ? metricOf(best, metric)! : undefined;
    if (current === undefined || (goal === 'max' ? value > current : value < current)) best = row;
  }
  return best;
}

function format(value: unknown, digits = 4): string {
  if (value === undefined || value === null) return '';
  if (typeof value === 'number') return Number.isInteger(value) ? String(value) : value.toFixed(digits);
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** What the phone pays, and the budget, when any trial was measured or judged. */
const phoneColumns: { header: string; value: (row: TrialRow) => string }[] = [
  { header: 'MACs_M', value: (r) => (r.macs_per_image === undefined ? '' : (r.macs_per_image / 1e6).toFixed(1)) },
  { header: 'host_ms_1', value: (r) => format(r.host_latency_ms_1, 2) },
  { header: 'host_ms_4', value: (r) => format(r.host_latency_ms_4, 2) },
  {
    header: 'peak_MiB',
    value: (r) => (r.peak_memory_bytes === undefined ? '' : (r.peak_memory_bytes / 1024 ** 2).toFixed(1)),
  },
  { header: 'measured_on', value: (r) => format(r.footprint_trial) },
  { header: 'budget', value: (r) => (r.over_budget?.length ? `over: ${r.over_budget.join('; ')}` : (r.budget ?? '')) },
];

function columns(rows: TrialRow[]): { header: string; value: (row: TrialRow) => string }[] {
  const keys = Object.keys(rows[0]?.assignments ?? {});
  return [
    { header: 'trial', value: (r) => String(r.trial) },
    ...keys.map((key) => ({ header: key, value: (r: TrialRow) => format(r.assignments[key]) })),
    { header: 'status', value: (r) => r.status },
    { header: 'best_val_accuracy', value: (r) => format(r.best_val_accuracy) },
    { header: 'val_accuracy', value: (r) => format(r.val_accuracy) },
    { header: 'test_accuracy', value: (r) => format(r.test_accuracy) },
    { header: 'tflite', value: (r) => r.tflite_quantization ?? '' },
    { header: 'tflite_accuracy', value: (r) => format(r.tflite_accuracy) },
    { header: 'tflite_bytes', value: (r) => format(r.tflite_bytes) },
    ...(rows.some((r) => r.macs_per_image !== undefined || r.budget !== undefined) ? phoneColumns : []),
    { header: 'minutes', value: (r) => format(r.minutes, 2) },
    { header: 'run_id', value: (r) => r.run_id ?? '' },
    { header: 'error', value: (r) => r.error ?? '' },
  ];
}

export function resultsCsv(rows: TrialRow[]): string {
  const cols = columns(rows);
  return csvTable(
    cols.map((c) => c.header),
    rows.map((r) => cols.map((c) => c.value(r))),
  );
}

/** The terminal table: aligned columns, the best trial marked with *. */
export function resultsTable(rows: TrialRow[], best: TrialRow | undefined): string {
  const cols = columns(rows).filter((c) => !['run_id', 'error'].includes(c.header));
  const cells = rows.map((r) => cols.map((c) => c.value(r)));
  const widths = cols.map((c, i) => Math.max(c.header.length, ...cells.map((row) => row[i].length)));
  const line = (values: string[], mark: string) =>
    `${mark} ${values.map((v, i) => v.padEnd(widths[i])).join('  ')}`.trimEnd();
  return [
    line(
      cols.map((c) => c.header),
      ' ',
    ),
    ...rows.map((r, i) => line(cells[i], r === best ? '*' : ' ')),
  ].join('\n');
}

/** The metric against the swept value; a heatmap for two swept keys. */
export function sweepPlotSpec(rows: TrialRow[], metric: SweepMetric): TopLevelSpec {
  const keys = Object.keys(rows[0]?.assignments ?? {});
  const values = rows
    .filter((r) => metricOf(r, metric) !== undefined)
    .map((r) => ({
      ...Object.fromEntries(
        keys.map((k) => [
          k,
          typeof r.assignments[k] === 'object' ? JSON.stringify(r.assignments[k]) : r.assignments[k],
        ]),
      ),
      trial: r.trial,
      [metric]: metricOf(r, metric),
    }));
  const numeric = (key: string) => values.every((v) => typeof v[key as keyof typeof v] === 'number');
  const base = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: `${metric} by trial`,
    data: { values },
    width: 420,
    height: 260,
  };
  if (keys.length === 2) {
    return {
      ...base,
      encoding: { x: { field: keys[0], type: 'ordinal' }, y: { field: keys[1], type: 'ordinal' } },
      layer: [
        { mark: 'rect', encoding: { color: { field: metric, type: 'quantitative', scale: { scheme: 'viridis' } } } },
        {
          mark: { type: 'text', color: 'white' },
          encoding: { text: { field: metric, type: 'quantitative', format: '.3f' } },
        },
      ],
    } as unknown as TopLevelSpec;
  }
  const x = keys.length === 1 ? keys[0] : 'trial';
  return {
    ...base,
    mark: { type: 'line', point: { size: 80 } },
    encoding: {
      // An ordinal axis has no zero to leave out (Vega-Lite warns on `zero` there).
      x:
        keys.length === 1 && numeric(x)
          ? { field: x, type: 'quantitative', scale: { zero: false } }
          : { field: x, type: 'ordinal' },
      y: { field: metric, type: 'quantitative', scale: { zero: false } },
    },
  } as unknown as TopLevelSpec;
}

/** The finished trials with a metric and a host latency, as the Pareto plot draws them. */
export function paretoRows(rows: TrialRow[], metric: SweepMetric, threads: 1 | 4): ParetoRow[] {
  return rows.flatMap((r) => {
    const value = metricOf(r, metric);
    const latency = threads === 1 ? r.host_latency_ms_1 : r.host_latency_ms_4;
    if (value === undefined || latency === undefined || r.tflite_bytes === undefined) return [];
    return [
      {
        trial: r.trial,
        label: `trial ${r.trial}: ${Object.entries(r.assignments)
          .map(([k, v]) => `${k.split('.').pop()}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
          .join(', ')}`,
        metric: value,
        latency_ms: latency,
        bytes: r.tflite_bytes,
        budget: r.budget ?? 'no budget',
      },
    ];
  });
}
