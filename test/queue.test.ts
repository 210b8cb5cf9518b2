import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { loadExperiment } from '../src/config/load.ts';
import { createRunFolder } from '../src/run/run.ts';
import { TrialMirror } from '../src/sweep/mirror.ts';
import { queueName, trialWorkRoot } from '../src/sweep/queue.ts';
import { MlflowClient } from '../src/track/mlflow-client.ts';
import { runTlx, tlxBin } from './helpers/cli.ts';
import { readRunWithMlflow } from './helpers/mlflow.ts';
import { allEnded, descendantsOf, waitForStderr } from './helpers/process.ts';
import { QueueLab, trialNumbers } from './helpers/queue-lab.ts';
import { startRedis } from './helpers/redis.ts';
import { readMetrics, tinyDataAndModel, writeExperiment } from './helpers/runs.ts';

/**
 * Sweeps across machines that share nothing but Redis and MLflow (helpers/queue-lab.ts: each
 * worker in a mount namespace of its own): the same table as a local sweep, a worker killed
 * mid-trial, a trial killed halfway through saving its copy, hostile jobs, an idle worker's
 * stop. Queue faults (attaching, Redis restarts, failing trials): queue-faults.test.ts.
 */

const lab = new QueueLab('tlx-queue-');
const { submitter, runsDir, work } = lab;
const startWorker = (name: string, env?: Record<string, string>) => lab.startWorker(name, env);
const stopWorkers = () => lab.stopWorkers();
const sweep = (args: string[], env?: Record<string, string>) => lab.sweep(args, env);
const experiment = (name: string, grid: string, train?: string, extra?: string) =>
  lab.experiment(name, grid, train, extra);
const trialFolders = (sweepName: string) => lab.trialFolders(sweepName);
const workerDir = (name: string) => lab.workerDir(name);
const jobs = (prefix: string) => lab.jobs(prefix);

function listTree(dir: string): string[] {
  return fs.existsSync(dir) ? fs.readdirSync(dir, { recursive: true }).map(String).sort() : [];
}

before(() => lab.start());
after(() => lab.stop());

