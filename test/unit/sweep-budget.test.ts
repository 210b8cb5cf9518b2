import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, test } from 'node:test';
import { judgeBudget, paretoFront, paretoPlotSpec, type Constraints, type Footprint } from '../../src/sweep/budget.ts';
import { withFootprints } from '../../src/sweep/footprints.ts';
import { planSweep } from '../../src/sweep/plan.ts';
import { bestTrial, paretoRows, resultsTable, type TrialRow } from '../../src/sweep/report.ts';
import { sampleTrials, spaceSize } from '../../src/sweep/sample.ts';
import { tempDir, writeFiles } from '../helpers/tmp.ts';

/** Choosing under a phone's budget and searching beyond the grid, on synthetic tables (no training). */

const footprint = (bytes: number, macs: number, ms1: number, trial: number): Footprint => ({
  bytes,
  params: macs / 10,
  macs_per_image: macs,
  host_latency_ms: { threads_1: ms1, threads_4: ms1 / 2 },
  peak_memory_bytes: bytes * 3,
  measured_on_trial: trial,
});

const budget = (limits: Partial<Constraints>): Constraints => ({ latency_threads: 1, ...limits });

describe('the budget (pure)', () => {
  test('within, over (every exceeded limit named with both numbers), unmeasured', () => {
    const small = footprint(2_000_000, 50e6, 1.5, 0);
    assert.deepEqual(judgeBudget(small, budget({ max_bytes: 3_000_000, max_host_latency_ms: 2 })), {
      status: 'within',
    });
    const verdict = judgeBudget(small, budget({ max_bytes: 1_000_000, max_macs: 40e6, max_host_latency_ms: 2 }));
    assert.equal(verdict.status, 'over');
    assert.deepEqual(verdict.status === 'over' && verdict.over, ['bytes 1.91 MiB > 0.95 MiB', 'MACs 50.0 M > 40.0 M']);
    assert.deepEqual(
      judgeBudget(small, { latency_threads: 4, max_host_latency_ms: 0.5 }),
      { status: 'over', over: ['host latency (4 threads) 0.75 ms > 0.5 ms'] },
      'latency_threads picks the 4-thread latency',
    );
    assert.deepEqual(judgeBudget(undefined, budget({ max_bytes: 1 })), { status: 'unmeasured' });
    const noLatency: Footprint = { bytes: 1, macs_per_image: 1, measured_on_trial: 0 };
    assert.deepEqual(
      judgeBudget(noLatency, budget({ max_host_latency_ms: 1 })),
      { status: 'unmeasured' },
      'a limit on a cost the export did not measure is never passed',
    );
  });

  test('the Pareto front: nothing else is at least as accurate and at most as slow', () => {
    const front = paretoFront([
      { trial: 0, score: 0.8, cost: 1.0 },
      { trial: 1, score: 0.85, cost: 2.0 },
      { trial: 2, score: 0.79, cost: 1.5 }, // slower and worse than trial 0
      { trial: 3, score: 0.9, cost: 4.0 },
      { trial: 4, score: 0.85, cost: 2.5 }, // as accurate as trial 1, slower
      { trial: 5, score: 0.7, cost: 0.5 },
    ]);
    assert.deepEqual(
      front.map((p) => p.trial),
      [5, 0, 1, 3],
    );
  });

  const rows: TrialRow[] = [0, 1, 2, 3, 4].map((trial) => ({
    trial,
    assignments: { 'model.base': trial < 2 ? 'mobilenet_v2' : 'mobilenet_v3_small', fine_tune_at: trial },
    status: trial === 4 ? 'failed' : 'finished',
    val_accuracy: [0.9, 0.8, 0.85, 0.7, undefined][trial],
  }));
  // Trials 0 and 1 share one architecture (measured on trial 0), 2 and 3 another (measured on 2).
  const keys = new Map([
    [0, 'v2'],
    [1, 'v2'],
    [2, 'v3'],
    [3, 'v3'],
    [4, 'v3'],
  ]);
  const measured = new Map([
    ['v2', footprint(2_700_000, 55e6, 0.7, 0)],
    ['v3', footprint(1_100_000, 12e6, 0.3, 2)],
  ]);

  test('trials of one architecture share its measurement; the best is the best within budget', () => {
    const judged = withFootprints(rows, keys, measured, budget({ max_bytes: 2_000_000 }));
    assert.deepEqual(
      judged.map((r) => [r.trial, r.budget, r.footprint_trial]),
      [
        [0, 'over', 0],
        [1, 'over', 0],
        [2, 'within', 2],
        [3, 'within', 2],
        [4, undefined, undefined],
      ],
    );
    assert.equal(bestTrial(judged, 'val_accuracy', 'max')?.trial, 0, 'without the budget: trial 0');
    assert.equal(bestTrial(judged, 'val_accuracy', 'max', 'within')?.trial, 2, 'within it: trial 2');
    const table = resultsTable(judged, judged[2]);
    assert.match(table, /over: bytes 2\.57 MiB > 1\.91 MiB/);
    assert.match(table.split('\n')[3], /^\* 2 /);
  });

  test('no trial within budget gives no best; a trial nobody measured is never within', () => {
    const judged = withFootprints(rows, keys, new Map([['v2', measured.get('v2')!]]), budget({ max_macs: 1e6 }));
    assert.deepEqual(
      judged.map((r) => r.budget),
      ['over', 'over', 'unmeasured', 'unmeasured', undefined],
    );
    assert.equal(bestTrial(judged, 'val_accuracy', 'max', 'within'), undefined);
  });

  test('the Pareto plot: one point per measured trial, the front joined, the latency limit drawn', () => {
    const judged = withFootprints(rows, keys, measured, budget({ max_host_latency_ms: 0.5 }));
    const points = paretoRows(judged, 'val_accuracy', 1);
    assert.deepEqual(
      points.map((p) => [p.trial, p.latency_ms, p.budget]),
      [
        [0, 0.7, 'over'],
        [1, 0.7, 'over'],
        [2, 0.3, 'within'],
        [3, 0.3, 'within'],
      ],
    );
    const spec = paretoPlotSpec(points, { metric: 'val_accuracy', goal: 'max', threads: 1, maxLatencyMs: 0.5 }) as {
      data: { values: { trial: number; pareto: boolean }[] };
      layer: { mark: { type: string } }[];
    };
    assert.deepEqual(
      spec.data.values.filter((v) => v.pareto).map((v) => v.trial),
      [0, 2],
    );
    assert.deepEqual(
      spec.layer.map((l) => l.mark.type),
      ['line', 'point', 'text', 'rule'],
    );
  });
});

