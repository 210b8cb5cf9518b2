import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { LayersModel } from '@tensorflow/tfjs-node';
import { silentLogger } from '../../src/core/log.ts';
import { continuesInside, findResumePoint, phaseDone, resumeAfter, type ResumePoint } from '../../src/run/resume.ts';
import type { CheckpointMeta, EpochRecord } from '../../src/run-folder/records.ts';
import { RunFolder } from '../../src/run-folder/run-folder.ts';
import { tf } from '../../src/tfjs/tf.ts';
import { tempDir } from '../helpers/tmp.ts';

/** A checkpoint's folder as the on-disk contract (ARCHITECTURE.md) places it: the tests damage its files. */
function checkpointDir(folder: RunFolder, name: string): string {
  return path.join(folder.dir, 'checkpoints', name);
}

/**
 * Where a resumed run starts, from what its folder says was done: the record
 * (metrics.jsonl) and the `last` checkpoint reconciled so every epoch is recorded once.
 */

const work = tempDir('tlx-unit-resume-');
let model: LayersModel;

before(() => {
  model = tf.sequential({ layers: [tf.layers.dense({ units: 2, inputShape: [3], name: 'head' })] });
});
after(() => model.dispose());

function record(epoch: number, phase = epoch <= 2 ? 'feature_extraction' : 'fine_tune'): EpochRecord {
  return {
    epoch,
    phase,
    loss: 1 / (epoch + 1),
    accuracy: 0.5,
    val_loss: 1,
    val_accuracy: 0.5 + epoch / 100,
    learning_rate: 0.001,
    seconds: 1,
    time: 1_700_000_000_000 + epoch,
  };
}

let folders = 0;
function folderWith(epochs: number[]): RunFolder {
  const folder = RunFolder.create(work, `r${folders++}`);
  for (const epoch of epochs) folder.appendMetric(record(epoch));
  return folder;
}

async function checkpointAt(folder: RunFolder, epoch: number, extra: Partial<CheckpointMeta> = {}): Promise<void> {
  await folder.saveCheckpoint('last', model, undefined, {
    epoch,
    phase: record(epoch).phase,
    record: record(epoch),
    ...extra,
  });
}

function epochsOf(folder: RunFolder): number[] {
  return folder.readMetrics().records.map((r) => r.epoch);
}

