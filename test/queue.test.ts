import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Queue } from 'bullmq';
import { execa, type ResultPromise } from 'execa';
import { loadExperiment } from '../src/config/load.ts';
import { connect, queueName, trialWorkRoot } from '../src/sweep/queue.ts';
import { runTlx, tlxBin } from './helpers/cli.ts';
import { TestServer } from './helpers/http.ts';
import { writeClassFolders } from './helpers/images.ts';
import { readRunWithMlflow, startMlflowServer, type MlflowServer } from './helpers/mlflow.ts';
import { allEnded, descendantsOf, waitForStderr } from './helpers/process.ts';
import { startRedis, type RedisServer } from './helpers/redis.ts';
import { readMetrics, tinyDataAndModel, writeExperiment } from './helpers/runs.ts';
import { tempDir } from './helpers/tmp.ts';

/**
 * Sweeps across machines, on one: a real redis-server (with a password), a real MLflow
 * server, and `tlx worker` processes, each in a mount namespace of its own (`unshare -m`)
 * where a tmpfs hides the submitter's folders and the other workers': a worker sees nothing
 * but its own folders, the Redis and the MLflow server, as on another machine. Workers use
 * short BullMQ lock timings so that a killed worker's job moves on within seconds.
 */

const work = tempDir('tlx-queue-');
const submitter = path.join(work, 'submitter');
const runsDir = path.join(submitter, 'runs');
const workerNames = ['w1', 'w2', 'w3'];
let redis: RedisServer;
let mlflow: MlflowServer;
const workers: ResultPromise[] = [];

/** Everything a worker may not see: the submitter's folder, the servers' data, the other workers' folders. */
function hiddenFrom(name: string): string[] {
  return [submitter, path.join(work, 'redis'), path.join(work, 'mlflow'), path.join(work, 'local'), path.join(work, 'elsewhere'), ...workerNames.filter((other) => other !== name).map((other) => path.join(work, other))];
}

function workerDir(name: string): string {
  return path.join(work, name);
}

/** `tlx worker` in its own mount namespace, with its own runs folder, cache and temp folder; the queue URL in its environment. */
function startWorker(name: string, env: Record<string, string> = {}): ResultPromise {
  const dir = workerDir(name);
  for (const sub of ['runs', 'cache', 'tmp']) fs.mkdirSync(path.join(dir, sub), { recursive: true });
  const hidden = hiddenFrom(name);
  for (const folder of hidden) fs.mkdirSync(folder, { recursive: true });
  const mounts = hidden.map((folder) => `mount -t tmpfs tmpfs '${folder}'`);
  const script = [...mounts, `exec '${process.execPath}' '${tlxBin}' --runs-dir '${path.join(dir, 'runs')}' worker`].join(' && ');
  const worker = execa('unshare', ['-m', '--propagation', 'private', 'sh', '-c', script], {
    cwd: dir,
    env: { TLX_QUEUE_URL: redis.url, MLFLOW_TRACKING_URI: mlflow.url, TLX_QUEUE_LOCK_MS: '3000', TLX_CACHE_DIR: path.join(dir, 'cache'), TMPDIR: path.join(dir, 'tmp'), ...env },
    reject: false,
  });
  workers.push(worker);
  return worker;
}

async function stopWorkers(): Promise<void> {
  for (const worker of workers.splice(0)) {
    worker.kill('SIGTERM');
    await worker;
  }
}

/** The coordinator, as a user runs it: the queue URL from $TLX_QUEUE_URL (so the password is not in `ps`). */
function sweep(args: string[], env: Record<string, string> = {}) {
  return runTlx(['--runs-dir', runsDir, 'sweep', ...args], { cwd: submitter, env: { TLX_QUEUE_URL: redis.url, MLFLOW_TRACKING_URI: mlflow.url, ...env }, timeout: 600_000 });
}

function experiment(name: string, grid: string, train = 'feature_extraction: { epochs: 2 }, fine_tune: { epochs: 1 }', extra = ''): string {
  return writeExperiment(submitter, name, `seed: 4\n${tinyDataAndModel}train: { ${train} }\ntracking: { mlflow: { experiment: tlx-queue } }\n${extra}sweep:\n  grid:\n${grid}\n`);
}

