import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { validateExperimentValue } from '../../src/config/load.ts';
import { memoryLimit } from '../../src/core/memory.ts';
import { buildClassifier, setPhaseTrainable } from '../../src/models/classifier.ts';
import { compileGraph, frozenOutputBytesPerSample, prefixSplit, splitGraph } from '../../src/engine/graph.ts';
import { planFrozenOutputsCache } from '../../src/engine/frozen-outputs.ts';
import { cheapestPrefix, recomputesCheaply } from '../../src/engine/recompute.ts';
import { estimateTrainingMemory, judgeTrainingMemory, type TrainingMemory } from '../../src/run/memory-check.ts';
import { largestBatchWithin, peakOf, slotsPerWeight, type PhaseMemory } from '../../src/train/memory.ts';
import { createOptimizer } from '../../src/train/optimizers.ts';
import { tf } from '../../src/tfjs/tf.ts';

const mib = 1024 ** 2;

describe('the verdict', () => {
  // A phase that holds 100 MiB and adds 10 MiB per sample, in a process holding 500 MiB.
  const memory: PhaseMemory = {
    held: { foldedWeights: 0, optimizerSlots: 100 * mib, gradients: 0, frozenOutputsCache: 0 },
    moments: [
      { name: 'frozen pass', fixed: 100 * mib, perSample: 4 * mib },
      { name: 'training step', fixed: 100 * mib, perSample: 10 * mib },
    ],
  };
  const resident = 500 * mib;
  const estimateAt = (batch: number, limitMib: number): TrainingMemory => {
    const peak = peakOf(memory, resident, batch);
    const phase = { phase: 'fine_tune' as const, batch, memory, peak: peak.bytes, moment: peak.moment.name };
    return {
      resident,
      phases: [phase],
      highest: phase,
      limit: { bytes: limitMib * mib, source: 'TLX_MEMORY_BUDGET_MB' },
    };
  };

  test('the peak is the largest moment: resident + held + batch x per sample', () => {
    assert.deepEqual(peakOf(memory, resident, 32), { bytes: (500 + 100 + 320) * mib, moment: memory.moments[1] });
  });

  test('the largest batch that fits, fits, and one more does not', () => {
    const largest = largestBatchWithin(memory, resident, 1000 * mib);
    assert.equal(largest, 40);
    assert.ok(peakOf(memory, resident, largest).bytes <= 1000 * mib);
    assert.ok(peakOf(memory, resident, largest + 1).bytes > 1000 * mib);
    assert.equal(largestBatchWithin(memory, resident, 550 * mib), 0, 'the held bytes alone do not fit');
  });

  test('fits below 80% of the limit, warns above it, refuses above the limit with the batch that fits', () => {
    assert.equal(judgeTrainingMemory(estimateAt(32, 2000)).verdict, 'fits');
    const near = judgeTrainingMemory(estimateAt(32, 1000));
    assert.equal(near.verdict, 'near the limit');
    assert.match(near.message, /92% of the 1000\.0 MiB this process can use \(TLX_MEMORY_BUDGET_MB\)/);
    const over = judgeTrainingMemory(estimateAt(64, 1000));
    assert.equal(over.verdict, 'does not fit');
    assert.match(
      over.message,
      /about 1\.2 GiB at its peak \(fine_tune, training step, batch of 64\).*over it by 240\.0 MiB; dataset\.batch_size: 40 or less fits/,
    );
    const none = judgeTrainingMemory(estimateAt(64, 550));
    assert.match(
      none.message,
      /not even a batch of 1 fits: lower dataset\.image_size, raise train\.fine_tune\.fine_tune_at or pick a smaller model\.base/,
    );
  });
});

