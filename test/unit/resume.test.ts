import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { LayersModel } from '@tensorflow/tfjs-node';
import { silentLogger } from '../../src/core/log.ts';
import { continuesInside, findResumePoint, phaseDone, resumeAfter, type ResumePoint } from '../../src/run/resume.ts';
import { writeCheckpoint } from '../../src/run-folder/checkpoints.ts';
import type { CheckpointMeta, EpochRecord } from '../../src/run-folder/records.ts';
import { RunFolder } from '../../src/run-folder/run-folder.ts';
import { tf } from '../../src/tfjs/tf.ts';
import { tempDir } from '../helpers/tmp.ts';

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
  return { epoch, phase, loss: 1 / (epoch + 1), accuracy: 0.5, val_loss: 1, val_accuracy: 0.5 + epoch / 100, learning_rate: 0.001, seconds: 1, time: 1_700_000_000_000 + epoch };
}

let folders = 0;
function folderWith(epochs: number[]): RunFolder {
  const folder = RunFolder.create(work, `r${folders++}`);
  for (const epoch of epochs) folder.appendMetric(record(epoch));
  return folder;
}

async function checkpointAt(folder: RunFolder, epoch: number, extra: Partial<CheckpointMeta> = {}): Promise<void> {
  await writeCheckpoint(folder.checkpoint('last'), model, undefined, { epoch, phase: record(epoch).phase, record: record(epoch), ...extra });
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
    assert.deepEqual(point.records.map((r) => r.epoch), [0, 1, 2]);
    assert.deepEqual(epochsOf(folder), [0, 1, 2], 'metrics.jsonl rewritten');
  });

  test("a checkpoint whose metrics line a kill cut off gets its line back from the checkpoint's record", async () => {
    const folder = folderWith([0, 1]);
    await checkpointAt(folder, 2);
    const point = findResumePoint(folder, silentLogger);
    assert.deepEqual(point.records.map((r) => r.epoch), [0, 1, 2]);
    assert.deepEqual(epochsOf(folder), [0, 1, 2]);
    assert.equal(folder.readMetrics().records[2].val_accuracy, record(2).val_accuracy);
  });

  test('a torn last line is cut off, and its epoch is trained again', async () => {
    const folder = folderWith([0, 1]);
    await checkpointAt(folder, 1);
    fs.appendFileSync(path.join(folder.dir, 'metrics.jsonl'), '{"epoch": 2, "pha');
    const warnings: string[] = [];
    const log = { ...silentLogger, warn: (_fields: unknown, message: string) => warnings.push(message) } as unknown as typeof silentLogger;
    const point = findResumePoint(folder, log);
    assert.deepEqual(point.records.map((r) => r.epoch), [0, 1]);
    assert.match(warnings.join('\n'), /torn line/);
    assert.doesNotMatch(fs.readFileSync(path.join(folder.dir, 'metrics.jsonl'), 'utf8'), /"pha$/);
  });

  test('an epoch recorded twice keeps its first record', async () => {
    const folder = folderWith([0, 1, 1]);
    await checkpointAt(folder, 1);
    assert.deepEqual(findResumePoint(folder, silentLogger).records.map((r) => r.epoch), [0, 1]);
  });

  test('trained epochs with no checkpoint at all: refused, instead of recording them twice', () => {
    assert.throws(() => findResumePoint(folderWith([0, 1, 2]), silentLogger), /records epochs 1\.\.2 but the run has no checkpoint/);
  });
});

describe('phases at the resume point (feature extraction epochs 1-2, fine-tuning 3-4)', () => {
  const featureExtraction = { phase: 'feature_extraction', first: 1, last: 2 };
  const fineTune = { phase: 'fine_tune', first: 3, last: 4 };
  const at = (epoch: number, phase: string, phaseComplete = false): ResumePoint => ({ records: [], lastEpoch: epoch, checkpoint: { dir: '', meta: { epoch, phase, phase_complete: phaseComplete, callbacks: {}, weights: [], optimizer: [] } } });

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