/** The run folders of a sweep's trials on the workers (a leader's folder may be on several: its copy). */
function trialFolders(sweepName: string): Map<string, string> {
  const found = new Map<string, string>();
  for (const name of workerNames) {
    const dir = path.join(workerDir(name), 'runs');
    if (!fs.existsSync(dir)) continue;
    for (const entry of fs.readdirSync(dir).filter((d) => d.startsWith(`${sweepName}-`) && /-trial-\d+$/.test(d))) if (!found.has(entry)) found.set(entry, path.join(dir, entry));
  }
  return found;
}

/** The numbers each trial computed, by its swept values. */
function trialNumbers(dirs: string[]): Record<string, unknown[]> {
  return Object.fromEntries(
    dirs.map((dir) => {
      const run = JSON.parse(fs.readFileSync(path.join(dir, 'run.json'), 'utf8')) as { trial: Record<string, unknown> };
      return [JSON.stringify(run.trial), readMetrics(dir).map((r) => [r.epoch, r.phase, r.loss, r.val_loss, r.val_accuracy])];
    }),
  );
}

async function jobs(prefix: string): Promise<{ id: string; state: string; attempts: number; reason?: string }[]> {
  const connection = connect(redis.url);
  const queue = new Queue(queueName, { connection });
  try {
    const all = await queue.getJobs(['completed', 'failed', 'active', 'wait', 'delayed', 'waiting-children', 'prioritized']);
    const mine = all.filter((job) => job?.id?.startsWith(prefix));
    return (await Promise.all(mine.map(async (job) => ({ id: job.id!, state: await job.getState(), attempts: job.attemptsMade, reason: job.failedReason })))).sort((a, b) => a.id.localeCompare(b.id));
  } finally {
    await queue.close();
    connection.disconnect();
  }
}

function listTree(dir: string): string[] {
  return fs.existsSync(dir) ? fs.readdirSync(dir, { recursive: true }).map(String).sort() : [];
}

before(async () => {
  await writeClassFolders(path.join(submitter, 'data'), ['ants', 'bees'], 12, { size: 32 });
  redis = await startRedis(path.join(work, 'redis'));
  mlflow = await startMlflowServer({ dataDir: path.join(work, 'mlflow') });
});

after(async () => {
  await stopWorkers();
  await redis?.stop();
  await mlflow?.stop();
});

