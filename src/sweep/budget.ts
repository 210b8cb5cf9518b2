import type { TopLevelSpec } from 'vega-lite';
import type { ResolvedExperiment, Sweep } from '../config/resolved.ts';
import { UserError } from '../core/errors.ts';
import { canonicalJson, sha256Hex } from '../core/hash.ts';

/**
 * The phone's budget (pure): what a trial's .tflite costs, whether that fits the sweep's
 * constraints, and which trials no other beats on both accuracy and latency (the Pareto front).
 */

export type Constraints = NonNullable<Sweep['constraints']>;

/** What a trial's .tflite costs, from its own export or from a trial of the same architecture. */
export interface Footprint {
  bytes: number;
  params?: number;
  macs_per_image?: number;
  host_latency_ms?: { threads_1: number; threads_4: number };
  peak_memory_bytes?: number;
  /** The trial whose export was measured. */
  measured_on_trial: number;
}

export type BudgetVerdict = { status: 'within' } | { status: 'over'; over: string[] } | { status: 'unmeasured' };

/** The sweep's constraints, refused where they cannot be judged. */
export function constraintsOf(config: ResolvedExperiment): Constraints | undefined {
  const constraints = config.sweep?.constraints;
  if (!constraints) return undefined;
  if (!config.export.tflite)
    throw new UserError(
      'sweep.constraints: a budget is judged on each architecture’s .tflite; add export: { tflite: { quantization: int8 } }',
    );
  if (config.sweep?.export === 'none')
    throw new UserError(
      'sweep.constraints: a budget is judged on each architecture’s .tflite, so sweep.export: none cannot judge it; use best (one export per architecture) or all',
    );
  return constraints;
}

/**
 * The part of a config that decides what its .tflite costs: the network (base, width,
 * variant), the input size, the classes' source and the quantization. Trials that differ
 * only in training (fine_tune_at, learning rates, epochs, seeds, augmentation) share it.
 */
export function footprintKey(config: ResolvedExperiment): string {
  const { base, alpha, minimalistic } = config.model;
  const { url, path, subdir, train_dir, image_size } = config.dataset;
  const tflite = config.export.tflite;
  return sha256Hex(
    canonicalJson({
      model: { base, alpha, minimalistic },
      classes: { url, path, subdir, train_dir },
      image_size,
      quantization: tflite ? { mode: tflite.quantization, io_type: tflite.io_type } : null,
    }),
  ).slice(0, 16);
}

function latencyOf(footprint: Footprint, threads: 1 | 4): number | undefined {
  return threads === 1 ? footprint.host_latency_ms?.threads_1 : footprint.host_latency_ms?.threads_4;
}

const mib = (bytes: number) => `${(bytes / 1024 ** 2).toFixed(2)} MiB`;
const millions = (count: number) => `${(count / 1e6).toFixed(1)} M`;

/** Within, over (each exceeded limit said with both numbers), or unmeasured (no export to read: never within). */
export function judgeBudget(footprint: Footprint | undefined, constraints: Constraints): BudgetVerdict {
  if (!footprint) return { status: 'unmeasured' };
  const threads = constraints.latency_threads;
  const checks: [number | undefined, number | undefined, (v: number, limit: number) => string][] = [
    [footprint.bytes, constraints.max_bytes, (v, l) => `bytes ${mib(v)} > ${mib(l)}`],
    [footprint.params, constraints.max_params, (v, l) => `params ${millions(v)} > ${millions(l)}`],
    [footprint.macs_per_image, constraints.max_macs, (v, l) => `MACs ${millions(v)} > ${millions(l)}`],
    [
      latencyOf(footprint, threads),
      constraints.max_host_latency_ms,
      (v, l) => `host latency (${threads} thread${threads === 1 ? '' : 's'}) ${v.toFixed(2)} ms > ${l} ms`,
    ],
    [footprint.peak_memory_bytes, constraints.max_peak_memory_bytes, (v, l) => `peak memory ${mib(v)} > ${mib(l)}`],
  ];
  const over: string[] = [];
  for (const [value, limit, describe] of checks) {
    if (limit === undefined) continue;
    if (value === undefined) return { status: 'unmeasured' };
    if (value > limit) over.push(describe(value, limit));
  }
  return over.length > 0 ? { status: 'over', over } : { status: 'within' };
}