describe('random search (pure)', () => {
  const space = {
    'train.fine_tune.fine_tune_at': [60, 100, 130],
    'train.fine_tune.optimizer.learning_rate': { min: 1e-6, max: 1e-3, log: true },
    'model.dropout': { min: 0.1, max: 0.5 },
  };

  test('seeded: the same seed draws the same trials; a longer search starts with the shorter one', () => {
    const eight = sampleTrials(space, 8, 7);
    assert.deepEqual(sampleTrials(space, 8, 7), eight);
    assert.deepEqual(sampleTrials(space, 3, 7), eight.slice(0, 3));
    assert.notDeepEqual(sampleTrials(space, 8, 8), eight);
    for (const { assignments } of eight) {
      const rate = assignments['train.fine_tune.optimizer.learning_rate'] as number;
      assert.ok(rate >= 1e-6 && rate <= 1e-3, String(rate));
      assert.equal(rate, Number(rate.toPrecision(3)), 'drawn values keep 3 significant digits');
      assert.ok([60, 100, 130].includes(assignments['train.fine_tune.fine_tune_at'] as number));
    }
  });

  test('log-uniform: each decade about equally often', () => {
    const trials = sampleTrials({ lr: { min: 1e-6, max: 1e-2, log: true } }, 1000, 1);
    const perDecade = [0, 0, 0, 0];
    for (const t of trials) perDecade[Math.min(3, Math.floor(Math.log10(t.assignments.lr as number) + 6))]++;
    // 250 expected per decade (sd 14); a uniform draw would put ~900 in the last one.
    for (const count of perDecade) assert.ok(count > 200 && count < 300, perDecade.join(' '));
  });

  test('never the same trial twice; a space of lists smaller than the ask gives each combination once', () => {
    const lists = { a: [1, 2], b: ['x', 'y', 'z'] };
    assert.equal(spaceSize(lists), 6);
    const all = sampleTrials(lists, 10, 3);
    assert.equal(all.length, 6);
    assert.equal(new Set(all.map((t) => JSON.stringify(t.assignments))).size, 6);
    assert.deepEqual(
      all.map((t) => t.index),
      [0, 1, 2, 3, 4, 5],
    );
    const integers = sampleTrials({ at: { min: 95, max: 105, integer: true } }, 11, 5);
    assert.deepEqual(
      integers.map((t) => t.assignments.at).sort((x, y) => (x as number) - (y as number)),
      [95, 96, 97, 98, 99, 100, 101, 102, 103, 104, 105],
    );
  });
});