describe('tlx sweep --queue and tlx worker, sharing nothing but Redis and MLflow', () => {
  test('two workers that cannot see the submitter run a sweep over its local data: the table of a local sweep, number for number; export: best brings the best model home', async () => {
    const grid = '    train.fine_tune.fine_tune_at: [100, 140]\n    seed: [4, 5]';
    const best = 'export: { tflite: { quantization: float16, representative_images: 8, max_accuracy_drop: 1 } }\n';
    const file = experiment('same', `${grid}\n  export: best`, undefined, best);
    const local = await runTlx(['--runs-dir', path.join(work, 'local'), 'sweep', file], { cwd: submitter, timeout: 600_000 });
    assert.equal(local.exitCode, 0, local.stderr.slice(-2000));
    startWorker('w1');
    startWorker('w2');
    const queued = await sweep([file, '--queue', '--wait']);
    assert.equal(queued.exitCode, 0, queued.stderr.slice(-3000));
    assert.match(queued.stderr, /dataset .*data \(24 files, [\d.]+ MiB\): sent to the artifact store as mlflow-artifacts:\/tlx\/datasets\/[0-9a-f]{64}\.tar/);
    assert.match(queued.stderr, /trial \d \(.*\): finished.*\[4\/4\]/);
    assert.ok(!`${queued.stdout}${queued.stderr}`.includes(redis.password), 'the Redis password is never printed');
    const folders = trialFolders('same');
    assert.equal(folders.size, 4, [...folders.keys()].join(', '));
    const localDirs = fs.readdirSync(path.join(work, 'local')).filter((d) => d.includes('-same-')).map((d) => path.join(work, 'local', d));
    assert.deepEqual(trialNumbers([...folders.values()]), trialNumbers(localDirs));
    // The same table: each trial's values, status and metrics, and the same best trial, exported here.
    const results = (dir: string) => {
      const id = fs.readdirSync(path.join(dir, 'sweeps')).find((d) => d.startsWith('same-'))!;
      for (const name of ['results.csv', 'plot.png']) assert.ok(fs.existsSync(path.join(dir, 'sweeps', id, name)), name);
      return JSON.parse(fs.readFileSync(path.join(dir, 'sweeps', id, 'results.json'), 'utf8')) as { best_trial: number; trials: Record<string, unknown>[] };
    };
    const [queuedResults, localResults] = [results(runsDir), results(path.join(work, 'local'))];
    const table = (r: typeof queuedResults) => ({ best: r.best_trial, trials: r.trials.map((t) => [t.trial, t.assignments, t.status, t.best_val_accuracy, t.val_accuracy, t.val_loss]) });
    assert.deepEqual(table(queuedResults), table(localResults));
    assert.deepEqual(queuedResults.trials.map((t) => t.shared_feature_extraction === true).sort(), [false, false, true, true], 'two trials started from their leader\'s feature extraction');
    const bestRow = queuedResults.trials.find((t) => t.trial === queuedResults.best_trial)!;
    assert.ok(fs.existsSync(path.join(bestRow.run_dir as string, 'model.tflite')), 'the best trial\'s model is here');
    assert.ok((bestRow.run_dir as string).startsWith(runsDir));
    assert.equal(queuedResults.trials.filter((t) => t.exported === true).length, 1, 'only the best trial was exported');
    await stopWorkers();
  });

  test('a worker killed mid-trial: another continues the trial from its copy in the artifact store; every epoch once, in its folder and in MLflow', async () => {
    const file = experiment('killed', '    train.fine_tune.fine_tune_at: [120]', 'feature_extraction: { epochs: 16 }, fine_tune: { epochs: 1 }');
    const first = startWorker('w1');
    const enqueued = await sweep([file, '--queue']);
    assert.equal(enqueued.exitCode, 0, enqueued.stderr);
    let dir = '';
    for (let i = 0; i < 600 && !(dir && fs.existsSync(path.join(dir, 'metrics.jsonl')) && readMetrics(dir).length > 3); i++) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      dir = [...trialFolders('killed').values()][0] ?? '';
    }
    assert.ok(dir.startsWith(workerDir('w1')), 'the trial started on w1');
    const trialProcesses = descendantsOf(first.pid!, '__trial');
    assert.ok(trialProcesses.length > 0, 'the trial runs in a child process');
    first.kill('SIGKILL');
    const killedAt = Date.now();
    await first;
    workers.splice(workers.indexOf(first), 1);
    assert.ok(await allEnded(trialProcesses), 'the trial process died with its worker');
    const epochsAtKill = readMetrics(dir).length;
    const second = startWorker('w2');
    const continued = await waitForStderr(second, /continuing from the checkpoint of epoch \d+/, 120_000);
    console.log(`# takeover: ${((Date.now() - killedAt) / 1000).toFixed(1)} s from SIGKILL to the other worker continuing the trial (${continued.match(/epoch \d+/)?.[0]})`);
    const waited = await sweep([file, '--queue', '--wait']);
    assert.equal(waited.exitCode, 0, waited.stderr.slice(-2000));
    const taken = path.join(workerDir('w2'), 'runs', path.basename(dir));
    const epochs = readMetrics(taken).map((r) => r.epoch);
    assert.deepEqual(epochs, Array.from({ length: 18 }, (_, i) => i), 'every epoch once in the folder');
    assert.ok(epochsAtKill > 3 && epochsAtKill < 18);
    const mlflowRun = (JSON.parse(fs.readFileSync(path.join(taken, 'mlflow.json'), 'utf8')) as { servers: Record<string, { run_id: string }> }).servers[mlflow.url].run_id;
    const remote = await readRunWithMlflow(mlflow.url, mlflowRun, ['val_loss']);
    assert.deepEqual(remote.histories.val_loss.map((m) => m.step).sort((a, b) => a - b), epochs, 'each epoch once in MLflow');
    await stopWorkers();
  });

  test('a trial killed halfway through saving its copy: the next attempt continues from the last whole copy; every epoch once', async () => {
    const file = experiment('torn', '    train.fine_tune.fine_tune_at: [120]', 'feature_extraction: { epochs: 12 }, fine_tune: { epochs: 1 }');
    // The trial process dies after putting an object of a copy, before the manifest that names it.
    const first = startWorker('w1', { TLX_TEST_KILL_AT: 'mirror.object-saved@14' });
    assert.equal((await sweep([file, '--queue'])).exitCode, 0);
    await waitForStderr(first, /the trial process was killed \(SIGKILL\)/, 240_000);
    first.kill('SIGTERM');
    await first;
    workers.splice(workers.indexOf(first), 1);
    const second = startWorker('w2');
    await waitForStderr(second, /continuing from the checkpoint of epoch \d+/, 120_000);
    const waited = await sweep([file, '--queue', '--wait']);
    assert.equal(waited.exitCode, 0, waited.stderr.slice(-2000));
    const dir = path.join(workerDir('w2'), 'runs', [...trialFolders('torn').keys()][0]);
    const epochs = readMetrics(dir).map((r) => r.epoch);
    assert.deepEqual(epochs, Array.from({ length: 14 }, (_, i) => i), 'every epoch once in the folder');
    const mlflowRun = (JSON.parse(fs.readFileSync(path.join(dir, 'mlflow.json'), 'utf8')) as { servers: Record<string, { run_id: string }> }).servers[mlflow.url].run_id;
    const remote = await readRunWithMlflow(mlflow.url, mlflowRun, ['val_loss']);
    assert.deepEqual(remote.histories.val_loss.map((m) => m.step).sort((a, b) => a - b), epochs, 'each epoch once in MLflow');
    await stopWorkers();
  });

  test('hostile jobs fail at once with their reason, change nothing outside the worker\'s folders, and the worker then finishes a valid sweep', async () => {
    const valid = { sweepId: 'hostile-0123456789', trial: 0, assignments: {}, exportModel: false, followers: [], config: JSON.parse(JSON.stringify(validConfig())) };
    const sentinel = path.join(work, 'sentinel');
    fs.mkdirSync(sentinel, { recursive: true });
    fs.writeFileSync(path.join(sentinel, 'keep.txt'), 'keep');
    const hostile: Record<string, { data: unknown; reason: RegExp }> = {
      traversal: { data: { ...valid, sweepId: '../../tmp/escape-0123456789' }, reason: /sweepId: expected <experiment name>-<10 hex digits>/ },
      'foreign-path': { data: { ...valid, trial: 1, config: { ...valid.config, dataset: { ...withoutUrl(valid.config.dataset), path: '/etc' } } }, reason: /dataset\.path: a job may not name a folder/ },
      'file-url': { data: { ...valid, trial: 2, config: { ...valid.config, dataset: { ...valid.config.dataset, url: 'file:///etc/hosts.zip' } } }, reason: /dataset\.url: a job may not name a file: URL/ },
      'weights-file': { data: { ...valid, trial: 3, config: { ...valid.config, model: { ...valid.config.model, weights: sentinel } } }, reason: /model\.weights: a job may not name a file/ },
      'prototype-keys': { data: JSON.parse(JSON.stringify({ ...valid, trial: 4 }).replace('"assignments":{}', '"assignments":{"__proto__":{"polluted":1}}')), reason: /the key "__proto__" is not allowed \(at assignments\.__proto__\)/ },
      'invalid-config': { data: { ...valid, trial: 5, config: { ...valid.config, train: { ...valid.config.train, fine_tune: { ...valid.config.train.fine_tune, fine_tune_at: 99_999 } } } }, reason: /invalid config: train\.fine_tune\.fine_tune_at: found 99999, expected at most 154/ },
      'not-json': { data: valid, reason: /its data is not JSON/ },
    };
    const connection = connect(redis.url);
    const queue = new Queue(queueName, { connection });
    try {
      for (const [name, job] of Object.entries(hostile)) await queue.add('trial', job.data, { jobId: `hostile.${name}`, attempts: 3, removeOnFail: false });
      await connection.hset(`bull:${queueName}:hostile.not-json`, 'data', '{"sweepId": "hostile-0123456789", not json');
    } finally {
      await queue.close();
      connection.disconnect();
    }
    const before = listTree(sentinel);
    const worker = startWorker('w3');
    const states = async () => {
      const connection = connect(redis.url);
      const queue = new Queue(queueName, { connection });
      try {
        return await Promise.all(Object.keys(hostile).map((name) => queue.getJobState(`hostile.${name}`)));
      } finally {
        await queue.close();
        connection.disconnect();
      }
    };
    for (let i = 0; i < 300 && (await states()).some((state) => state !== 'failed'); i++) await new Promise((resolve) => setTimeout(resolve, 200));
    const outcomes = await jobs('hostile.');
    assert.equal(outcomes.length, Object.keys(hostile).length);
    for (const outcome of outcomes) {
      const name = outcome.id.slice('hostile.'.length);
      assert.equal(outcome.state, 'failed', name);
      assert.equal(outcome.attempts, 1, `${name}: failed at once, not retried`);
      assert.match(outcome.reason ?? '', hostile[name].reason, name);
      assert.ok(!/passwd|shadow|hostname/.test(outcome.reason ?? ''), `${name}: no listing of a folder in the reason`);
    }
    assert.deepEqual(listTree(sentinel), before, 'nothing outside the worker\'s folders changed');
    assert.deepEqual(listTree(path.join(workerDir('w3'), 'runs')).filter((name) => name.includes('hostile')), [], 'no folder for a refused job');
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    // The worker goes on: a valid sweep finishes on it.
    const file = experiment('after-hostile', '    train.fine_tune.fine_tune_at: [100]');
    const waited = await sweep([file, '--queue', '--wait']);
    assert.equal(waited.exitCode, 0, waited.stderr.slice(-2000));
    assert.equal(worker.exitCode, null, 'the worker still runs');
    await stopWorkers();
  });

  test('the same command again, and a second coordinator, enqueue nothing twice; --set sweep keys join a --grid', async () => {
    const file = writeExperiment(submitter, 'attach', `seed: 4\n${tinyDataAndModel}train: { feature_extraction: { epochs: 2 }, fine_tune: { epochs: 1 } }\n`);
    const args = [file, '--grid', 'train.fine_tune.fine_tune_at=100,120,140', '--set', 'sweep.export=none', '--queue'];
    // A second coordinator on another machine: its own runs folder, the same queue.
    const elsewhere = runTlx(['--runs-dir', path.join(work, 'elsewhere'), 'sweep', ...args], { cwd: submitter, env: { TLX_QUEUE_URL: redis.url, MLFLOW_TRACKING_URI: mlflow.url } });
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
    assert.deepEqual(all.map((j) => j.id.replace(/^.*\./, '')), ['trial-0', 'trial-1', 'trial-2'], 'one job per trial');
    assert.ok(all.every((j) => j.state === 'completed'));
    const status = await runTlx(['--runs-dir', runsDir, '--json', 'sweep', 'status', all[0].id.split('.')[0], '--queue'], { cwd: submitter, env: { TLX_QUEUE_URL: redis.url, MLFLOW_TRACKING_URI: mlflow.url } });
    assert.equal(status.exitCode, 0, status.stderr);
    assert.deepEqual((JSON.parse(status.stdout) as { trials: { status: string }[] }).trials.map((t) => t.status), ['finished', 'finished', 'finished']);
    await stopWorkers();
  });

  test('Redis restarted mid-sweep: no job is lost, the worker reconnects, the sweep finishes', async () => {
    const file = experiment('restart', '    seed: [4, 5]', 'feature_extraction: { epochs: 8 }, fine_tune: { epochs: 1 }');
    startWorker('w1');
    const enqueued = await sweep([file, '--queue']);
    assert.equal(enqueued.exitCode, 0, enqueued.stderr);
    for (let i = 0; i < 600 && trialFolders('restart').size === 0; i++) await new Promise((resolve) => setTimeout(resolve, 200));
    await redis.restart();
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
      assert.deepEqual(states.map((j) => j.state), ['completed', 'failed']);
      assert.equal(states[1].attempts, 1, 'one attempt, no retries');
      assert.match(states[1].reason ?? '', /missing-weights\.h5 failed: HTTP 404/);
      assert.match(waited.stdout, /failed/);
    } finally {
      await server.stop();
      await stopWorkers();
    }
  });

  test("a group leader whose export fails still hands its feature extraction on: the other trials run and the sweep ends", async () => {
    const file = experiment('orphans', '    train.fine_tune.fine_tune_at: [100, 140]', undefined, 'export: { tflite: { quantization: float16 } }\n');
    startWorker('w1', { TLX_TEST_EXPORT_FAIL: '1' });
    const waited = await sweep([file, '--queue', '--wait']);
    assert.equal(waited.exitCode, 1, waited.stderr.slice(-2000));
    assert.deepEqual((await jobs('orphans-')).map((j) => [j.state, j.attempts]), [['failed', 1], ['failed', 1]], 'each trial ran once, failing at its export');
    const dirs = [...trialFolders('orphans').entries()].sort().map(([, dir]) => dir);
    assert.equal(dirs.length, 2);
    const featureExtraction = (dir: string) => readMetrics(dir).filter((r) => r.phase !== 'fine_tune').map((r) => [r.epoch, r.loss, r.val_loss]);
    assert.deepEqual(featureExtraction(dirs[1]), featureExtraction(dirs[0]), "the follower started from the leader's feature extraction");
    assert.ok(readMetrics(dirs[1]).some((r) => r.phase === 'fine_tune'), 'and trained its own fine-tuning');
    await stopWorkers();
  });

  test('an idle worker stops on SIGTERM within seconds, even while Redis is unreachable; a killed worker\'s trial folder is removed by the next', async () => {
    const lonely = await startRedis(path.join(work, 'redis-lonely'));
    const worker = execa(process.execPath, [tlxBin, '--runs-dir', path.join(workerDir('w1'), 'runs'), 'worker'], { cwd: workerDir('w1'), env: { TLX_QUEUE_URL: lonely.url, MLFLOW_TRACKING_URI: mlflow.url }, reject: false });
    await waitForStderr(worker, /worker ready/);
    await lonely.stop();
    await waitForStderr(worker, /queue connection problem/);
    const signalled = Date.now();
    worker.kill('SIGTERM');
    const ended = await Promise.race([worker, new Promise<'hung'>((resolve) => setTimeout(() => resolve('hung'), 30_000))]);
    if (ended === 'hung') worker.kill('SIGKILL');
    assert.notEqual(ended, 'hung', 'the worker was still running 30 s after SIGTERM');
    const { exitCode, signal, stderr } = await worker;
    // execa sends SIGKILL 5 s after SIGTERM: a worker held open by a leftover timer shows as signal SIGKILL here.
    assert.equal(exitCode, 0, `signal ${signal}; stderr: ${String(stderr).slice(-1500)}`);
    assert.ok(Date.now() - signalled < 4_000, `stopped ${Date.now() - signalled} ms after SIGTERM`);
    assert.match(String(stderr), /worker stopped/);
    // What the worker killed in the earlier test left in its own temp folder is gone once a worker ran a trial there.
    const leftovers = fs.existsSync(trialWorkRoot(path.join(workerDir('w1'), 'tmp'))) ? fs.readdirSync(trialWorkRoot(path.join(workerDir('w1'), 'tmp'))) : [];
    assert.deepEqual(leftovers, []);
  });
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