describe('the resume point', () => {
  test('nothing trained yet: start from the beginning', () => {
    const point = findResumePoint(folderWith([0]), silentLogger);
    assert.equal(point.lastEpoch, 0);
    assert.equal(point.checkpoint, undefined);
  });

  test('epochs recorded after the checkpoint (its successor was lost) are dropped and trained again', async () => {
    const folder = folderWith([0, 1, 2, 3]);
    await checkpointAt(folder, 2);
    const point = findResumePoint(folder, silentLogger);
    assert.equal(point.lastEpoch, 2);
    assert.deepEqual(
      point.records.map((r) => r.epoch),
      [0, 1, 2],
    );
    assert.deepEqual(epochsOf(folder), [0, 1, 2], 'metrics.jsonl rewritten');
  });

  test("a checkpoint whose metrics line a kill cut off gets its line back from the checkpoint's record", async () => {
    const folder = folderWith([0, 1]);
    await checkpointAt(folder, 2);
    const point = findResumePoint(folder, silentLogger);
    assert.deepEqual(
      point.records.map((r) => r.epoch),
      [0, 1, 2],
    );
    assert.deepEqual(epochsOf(folder), [0, 1, 2]);
    assert.equal(folder.readMetrics().records[2].val_accuracy, record(2).val_accuracy);
  });

  test('a torn last line is cut off, and its epoch is trained again', async () => {
    const folder = folderWith([0, 1]);
    await checkpointAt(folder, 1);
    fs.appendFileSync(path.join(folder.dir, 'metrics.jsonl'), '{"epoch": 2, "pha');
    const warnings: string[] = [];
    const log = {
      ...silentLogger,
      warn: (_fields: unknown, message: string) => warnings.push(message),
    } as unknown as typeof silentLogger;
    const point = findResumePoint(folder, log);
    assert.deepEqual(
      point.records.map((r) => r.epoch),
      [0, 1],
    );
    assert.match(warnings.join('\n'), /torn line/);
    assert.doesNotMatch(fs.readFileSync(path.join(folder.dir, 'metrics.jsonl'), 'utf8'), /"pha$/);
  });

  test('an epoch recorded twice keeps its first record', async () => {
    const folder = folderWith([0, 1, 1]);
    await checkpointAt(folder, 1);
    assert.deepEqual(
      findResumePoint(folder, silentLogger).records.map((r) => r.epoch),
      [0, 1],
    );
  });

  test('trained epochs with no checkpoint at all: refused, instead of recording them twice', () => {
    assert.throws(
      () => findResumePoint(folderWith([0, 1, 2]), silentLogger),
      /records epochs 1\.\.2 but the run has no checkpoint/,
    );
  });
});

describe('the newest intact checkpoint (last 4, feature_extraction 2, best 3; records 0-4)', () => {
  type Name = 'last' | 'feature_extraction' | 'best';
  async function damagedRun(
    damage: (folder: RunFolder) => void,
  ): Promise<{ point: ResumePoint; folder: RunFolder; warnings: string }> {
    const folder = folderWith([0, 1, 2, 3, 4]);
    const at: [Name, number][] = [
      ['feature_extraction', 2],
      ['best', 3],
      ['last', 4],
    ];
    for (const [name, epoch] of at)
      await folder.saveCheckpoint(name, model, undefined, {
        epoch,
        phase: record(epoch).phase,
        record: record(epoch),
        phase_complete: name === 'feature_extraction',
      });
    damage(folder);
    const warnings: string[] = [];
    const log = {
      ...silentLogger,
      warn: (_fields: unknown, message: string) => warnings.push(message),
    } as unknown as typeof silentLogger;
    return { point: findResumePoint(folder, log), folder, warnings: warnings.join('\n') };
  }
  const file = (folder: RunFolder, name: Name, part: string) => path.join(checkpointDir(folder, name), part);
  const truncate = (target: string) => fs.truncateSync(target, Math.max(0, fs.statSync(target).size - 4));
  const grow = (target: string) => fs.appendFileSync(target, Buffer.alloc(4));

  test('all intact: last', async () => {
    const { point, folder, warnings } = await damagedRun(() => {});
    assert.equal(point.checkpoint?.dir, checkpointDir(folder, 'last'));
    assert.equal(point.lastEpoch, 4);
    assert.equal(warnings, '');
  });

  for (const [what, damage] of [
    [
      'an emptied checkpoint.json',
      (folder: RunFolder) => fs.writeFileSync(file(folder, 'last', 'checkpoint.json'), ''),
    ],
    [
      'a checkpoint.json of another shape',
      (folder: RunFolder) => fs.writeFileSync(file(folder, 'last', 'checkpoint.json'), '{"epoch": "four"}'),
    ],
    ['a truncated weights.bin', (folder: RunFolder) => truncate(file(folder, 'last', 'weights.bin'))],
    ['an optimizer.bin of the wrong size', (folder: RunFolder) => grow(file(folder, 'last', 'optimizer.bin'))],
    ['a missing weights.bin', (folder: RunFolder) => fs.rmSync(file(folder, 'last', 'weights.bin'))],
  ] as const) {
    test(`last with ${what}: best (epoch 3), named; epoch 4 is trained again and recorded once`, async () => {
      const { point, folder, warnings } = await damagedRun(damage);
      assert.equal(point.lastEpoch, 3);
      assert.equal(point.checkpoint?.dir, checkpointDir(folder, 'best'));
      assert.deepEqual(epochsOf(folder), [0, 1, 2, 3]);
      assert.match(warnings, /resuming from the best checkpoint \(epoch 3\)/);
      if (!what.includes('missing')) assert.match(warnings, /checkpoint last is damaged/);
    });
  }

  test('last and best damaged: the phase checkpoint (epoch 2)', async () => {
    const { point, folder, warnings } = await damagedRun((f) => {
      truncate(file(f, 'last', 'weights.bin'));
      fs.writeFileSync(file(f, 'best', 'checkpoint.json'), '');
    });
    assert.equal(point.checkpoint?.dir, checkpointDir(folder, 'feature_extraction'));
    assert.deepEqual(epochsOf(folder), [0, 1, 2]);
    assert.match(warnings, /checkpoint best is damaged/);
  });

  test('every checkpoint damaged: training starts again from the beginning, said in a warning', async () => {
    const { point, folder, warnings } = await damagedRun((f) => {
      for (const name of ['last', 'best', 'feature_extraction'] as const) truncate(file(f, name, 'weights.bin'));
    });
    assert.equal(point.checkpoint, undefined);
    assert.equal(point.lastEpoch, 0);
    assert.deepEqual(epochsOf(folder), [0]);
    assert.match(warnings, /training starts again from the beginning/);
  });

  test('a lost line in the middle of metrics.jsonl (epoch 3): the checkpoint that restores it (best, 3), not last; epoch 4 trained again', async () => {
    const { point, folder } = await damagedRun((f) => {
      const metrics = path.join(f.dir, 'metrics.jsonl');
      const lines = fs.readFileSync(metrics, 'utf8').split('\n');
      lines[3] = '{"epoch": 3, "pha';
      fs.writeFileSync(metrics, lines.join('\n'));
    });
    assert.equal(point.lastEpoch, 3);
    assert.deepEqual(epochsOf(folder), [0, 1, 2, 3], 'epoch 3 comes back once, from its checkpoint');
    assert.equal(folder.readMetrics().records[3].val_accuracy, record(3).val_accuracy);
  });

  test('lost lines for epochs 2 and 3: the phase checkpoint (2) restores 2; 3 and 4 are trained again', async () => {
    const { point, folder } = await damagedRun((f) => {
      const metrics = path.join(f.dir, 'metrics.jsonl');
      const lines = fs.readFileSync(metrics, 'utf8').split('\n');
      fs.writeFileSync(metrics, [lines[0], lines[1], 'garbage', 'garbage', lines[4], ''].join('\n'));
    });
    assert.equal(point.lastEpoch, 2);
    assert.deepEqual(epochsOf(folder), [0, 1, 2]);
  });
});

describe('phases at the resume point (feature extraction epochs 1-2, fine-tuning 3-4)', () => {
  const featureExtraction = { phase: 'feature_extraction', first: 1, last: 2 };
  const fineTune = { phase: 'fine_tune', first: 3, last: 4 };
  const at = (epoch: number, phase: string, phaseComplete = false): ResumePoint => ({
    records: [],
    lastEpoch: epoch,
    checkpoint: {
      dir: '',
      meta: { epoch, phase, phase_complete: phaseComplete, callbacks: {}, weights: [], optimizer: [] },
    },
  });

  test('inside feature extraction: it continues there, with its optimizer state', () => {
    const point = at(1, 'feature_extraction');
    assert.equal(phaseDone(featureExtraction, point), false);
    assert.equal(resumeAfter(featureExtraction, point), 1);
    assert.equal(continuesInside(featureExtraction, point), true);
    assert.equal(resumeAfter(fineTune, point), 2, 'fine-tuning then starts at its first epoch');
    assert.equal(continuesInside(fineTune, point), false);
  });

  test('a phase that early stopping ended is done, and the next starts fresh', () => {
    const point = at(1, 'feature_extraction', true);
    assert.equal(phaseDone(featureExtraction, point), true);
    assert.equal(resumeAfter(featureExtraction, point), 2);
    assert.equal(continuesInside(fineTune, point), false);
  });

  test('inside fine-tuning: feature extraction is done; fine-tuning continues after the checkpoint', () => {
    const point = at(3, 'fine_tune');
    assert.equal(phaseDone(featureExtraction, point), true);
    assert.equal(resumeAfter(fineTune, point), 3);
    assert.equal(continuesInside(fineTune, point), true);
  });

  test('no checkpoint: nothing is done', () => {
    const point: ResumePoint = { records: [], lastEpoch: 0 };
    assert.equal(phaseDone(featureExtraction, point), false);
    assert.equal(resumeAfter(featureExtraction, point), 0);
  });
});