describe('tlx sweep --queue and tlx worker, sharing nothing but Redis and MLflow', () => {
  // A failed test's workers would take the next test's jobs: every test starts with none.
  afterEach(() => lab.stopWorkers());

  test('two workers that cannot see the submitter run a sweep over its local data: the table of a local sweep, number for number; export: best brings the best model home', async () => {
    const grid = '    train.fine_tune.fine_tune_at: [100, 140]\n    seed: [4, 5]';
    const best = 'export: { tflite: { quantization: float16, representative_images: 8, max_accuracy_drop: 1 } }\n';
    const file = lab.experiment(
      'same',
      // A budget every trial fits: its measurement goes through the same engine (one export, the best's, here).
      `${grid}\n  export: best\n  constraints: { max_macs: 1000000000 }`,
      undefined,
      best,
      'experiment: tlx-queue, register_model: queued-classifier',
    );
    const local = await runTlx(['--runs-dir', path.join(work, 'local'), 'sweep', file], {
      cwd: submitter,
      timeout: 600_000,
    });
    assert.equal(local.exitCode, 0, local.stderr.slice(-2000));
    // The workers as users start them: a trial's copy saved at most every 30 s (these trials take a second or two).
    lab.startWorker('w1', {}, []);
    lab.startWorker('w2', {}, []);
    const queued = await sweep([file, '--queue', '--wait']);
    assert.equal(queued.exitCode, 0, queued.stderr.slice(-3000));
    assert.match(
      queued.stderr,
      /dataset .*data \(24 files, [\d.]+ MiB\): sent to the artifact store as mlflow-artifacts:\/tlx\/datasets\/[0-9a-f]{64}\.tar/,
    );
    assert.match(queued.stderr, /trial \d \(.*\): finished.*\[4\/4\]/);
    assert.ok(!`${queued.stdout}${queued.stderr}`.includes(lab.redis.password), 'the Redis password is never printed');
    const folders = trialFolders('same');
    assert.equal(folders.size, 4, [...folders.keys()].join(', '));
    const localDirs = fs
      .readdirSync(path.join(work, 'local'))
      .filter((d) => d.includes('-same-'))
      .map((d) => path.join(work, 'local', d));
    assert.deepEqual(trialNumbers([...folders.values()]), trialNumbers(localDirs));
    // A leader's copy that a follower brought to the other worker was saved before MLflow heard of
    // the run's last epochs (the copy goes first), maybe before it heard of any (no mlflow.json):
    // the folder that ran the trial knows its MLflow run, and every folder that names one agrees with it.
    for (const [trial, dirs] of lab.trialCopies('same')) {
      const runs = dirs.flatMap((dir) => {
        const file = path.join(dir, 'mlflow.json');
        if (!fs.existsSync(file)) return [];
        const state = JSON.parse(fs.readFileSync(file, 'utf8')) as { servers: Record<string, { run_id: string }> };
        const run = state.servers[lab.mlflow.url]?.run_id;
        return run ? [{ dir, run }] : [];
      });
      assert.ok(runs.length > 0, `${trial}: a folder that knows its MLflow run (${dirs.join(', ')})`);
      for (const { dir, run } of runs) {
        const remote = await readRunWithMlflow(lab.mlflow.url, run, ['val_loss']);
        assert.deepEqual(
          remote.histories.val_loss.map((m) => m.step).sort((a, b) => a - b),
          readMetrics(dir).map((r) => r.epoch),
          `${dir}: every epoch once in MLflow`,
        );
      }
    }
    // The same table: each trial's values, status and metrics, and the same best trial, exported here.
    const results = (dir: string) => {
      const id = fs.readdirSync(path.join(dir, 'sweeps')).find((d) => d.startsWith('same-'))!;
      for (const name of ['results.csv', 'plot.png'])
        assert.ok(fs.existsSync(path.join(dir, 'sweeps', id, name)), name);
      return JSON.parse(fs.readFileSync(path.join(dir, 'sweeps', id, 'results.json'), 'utf8')) as {
        best_trial: number;
        trials: Record<string, unknown>[];
      };
    };
    const [queuedResults, localResults] = [results(runsDir), results(path.join(work, 'local'))];
    const table = (r: typeof queuedResults) => ({
      best: r.best_trial,
      trials: r.trials.map((t) => [t.trial, t.assignments, t.status, t.best_val_accuracy, t.val_accuracy, t.val_loss]),
    });
    assert.deepEqual(table(queuedResults), table(localResults));
    assert.deepEqual(
      queuedResults.trials.map((t) => t.shared_feature_extraction === true).sort(),
      [false, false, true, true],
      "two trials started from their leader's feature extraction",
    );
    const bestRow = queuedResults.trials.find((t) => t.trial === queuedResults.best_trial)!;
    assert.ok(fs.existsSync(path.join(bestRow.run_dir as string, 'model.tflite')), "the best trial's model is here");
    assert.ok((bestRow.run_dir as string).startsWith(runsDir));
    assert.equal(queuedResults.trials.filter((t) => t.exported === true).length, 1, 'only the best trial was exported');
    assert.deepEqual(
      queuedResults.trials.map((t) => [t.budget, t.footprint_trial]),
      queuedResults.trials.map(() => ['within', queuedResults.best_trial]),
      "one architecture: every trial judged on the best trial's export",
    );
    // Each worker fetched the shipped data once, into the cache its --cache-dir names.
    const cached = (name: string, cache: string) =>
      fs.existsSync(path.join(workerDir(name), cache, 'downloads'))
        ? fs
            .readdirSync(path.join(workerDir(name), cache, 'downloads'), { recursive: true })
            .map(String)
            .filter((f) => f.endsWith('.tar'))
        : [];
    assert.ok(cached('w1', 'cache').length + cached('w2', 'cache').length >= 1, "the data is in a worker's cache");
    assert.deepEqual([...cached('w1', 'not-the-cache'), ...cached('w2', 'not-the-cache')], []);
    const versions = await new MlflowClient({ trackingUri: lab.mlflow.url }).searchModelVersions(
      "name='queued-classifier'",
    );
    assert.equal(versions.length, 1, "the best trial's model is registered, once");
    await stopWorkers();
  });

  test('a worker killed mid-trial: another continues the trial from its copy in the artifact store; every epoch once, in its folder and in MLflow', async () => {
    const file = experiment(
      'killed',
      '    train.fine_tune.fine_tune_at: [120]',
      'feature_extraction: { epochs: 16 }, fine_tune: { epochs: 1 }',
    );
    const first = startWorker('w1');
    const enqueued = await sweep([file, '--queue']);
    assert.equal(enqueued.exitCode, 0, enqueued.stderr);
    let dir = '';
    for (
      let i = 0;
      i < 600 && !(dir && fs.existsSync(path.join(dir, 'metrics.jsonl')) && readMetrics(dir).length > 3);
      i++
    ) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      dir = [...trialFolders('killed').values()][0] ?? '';
    }
    assert.ok(dir.startsWith(workerDir('w1')), 'the trial started on w1');
    const trialProcesses = descendantsOf(first.pid!, '__trial');
    assert.ok(trialProcesses.length > 0, 'the trial runs in a child process');
    first.kill('SIGKILL');
    const killedAt = Date.now();
    await first;
    lab.forget(first);
    assert.ok(await allEnded(trialProcesses, 5000), 'the trial process died with its worker (within 5 s)');
    const epochsAtKill = readMetrics(dir).length;
    const second = startWorker('w2');
    const continued = await waitForStderr(second, /continuing from the checkpoint of epoch \d+/, 120_000);
    console.log(
      `# takeover: ${((Date.now() - killedAt) / 1000).toFixed(1)} s from SIGKILL to the other worker continuing the trial (${continued.match(/epoch \d+/)?.[0]})`,
    );
    const waited = await sweep([file, '--queue', '--wait']);
    assert.equal(waited.exitCode, 0, waited.stderr.slice(-2000));
    const taken = path.join(workerDir('w2'), 'runs', path.basename(dir));
    const epochs = readMetrics(taken).map((r) => r.epoch);
    assert.deepEqual(
      epochs,
      Array.from({ length: 18 }, (_, i) => i),
      'every epoch once in the folder',
    );
    assert.ok(epochsAtKill > 3 && epochsAtKill < 18);
    const mlflowRun = (
      JSON.parse(fs.readFileSync(path.join(taken, 'mlflow.json'), 'utf8')) as {
        servers: Record<string, { run_id: string }>;
      }
    ).servers[lab.mlflow.url].run_id;
    const remote = await readRunWithMlflow(lab.mlflow.url, mlflowRun, ['val_loss']);
    assert.deepEqual(
      remote.histories.val_loss.map((m) => m.step).sort((a, b) => a - b),
      epochs,
      'each epoch once in MLflow',
    );
    await stopWorkers();
  });

  test('a trial killed halfway through saving its copy: the next attempt continues from the last whole copy; every epoch once', async () => {
    const file = experiment(
      'torn',
      '    train.fine_tune.fine_tune_at: [120]',
      'feature_extraction: { epochs: 12 }, fine_tune: { epochs: 1 }',
    );
    // The trial process dies after putting an object of a copy, before the manifest that names it.
    const first = startWorker('w1', { TLX_TEST_KILL_AT: 'mirror.object-saved@14' });
    assert.equal((await sweep([file, '--queue'])).exitCode, 0);
    await waitForStderr(first, /the trial process was killed \(SIGKILL\)/, 240_000);
    first.kill('SIGTERM');
    await first;
    lab.forget(first);
    const second = startWorker('w2');
    await waitForStderr(second, /continuing from the checkpoint of epoch \d+/, 120_000);
    const waited = await sweep([file, '--queue', '--wait']);
    assert.equal(waited.exitCode, 0, waited.stderr.slice(-2000));
    const dir = path.join(workerDir('w2'), 'runs', [...trialFolders('torn').keys()][0]);
    const epochs = readMetrics(dir).map((r) => r.epoch);
    assert.deepEqual(
      epochs,
      Array.from({ length: 14 }, (_, i) => i),
      'every epoch once in the folder',
    );
    const mlflowRun = (
      JSON.parse(fs.readFileSync(path.join(dir, 'mlflow.json'), 'utf8')) as {
        servers: Record<string, { run_id: string }>;
      }
    ).servers[lab.mlflow.url].run_id;
    const remote = await readRunWithMlflow(lab.mlflow.url, mlflowRun, ['val_loss']);
    assert.deepEqual(
      remote.histories.val_loss.map((m) => m.step).sort((a, b) => a - b),
      epochs,
      'each epoch once in MLflow',
    );
    await stopWorkers();
  });

  test("hostile jobs fail at once with their reason, change nothing outside the worker's folders, and the worker then finishes a valid sweep", async () => {
    const valid = {
      sweepId: 'hostile-0123456789',
      trial: 0,
      assignments: {},
      exportModel: false,
      followers: [],
      config: JSON.parse(JSON.stringify(validConfig())),
    };
    const sentinel = path.join(work, 'sentinel');
    fs.mkdirSync(sentinel, { recursive: true });
    fs.writeFileSync(path.join(sentinel, 'keep.txt'), 'keep');
    const hostile: Record<string, { data: unknown; reason: RegExp }> = {
      traversal: {
        data: { ...valid, sweepId: '../../tmp/escape-0123456789' },
        reason: /sweepId: expected <experiment name>-<10 hex digits>/,
      },
      'foreign-path': {
        data: {
          ...valid,
          trial: 1,
          config: { ...valid.config, dataset: { ...withoutUrl(valid.config.dataset), path: '/etc' } },
        },
        reason: /dataset\.path: a job may not name a folder/,
      },
      'file-url': {
        data: {
          ...valid,
          trial: 2,
          config: { ...valid.config, dataset: { ...valid.config.dataset, url: 'file:///etc/hosts.zip' } },
        },
        reason: /dataset\.url: a job may not name a file: URL/,
      },
      'weights-file': {
        data: { ...valid, trial: 3, config: { ...valid.config, model: { ...valid.config.model, weights: sentinel } } },
        reason: /model\.weights: a job may not name a file/,
      },
      'prototype-keys': {
        data: JSON.parse(
          JSON.stringify({ ...valid, trial: 4 }).replace(
            '"assignments":{}',
            '"assignments":{"__proto__":{"polluted":1}}',
          ),
        ),
        reason: /the key "__proto__" is not allowed \(at assignments\.__proto__\)/,
      },
      'invalid-config': {
        data: {
          ...valid,
          trial: 5,
          config: {
            ...valid.config,
            train: { ...valid.config.train, fine_tune: { ...valid.config.train.fine_tune, fine_tune_at: 99_999 } },
          },
        },
        reason: /invalid config: train\.fine_tune\.fine_tune_at: found 99999, expected at most 154/,
      },
      'not-json': { data: valid, reason: /its data is not JSON/ },
    };
    await lab.withQueue(async (queue, connection) => {
      for (const [name, job] of Object.entries(hostile))
        await queue.add('trial', job.data, { jobId: `hostile.${name}`, attempts: 3, removeOnFail: false });
      await connection.hset(`bull:${queueName}:hostile.not-json`, 'data', '{"sweepId": "hostile-0123456789", not json');
    });
    const before = listTree(sentinel);
    const worker = startWorker('w3');
    const states = () =>
      lab.withQueue((queue) => Promise.all(Object.keys(hostile).map((name) => queue.getJobState(`hostile.${name}`))));
    for (let i = 0; i < 300 && (await states()).some((state) => state !== 'failed'); i++)
      await new Promise((resolve) => setTimeout(resolve, 200));
    const outcomes = await jobs('hostile.');
    assert.equal(outcomes.length, Object.keys(hostile).length);
    for (const outcome of outcomes) {
      const name = outcome.id.slice('hostile.'.length);
      assert.equal(outcome.state, 'failed', name);
      assert.equal(outcome.attempts, 1, `${name}: failed at once, not retried`);
      assert.match(outcome.reason ?? '', hostile[name].reason, name);
      assert.ok(!/passwd|shadow|hostname/.test(outcome.reason ?? ''), `${name}: no listing of a folder in the reason`);
    }
    assert.deepEqual(listTree(sentinel), before, "nothing outside the worker's folders changed");
    assert.deepEqual(
      listTree(path.join(workerDir('w3'), 'runs')).filter((name) => name.includes('hostile')),
      [],
      'no folder for a refused job',
    );
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    // The worker goes on: a valid sweep finishes on it.
    const file = experiment('after-hostile', '    train.fine_tune.fine_tune_at: [100]');
    const waited = await sweep([file, '--queue', '--wait']);
    assert.equal(waited.exitCode, 0, waited.stderr.slice(-2000));
    assert.equal(worker.exitCode, null, 'the worker still runs');
    await stopWorkers();
  });

  test("a trial's copy is saved after its first epoch, then at most every interval; a restore brings back what was saved", async () => {
    const experimentFile = writeExperiment(submitter, 'copied', `seed: 4\n${tinyDataAndModel}`);
    const folder = createRunFolder(loadExperiment(experimentFile), path.join(work, 'copied'));
    const client = new MlflowClient({ trackingUri: lab.mlflow.url });
    const mirror = TrialMirror.of(client, 'copied-0123456789', 0, 3600);
    assert.equal(await mirror.save(folder, false), true, 'the first epoch is saved before an interval has passed');
    folder.writeRun({ ...folder.readRun(), status: 'FINISHED' });
    assert.equal(await mirror.save(folder, false), false, 'the next is not: the interval has not passed');
    const restored = await TrialMirror.of(client, 'copied-0123456789', 0).restore(
      path.join(work, 'restored'),
      folder.id,
    );
    assert.equal(restored?.readRun().status, 'RUNNING', 'the copy is the first save');
    assert.equal(await mirror.save(folder, true), true, 'the final save always happens');
    const final = await TrialMirror.of(client, 'copied-0123456789', 0).restore(path.join(work, 'restored'), folder.id);
    assert.equal(final?.readRun().status, 'FINISHED');
  });

  for (const signal of ['SIGTERM', 'SIGHUP'] as const) {
    test(`an idle worker stops on ${signal} within seconds (exit 0: a service's normal end), even while Redis is unreachable; a killed worker's trial folder is removed by the next`, async () => {
      const lonely = await startRedis(path.join(work, `redis-lonely-${signal}`));
      const worker = execa(process.execPath, [tlxBin, '--runs-dir', path.join(workerDir('w1'), 'runs'), 'worker'], {
        cwd: workerDir('w1'),
        env: { TLX_QUEUE_URL: lonely.url, MLFLOW_TRACKING_URI: lab.mlflow.url },
        reject: false,
      });
      await waitForStderr(worker, /worker ready/);
      await lonely.stop();
      await waitForStderr(worker, /queue connection problem/);
      const signalled = Date.now();
      worker.kill(signal);
      const ended = await Promise.race([
        worker,
        new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 30_000)),
      ]);
      if (ended === 'hung') worker.kill('SIGKILL');
      assert.notEqual(ended, 'hung', `the worker was still running 30 s after ${signal}`);
      const { exitCode, signal: endSignal, stderr } = await worker;
      // execa sends SIGKILL 5 s after SIGTERM: a worker held open by a leftover timer shows as signal SIGKILL here.
      assert.equal(exitCode, 0, `signal ${endSignal}; stderr: ${String(stderr).slice(-1500)}`);
      assert.ok(Date.now() - signalled < 4_000, `stopped ${Date.now() - signalled} ms after ${signal}`);
      assert.match(String(stderr), /worker stopped/);
      // What the worker killed in the earlier test left in its own temp folder is gone once a worker ran a trial there.
      const leftovers = fs.existsSync(trialWorkRoot(path.join(workerDir('w1'), 'tmp')))
        ? fs.readdirSync(trialWorkRoot(path.join(workerDir('w1'), 'tmp')))
        : [];
      assert.deepEqual(leftovers, []);
    });
  }
});

/** A resolved config a worker accepts: the tiny experiment's, its data named as the coordinator sends it. */
function validConfig() {
  const { config } = loadExperiment(writeExperiment(submitter, 'hostile', `seed: 4\n${tinyDataAndModel}`));
  const { path: _path, ...dataset } = config.dataset;
  return { ...config, dataset: { ...dataset, url: 'mlflow-artifacts:/tlx/datasets/none.tar', subdir: '.' } };
}

function withoutUrl<T extends { url?: string }>(dataset: T): Omit<T, 'url'> {
  const { url: _url, ...rest } = dataset;
  return rest;
}