const work = tempDir('tlx-unit-budget-');

function experimentFile(name: string, body: string): string {
  writeFiles(work, {
    [`${name}.yaml`]: `name: ${name}\nseed: 3\ndataset: { path: data, validation_split: 0.3, image_size: [32, 32], batch_size: 8 }\nmodel: { alpha: 0.35, weights: none }\nexport: { tflite: { quantization: int8 } }\n${body}`,
  });
  return path.join(work, `${name}.yaml`);
}

describe('planning a random search or a budget', () => {
  const randomBody = (trials: number) =>
    `train: { fine_tune: { optimizer: { name: adam, learning_rate: 0.0001 } } }\nsweep:\n  method: random\n  trials: ${trials}\n  seed: 11\n  grid:\n    train.fine_tune.fine_tune_at: [100, 120, 140]\n    train.fine_tune.optimizer.learning_rate: { min: 0.00001, max: 0.001, log: true }\n`;

  test('trials: N draws N validated trials; asking more keeps the sweep and its first draws', () => {
    const four = planSweep({ file: experimentFile('random', randomBody(4)), overrides: [], grid: {} });
    assert.equal(four.jobs.length, 4);
    assert.deepEqual(four.search, { method: 'random', trials: 4, seed: 11 });
    const six = planSweep({ file: experimentFile('random', randomBody(6)), overrides: [], grid: {} });
    assert.equal(six.id, four.id, 'the same sweep folder: its finished trials are kept');
    assert.deepEqual(
      six.jobs.slice(0, 4).map((j) => j.configSha256),
      four.jobs.map((j) => j.configSha256),
    );
    assert.equal(
      six.jobs[0].experiment.config.train.fine_tune.optimizer.learning_rate,
      six.jobs[0].plan.assignments['train.fine_tune.optimizer.learning_rate'],
    );
  });

  test('a continuous range needs method: random, and random needs trials: each said with its key', () => {
    assert.throws(
      () =>
        planSweep({
          file: experimentFile('continuous', 'sweep:\n  grid:\n    model.dropout: { min: 0.1, max: 0.5 }\n'),
          overrides: [],
          grid: {},
        }),
      /sweep\.grid\.model\.dropout: a continuous range \{min, max\} is drawn from, so it needs sweep\.method: random/,
    );
    assert.throws(
      () =>
        planSweep({
          file: experimentFile('notrials', 'sweep:\n  method: random\n  grid:\n    seed: [1, 2]\n'),
          overrides: [],
          grid: {},
        }),
      /sweep\.trials: sweep\.method: random needs the number of trials/,
    );
    assert.throws(
      () =>
        planSweep({
          file: experimentFile(
            'badlog',
            'sweep:\n  method: random\n  trials: 2\n  grid:\n    model.dropout: { min: 0, max: 0.5, log: true }\n',
          ),
          overrides: [],
          grid: {},
        }),
      /sweep\.grid\.model\.dropout: log: true needs min > 0/,
    );
  });

  test('constraints need an export to measure: sweep.export none is refused', () => {
    assert.throws(
      () =>
        planSweep({
          file: experimentFile(
            'budgetnone',
            'sweep:\n  export: none\n  constraints: { max_bytes: 1000000 }\n  grid:\n    seed: [1, 2]\n',
          ),
          overrides: [],
          grid: {},
        }),
      /sweep\.constraints: .*sweep\.export: none cannot judge it/,
    );
    const planned = planSweep({
      file: experimentFile(
        'budget',
        'sweep:\n  export: best\n  constraints: { max_macs: 5000000 }\n  grid:\n    seed: [1, 2]\n',
      ),
      overrides: [],
      grid: {},
    });
    assert.deepEqual(planned.constraints, { max_macs: 5000000, latency_threads: 1 });
  });
});
