import assert from 'node:assert/strict';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { runTlx } from './helpers/cli.ts';
import { TestServer } from './helpers/http.ts';
import { QueueLab } from './helpers/queue-lab.ts';
import { readMetrics, tinyDataAndModel, writeExperiment } from './helpers/runs.ts';

/**
 * A queued sweep under faults of the queue: the same command twice and a second
 * coordinator, Redis restarted mid-sweep, a trial that cannot succeed, a leader whose export
 * fails (helpers/queue-lab.ts: workers in mount namespaces of their own).
 */

const lab = new QueueLab('tlx-queue-faults-');
const { submitter, runsDir, work } = lab;
const startWorker = (name: string, env?: Record<string, string>) => lab.startWorker(name, env);
const stopWorkers = () => lab.stopWorkers();
const sweep = (args: string[], env?: Record<string, string>, runsDir?: string) => lab.sweep(args, env, runsDir);
const experiment = (name: string, grid: string, train?: string, extra?: string) =>
  lab.experiment(name, grid, train, extra);
const trialFolders = (sweepName: string) => lab.trialFolders(sweepName);
const jobs = (prefix: string) => lab.jobs(prefix);

before(() => lab.start());
after(() => lab.stop());

describe('tlx sweep --queue under faults of the queue', () => {
  // A failed test's workers would take the next test's jobs: every test starts with none.
  afterEach(() => lab.stopWorkers());

  test('the same command again, and a second coordinator, enqueue nothing twice; --set sweep keys join a --grid', async () => {
    const file = writeExperiment(
      submitter,
      'attach',
      `seed: 4\n${tinyDataAndModel}train: { feature_extraction: { epochs: 2 }, fine_tune: { epochs: 1 } }\n`,
    );
    const args = [file, '--grid', 'train.fine_tune.fine_tune_at=100,120,140', '--set', 'sweep.export=none', '--queue'];
    // A second coordinator on another machine: its own runs folder, the same queue.
    const elsewhere = sweep(args, {}, path.join(work, 'elsewhere'));
    const [a, b] = await Promise.all([sweep(args), elsewhere]);
    assert.equal(a.exitCode, 0, a.stderr);
    assert.equal(b.exitCode, 0, b.stderr);
    const again = await sweep(args);
    assert.match(again.stderr, /is already on the queue; attaching to it/);
    // One leader job for the shared feature extraction; its followers are added once it has run.
    assert.equal((await jobs('attach-')).length, 1);
    startWorker('w1');
    const waited = await sweep([...args, '--wait']);
    assert.equal(waited.exitCode, 0, waited.stderr.slice(-2000));
    const all = await jobs('attach-');
    assert.deepEqual(
      all.map((j) => j.id.replace(/^.*\./, '')),
      ['trial-0', 'trial-1', 'trial-2'],
      'one job per trial',
    );
    assert.ok(all.every((j) => j.state === 'completed'));
    const status = await runTlx(
      ['--runs-dir', runsDir, '--json', 'sweep', 'status', all[0].id.split('.')[0], '--queue'],
      { cwd: submitter, env: { TLX_QUEUE_URL: lab.redis.url, MLFLOW_TRACKING_URI: lab.mlflow.url } },
    );
    assert.equal(status.exitCode, 0, status.stderr);
    assert.deepEqual(
      (JSON.parse(status.stdout) as { trials: { status: string }[] }).trials.map((t) => t.status),
      ['finished', 'finished', 'finished'],
    );
    await stopWorkers();
  });

  test('Redis restarted mid-sweep: no job is lost, the worker reconnects, the sweep finishes', async () => {
    const file = experiment(
      'restart',
      '    seed: [4, 5]',
      'feature_extraction: { epochs: 8 }, fine_tune: { epochs: 1 }',
    );
    startWorker('w1');
    const enqueued = await sweep([file, '--queue']);
    assert.equal(enqueued.exitCode, 0, enqueued.stderr);
    for (let i = 0; i < 600 && trialFolders('restart').size === 0; i++)
      await new Promise((resolve) => setTimeout(resolve, 200));
    await lab.redis.restart();
    const waited = await sweep([file, '--queue', '--wait']);
    assert.equal(waited.exitCode, 0, waited.stderr.slice(-2000));
    const restartJobs = await jobs('restart-');
    assert.equal(restartJobs.length, 2);
    assert.ok(restartJobs.every((j) => j.state === 'completed'));
    await stopWorkers();
  });

  test('a trial that cannot succeed fails once (not retried), with its reason in the table; the others finish', async () => {
    const server = new TestServer();
    const base = await server.start();
    try {
      const file = experiment('unfixable', `    model.weights: [none, '${base}/missing-weights.h5']`);
      startWorker('w1');
      const waited = await sweep([file, '--queue', '--wait']);
      assert.equal(waited.exitCode, 1, waited.stderr.slice(-2000));
      const states = await jobs('unfixable-');
      assert.deepEqual(
        states.map((j) => j.state),
        ['completed', 'failed'],
      );
      assert.equal(states[1].attempts, 1, 'one attempt, no retries');
      assert.match(states[1].reason ?? '', /missing-weights\.h5 failed: HTTP 404/);
      assert.match(waited.stdout, /failed/);
    } finally {
      await server.stop();
      await stopWorkers();
    }
  });

  test('a group leader whose export fails still hands its feature extraction on: the other trials run and the sweep ends', async () => {
    const file = experiment(
      'orphans',
      '    train.fine_tune.fine_tune_at: [100, 140]',
      undefined,
      'export: { tflite: { quantization: float16 } }\n',
    );
    startWorker('w1', { TLX_TEST_EXPORT_FAIL: '1' });
    const waited = await sweep([file, '--queue', '--wait']);
    assert.equal(waited.exitCode, 1, waited.stderr.slice(-2000));
    assert.deepEqual(
      (await jobs('orphans-')).map((j) => [j.state, j.attempts]),
      [
        ['failed', 1],
        ['failed', 1],
      ],
      'each trial ran once, failing at its export',
    );
    const dirs = [...trialFolders('orphans').entries()].sort().map(([, dir]) => dir);
    assert.equal(dirs.length, 2);
    const featureExtraction = (dir: string) =>
      readMetrics(dir)
        .filter((r) => r.phase !== 'fine_tune')
        .map((r) => [r.epoch, r.loss, r.val_loss]);
    assert.deepEqual(
      featureExtraction(dirs[1]),
      featureExtraction(dirs[0]),
      "the follower started from the leader's feature extraction",
    );
    assert.ok(
      readMetrics(dirs[1]).some((r) => r.phase === 'fine_tune'),
      'and trained its own fine-tuning',
    );
    await stopWorkers();
  });
});
