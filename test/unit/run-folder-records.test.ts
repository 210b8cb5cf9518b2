import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { CorruptFileError, removeDeadTemps, tempPathFor, writeFileAtomic } from '../../src/core/files.ts';
import type { EpochRecord, RunJson } from '../../src/run-folder/records.ts';
import { RunFolder, newRunId, shortRunName } from '../../src/run-folder/run-folder.ts';
import { SweepFolder } from '../../src/run-folder/sweep-folder.ts';
import { tempDir } from '../helpers/tmp.ts';

/** The run folder's records: typed on the way in and out, whole or absent, and a damaged one named. */

const work = tempDir('tlx-unit-records-');

function run(id: string): RunJson {
  const now = new Date(0).toISOString();
  return {
    run_id: id,
    status: 'RUNNING',
    base_dir: work,
    config_sha256: 'c'.repeat(64),
    tlx_version: '0',
    created: now,
    updated: now,
    tags: {},
    phase_outcomes: {},
  };
}

const epoch: EpochRecord = {
  epoch: 1,
  phase: 'feature_extraction',
  loss: 0.5,
  accuracy: 0.75,
  val_loss: Number.NaN,
  val_accuracy: 0.5,
  learning_rate: 0.001,
  seconds: 2,
  time: 1,
};

describe('run folder records', () => {
  test('run.json and metrics.jsonl read back as written; NaN survives as NaN', () => {
    const folder = RunFolder.create(work, 'roundtrip');
    folder.writeRun(run(folder.id));
    folder.appendMetric({ ...epoch, epoch: 0, phase: 'initial' });
    folder.appendMetric(epoch);
    assert.deepEqual(folder.readRun(), run(folder.id));
    const read = folder.readMetrics();
    assert.deepEqual(read.problems, []);
    assert.equal(read.records.length, 2);
    assert.ok(Number.isNaN(read.records[1].val_loss));
    assert.equal(read.records[1].accuracy, 0.75);
  });

  test('a run.json of the wrong shape is a CorruptFileError naming the file and the key', () => {
    const folder = RunFolder.create(work, 'wrongshape');
    fs.writeFileSync(path.join(folder.dir, 'run.json'), JSON.stringify({ ...run(folder.id), status: 'SOMETIMES' }));
    assert.throws(
      () => folder.readRun(),
      (error: Error) =>
        error instanceof CorruptFileError &&
        error.message.includes(path.join(folder.dir, 'run.json')) &&
        /status/.test(error.message),
    );
  });

  test('a line of metrics.jsonl that is not an epoch record is reported, not silently dropped', () => {
    const folder = RunFolder.create(work, 'badline');
    folder.appendMetric(epoch);
    fs.appendFileSync(path.join(folder.dir, 'metrics.jsonl'), '{"epoch": "two"}\n');
    folder.appendMetric({ ...epoch, epoch: 3 });
    const read = folder.readMetrics();
    assert.deepEqual(
      read.records.map((r) => r.epoch),
      [1, 3],
    );
    assert.match(read.problems[0], /metrics\.jsonl line 2 is not a valid epoch record/);
  });

  test('a folder without run.json is not a run; listing skips it', () => {
    fs.mkdirSync(path.join(work, 'list', 'not-a-run'), { recursive: true });
    const real = RunFolder.create(path.join(work, 'list'), 'listed');
    real.writeRun(run(real.id));
    assert.deepEqual(
      RunFolder.list(path.join(work, 'list')).map((f) => f.id),
      [real.id],
    );
    assert.equal(RunFolder.tryOpen(path.join(work, 'list', 'not-a-run')), undefined);
    assert.throws(() => RunFolder.open(path.join(work, 'list', 'not-a-run')), /not a tlx run folder \(no run\.json\)/);
  });

  test('run ids sort by time and read as the experiment name', () => {
    const id = newRunId('flowers', new Date('2026-12-06T10:11:12Z'));
    assert.match(id, /^20261206-101112-flowers-[a-z0-9]{1,4}$/);
    assert.equal(shortRunName(id), id.slice('20261206-101112-'.length));
  });
});

describe('whole or absent', () => {
  test('a write goes through a temp file that a later process removes when its writer is dead', () => {
    const target = path.join(work, 'atomic', 'file.json');
    writeFileAtomic(target, '{"a":1}');
    assert.equal(fs.readFileSync(target, 'utf8'), '{"a":1}');
    assert.deepEqual(fs.readdirSync(path.dirname(target)), ['file.json'], 'no temp file left');
    // A temp file of a process that no longer exists (pid 2^22 + 1 is above Linux's pid_max).
    const orphan = tempPathFor(target).replace(`-${process.pid}-`, `-${2 ** 22 + 1}-`);
    fs.writeFileSync(orphan, 'half');
    const live = tempPathFor(target);
    fs.writeFileSync(live, 'mine');
    assert.deepEqual(removeDeadTemps(path.dirname(target)), [orphan]);
    assert.ok(fs.existsSync(live), "a live process's temp file is kept");
  });
});

describe('the sweep folder', () => {
  test('trial states and the plan are validated when read; a bad status names the file', () => {
    const folder = SweepFolder.at(work, 'demo-0123456789');
    fs.mkdirSync(folder.dir, { recursive: true });
    folder.writeStatus([{ trial: 0, assignments: { seed: 1 }, config_sha256: 'x', status: 'finished', minutes: 1.5 }]);
    assert.equal(folder.readStatus()[0].minutes, 1.5);
    fs.writeFileSync(
      folder.file('status.json'),
      JSON.stringify([{ trial: 0, assignments: {}, config_sha256: 'x', status: 'done' }]),
    );
    assert.throws(
      () => folder.readStatus(),
      (error: Error) => error.message.includes('status.json'),
    );
    folder.writePlan({
      sweep_id: folder.id,
      experiment_file: 'x.yaml',
      overrides: [],
      grid: { seed: [1] },
      max_trials: null,
      metric: 'val_accuracy',
      goal: 'max',
      export: 'all',
      trials: [],
    });
    assert.equal(folder.readPlan().export, 'all');
  });
});