describe('the estimate of a run', () => {
  const experiment = (train: object, augmentation: object[] = []) =>
    validateExperimentValue(
      {
        name: 'memory',
        dataset: { path: 'data', validation_split: 0.2, image_size: [64, 64], batch_size: 32 },
        augmentation,
        model: { alpha: 0.35, weights: 'none' },
        train,
      },
      'memory.yaml',
    );
  const classifier = buildClassifier({
    base: 'mobilenet_v2',
    alpha: 0.35,
    imageSize: [64, 64],
    classCount: 3,
    dropout: 0.2,
    seed: 1,
  });
  const limit = { bytes: 64 * 1024 * mib, source: 'test' };

  test('each phase that trains, at a batch no larger than the training split; fine-tuning keeps more on the tape', () => {
    const estimate = estimateTrainingMemory(
      experiment({ feature_extraction: { epochs: 1 }, fine_tune: { epochs: 1, fine_tune_at: 40 } }, [
        { random_flip: 'horizontal' },
      ]),
      classifier,
      { train: { length: 20 }, validation: { length: 5 } },
      { resident: 0, limit },
    );
    assert.deepEqual(
      estimate.phases.map((phase) => [phase.phase, phase.batch]),
      [
        ['feature_extraction', 20],
        ['fine_tune', 20],
      ],
    );
    const step = (phase: number) =>
      estimate.phases[phase].memory.moments.find((moment) => moment.name === 'training step')!.perSample;
    assert.ok(
      step(1) > 10 * step(0),
      `per sample on the tape: feature extraction ${step(0)} B, fine-tuning from layer 40 ${step(1)} B`,
    );
    assert.ok(
      estimate.phases[1].memory.held.optimizerSlots > 100 * estimate.phases[0].memory.held.optimizerSlots,
      'feature extraction trains only the head',
    );
    const skipped = estimateTrainingMemory(
      experiment({ feature_extraction: { epochs: 0 }, fine_tune: { epochs: 1 } }),
      classifier,
      { train: { length: 20 }, validation: { length: 5 } },
      { resident: 0, limit },
    );
    assert.deepEqual(
      skipped.phases.map((phase) => phase.phase),
      ['fine_tune'],
    );
  });

  test('a phase that caches its frozen outputs holds them, and twice while joining them; one that recomputes them holds none', () => {
    const splits = { train: { length: 200 }, validation: { length: 50 } };
    const cached = estimateTrainingMemory(
      experiment({ feature_extraction: { epochs: 3 }, fine_tune: { epochs: 0 } }),
      classifier,
      splits,
      { resident: 0, limit },
    ).phases[0].memory;
    assert.ok(cached.held.frozenOutputsCache > 0);
    const joining = cached.moments.find((moment) => moment.name === 'joining the cache')!;
    assert.ok(joining.fixed >= 2 * cached.held.frozenOutputsCache);
    // A random flip needs two variants: one epoch is cheaper without a cache.
    const recomputed = estimateTrainingMemory(
      experiment({ feature_extraction: { epochs: 1 }, fine_tune: { epochs: 0 } }, [{ random_flip: 'horizontal' }]),
      classifier,
      splits,
      { resident: 0, limit },
    ).phases[0].memory;
    assert.equal(recomputed.held.frozenOutputsCache, 0);
    assert.ok(recomputed.moments.some((moment) => moment.name === 'validation'));
  });

  test('a cache too large for memory goes to files (and out of the estimate); with no room on disk either, the frozen layers run every epoch', () => {
    const splits = { train: { length: 200 }, validation: { length: 50 } };
    const flip = experiment({ feature_extraction: { epochs: 3 }, fine_tune: { epochs: 2, fine_tune_at: 40 } }, [
      { random_flip: 'horizontal' },
    ]);
    const held = (cacheRoom: { memory: number; disk: number }) =>
      estimateTrainingMemory(flip, classifier, splits, { resident: 0, limit, cacheRoom }).phases.map(
        (phase) => phase.memory.held.frozenOutputsCache,
      );
    const inMemory = held({ memory: 1024 * mib, disk: 0 });
    assert.ok(inMemory.every((bytes) => bytes > 0));
    assert.deepEqual(held({ memory: 0, disk: 1024 * mib }), [0, 0], 'in files: no cache bytes in memory');
    assert.deepEqual(held({ memory: 0, disk: 0 }), [0, 0], 'no room anywhere: recomputed');

    // The plan itself, for fine-tuning from layer 100 with a shared prefix (a sweep's layers below 20:
    // too many frozen layers above it to run every step, so the phase keeps its own rows too).
    setPhaseTrainable(classifier, 'fine_tune', 100);
    const graph = compileGraph(classifier.model);
    const model = { graph, split: splitGraph(graph) };
    const prefix = prefixSplit(graph, new Set(classifier.base.layers.slice(0, 20)));
    assert.equal(recomputesCheaply(graph, model.split, prefix), false);
    const plan = (memory: number, disk: number) =>
      planFrozenOutputsCache(
        model,
        { ...splits, variants: { count: 2 }, prefix, remainingEpochs: 2 },
        { memory, disk },
      );
    const everything = plan(1024 * mib, 0);
    assert.ok(everything.choice === 'cache' && everything.prefix && everything.own === 'memory');
    assert.equal(everything.prefix.place, 'memory');
    assert.equal(everything.diskBytes, 0);
    const inFiles = plan(0, 1024 * mib);
    assert.ok(inFiles.choice === 'cache' && inFiles.own === 'disk' && inFiles.prefix?.place === 'disk');
    assert.equal(inFiles.diskBytes, everything.bytes);
    // Memory enough for the phase's own rows only (they are read every step): the prefix's go to a file.
    const ownBytes = (2 * 200 + 50) * frozenOutputBytesPerSample(graph, model.split);
    const split = plan(ownBytes, 1024 * mib);
    assert.ok(split.choice === 'cache' && split.prefix);
    assert.equal(split.own, 'memory');
    assert.equal(split.prefix.place, 'disk');
    assert.equal(split.memoryBytes, ownBytes);
    assert.equal(split.memoryBytes + split.diskBytes, split.bytes);
    // Both parts count against one allowance: a byte short of both, the prefix goes to a file.
    const almost = plan(everything.bytes - 1, 1024 * mib);
    assert.ok(almost.choice === 'cache' && almost.prefix?.place === 'disk' && almost.own === 'memory');
    // No disk for the prefix: it is not shared, and the phase caches alone in memory.
    const alone = plan(ownBytes, 0);
    assert.ok(alone.choice === 'cache');
    assert.equal(alone.prefix, undefined);
    assert.equal(alone.own, 'memory');
    assert.deepEqual(plan(0, 0), { choice: 'no room', bytes: alone.bytes });
    // The layers below fine_tune_at, as a run keeps them for fine-tuning: cut where their outputs
    // are cheapest to keep, the few frozen layers above run every step, and nothing else is kept.
    const kept = cheapestPrefix(graph, classifier.base.layers.slice(0, 100));
    assert.ok(frozenOutputBytesPerSample(graph, kept) < frozenOutputBytesPerSample(graph, model.split));
    const perStep = planFrozenOutputsCache(
      model,
      { ...splits, variants: { count: 2 }, prefix: kept, remainingEpochs: 2 },
      { memory: 1024 * mib, disk: 0 },
    );
    assert.deepEqual(perStep, {
      choice: 'cache',
      prefix: { split: kept, place: 'memory' },
      own: 'per step',
      bytes: (2 * 200 + 50) * frozenOutputBytesPerSample(graph, kept),
      memoryBytes: (2 * 200 + 50) * frozenOutputBytesPerSample(graph, kept),
      diskBytes: 0,
    });
  });

  test('the limit: TLX_MEMORY_BUDGET_MB when set, else what the machine (or its cgroup) has free beside what the process holds', () => {
    const saved = process.env.TLX_MEMORY_BUDGET_MB;
    try {
      process.env.TLX_MEMORY_BUDGET_MB = '1500';
      assert.deepEqual(memoryLimit(), { bytes: 1500 * mib, source: 'TLX_MEMORY_BUDGET_MB' });
      delete process.env.TLX_MEMORY_BUDGET_MB;
      const own = process.memoryUsage().rss;
      const machine = memoryLimit(own);
      assert.ok(machine.bytes > own, `${machine.bytes} B from ${machine.source}`);
      assert.match(machine.source, /available on this machine|cgroup/);
    } finally {
      if (saved === undefined) delete process.env.TLX_MEMORY_BUDGET_MB;
      else process.env.TLX_MEMORY_BUDGET_MB = saved;
    }
  });
});

test('optimizer slots per weight: as many as tfjs makes', async () => {
  for (const optimizer of [
    { name: 'adam' },
    { name: 'rmsprop' },
    { name: 'rmsprop', momentum: 0.9 },
    { name: 'sgd' },
    { name: 'sgd', momentum: 0.9 },
  ] as const) {
    const created = createOptimizer({ learning_rate: 0.01, ...optimizer });
    const weight = tf.variable(tf.ones([3]));
    created.minimize(() => weight.square().sum() as never, false, [weight]);
    // getWeights() lists the slots and, for some optimizers, the step counter (a scalar).
    const slots = (await created.getWeights()).filter((named) => named.tensor.size === 3);
    assert.equal(slots.length, slotsPerWeight(optimizer), JSON.stringify(optimizer));
    created.dispose();
    weight.dispose();
  }
});