export interface ParetoPoint {
  trial: number;
  /** Larger is better. */
  score: number;
  /** Smaller is better. */
  cost: number;
}

/**
 * The trials no other trial beats on both: at least as good a score at no more cost, and
 * strictly better on one. Sorted by cost.
 */
export function paretoFront(points: ParetoPoint[]): ParetoPoint[] {
  const dominated = (p: ParetoPoint) =>
    points.some((q) => q.score >= p.score && q.cost <= p.cost && (q.score > p.score || q.cost < p.cost));
  return points.filter((p) => !dominated(p)).sort((a, b) => a.cost - b.cost || b.score - a.score);
}

export interface ParetoRow {
  trial: number;
  label: string;
  metric: number;
  latency_ms: number;
  bytes: number;
  budget: 'within' | 'over' | 'unmeasured' | 'no budget';
}

const budgetColors: [ParetoRow['budget'], string][] = [
  ['within', '#2a9d8f'],
  ['over', '#e76f51'],
  ['unmeasured', '#999999'],
  ['no budget', '#4c78a8'],
];

/**
 * Accuracy against host latency, the file size as the point size, within/over budget as
 * the color, the front as a line, the latency limit as a rule.
 */
export function paretoPlotSpec(
  rows: ParetoRow[],
  options: { metric: string; goal: 'max' | 'min'; threads: 1 | 4; maxLatencyMs?: number },
): TopLevelSpec {
  const front = new Set(
    paretoFront(
      rows.map((r) => ({ trial: r.trial, score: options.goal === 'max' ? r.metric : -r.metric, cost: r.latency_ms })),
    ).map((p) => p.trial),
  );
  const values = rows.map((r) => ({ ...r, size_mib: r.bytes / 1024 ** 2, pareto: front.has(r.trial) }));
  const present = budgetColors.filter(([status]) => rows.some((r) => r.budget === status));
  const x = {
    field: 'latency_ms',
    type: 'quantitative',
    title: `host latency, ms (LiteRT XNNPACK, ${options.threads} thread${options.threads === 1 ? '' : 's'})`,
    scale: { zero: false },
  };
  const y = { field: 'metric', type: 'quantitative', title: options.metric, scale: { zero: false } };
  const layers: unknown[] = [
    {
      transform: [{ filter: 'datum.pareto' }],
      mark: { type: 'line', color: '#888', strokeDash: [4, 3] },
      encoding: { x, y, order: { field: 'latency_ms' } },
    },
    {
      mark: { type: 'point', filled: true, opacity: 0.8 },
      encoding: {
        x,
        y,
        size: {
          field: 'size_mib',
          type: 'quantitative',
          title: '.tflite MiB',
          scale: { zero: false, range: [60, 600] },
        },
        color: {
          field: 'budget',
          type: 'nominal',
          scale: { domain: present.map(([status]) => status), range: present.map(([, color]) => color) },
        },
        tooltip: [{ field: 'label' }, { field: 'metric' }, { field: 'latency_ms' }, { field: 'size_mib' }],
      },
    },
    { mark: { type: 'text', dy: -12, fontSize: 10 }, encoding: { x, y, text: { field: 'trial' } } },
  ];
  if (options.maxLatencyMs !== undefined)
    layers.push({
      data: { values: [{ limit: options.maxLatencyMs }] },
      mark: { type: 'rule', color: '#e76f51', strokeDash: [2, 2] },
      encoding: { x: { field: 'limit', type: 'quantitative' } },
    });
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: `${options.metric} against host latency (trial numbers; the dashed line joins the Pareto front)`,
    data: { values },
    width: 460,
    height: 300,
    layer: layers,
  } as unknown as TopLevelSpec;
}
