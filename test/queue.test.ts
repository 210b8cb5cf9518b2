import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Queue } from 'bullmq';
import { execa, type ResultPromise } from 'execa';
import { connect, queueName, trialWorkRoot } from '../src/sweep/queue.ts';
import { runTlx, tlxBin } from './helpers/cli.ts';
import { writeClassFolders } from './helpers/images.ts';
import { readRunWithMlflow, startMlflowServer, type MlflowServer } from './helpers/mlflow.ts';
import { allEnded, descendantsOf, waitForStderr } from './helpers/process.ts';
import { startRedis, type RedisServer } from './helpers/redis.ts';
import { mlflowState, readMetrics, tinyDataAndModel, writeExperiment } from './helpers/runs.ts';
import { tempDir } from './helpers/tmp.ts';

/**
 * Sweeps across machines, on one: a real redis-server, a real MLflow server, and `tlx worker`
 * processes, each running its trials in child processes. Workers use short BullMQ lock
 * timings so that a killed worker's job moves on within seconds.
 */

const work = tempDir('tlx-queue-');
const artifacts = path.join(work, 'shared');
let redis: RedisServer;
let mlflow: MlflowServer;
const workers: ResultPromise[] = [];
// Workers' own temp folder, to see what a killed one leaves behind.
const workerTmp = path.join(work, 'tmp');
fs.mkdirSync(workerTmp, { recursive: true });
const workerEnv = () => ({ TLX_QUEUE_LOCK_MS: '3000', MLFLOW_TRACKING_URI: mlflow.url, TMPDIR: workerTmp });
const trialFoldersOf = (pid: number | undefined) => {
  const root = trialWorkRoot(workerTmp);
  return fs.existsSync(root) ? fs.readdirSync(root).filter((name) => name.includes(`.tmp-${pid}-`)) : [];
};

function startWorker(): ResultPromise {
  const worker = execa(process.execPath, [tlxBin, '--runs-dir', artifacts, 'worker', '--queue', redis.url], { cwd: work, env: workerEnv(), reject: false });
  workers.push(worker);
  return worker;
}

async function stopWorkers(): Promise<void> {
  for (const worker of workers.splice(0)) {
    worker.kill('SIGTERM');
    await worker;
  }
}

function sweepFile(name: string, grid: string, train = 'feature_extraction: { epochs: 2 }, fine_tune: { epochs: 1 }'): string {
  return writeExperiment(work, name, `seed: 4\n${tinyDataAndModel}train: { ${train} }\ntracking: { mlflow: { experiment: tlx-queue } }\nsweep:\n  grid:\n${grid}\n`);
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

async function jobs(): Promise<{ id: string; state: string; attempts: number }[]> {
  const connection = connect(redis.url);
  const queue = new Queue(queueName, { connection });
  try {
    const all = await queue.getJobs(['completed', 'failed', 'active', 'wait', 'delayed', 'waiting-children']);
    return Promise.all(all.map(async (job) => ({ id: job.id!, state: await job.getState(), attempts: job.attemptsMade })));
  } finally {
    await queue.close();
    connection.disconnect();
  }
}

before(async () => {
  await writeClassFolders(path.join(work, 'data'), ['ants', 'bees'], 12, { size: 32 });
  redis = await startRedis(path.join(work, 'redis'));
  mlflow = await startMlflowServer({ dataDir: path.join(work, 'mlflow') });
});

after(async () => {
  await stopWorkers();
  await redis?.stop();
  await mlflow?.stop();
});

describe('tlx sweep --queue and tlx worker', () => {
  test('two workers give the same table as a local sweep, number for number', async () => {
    const grid = '    train.fine_tune.fine_tune_at: [100, 140]\n    seed: [4, 5]';
    const local = await runTlx(['--runs-dir', path.join(work, 'local'), 'sweep', sweepFile('same', grid)], { cwd: work, env: { MLFLOW_TRACKING_URI: mlflow.url } });
    assert.equal(local.exitCode, 0, local.stderr.slice(-2000));
    startWorker();
    startWorker();
    const queued = await runTlx(['--runs-dir', artifacts, 'sweep', sweepFile('same', grid), '--queue', redis.url, '--wait'], { cwd: work, env: { MLFLOW_TRACKING_URI: mlflow.url }, timeout: 600_000 });
    assert.equal(queued.exitCode, 0, queued.stderr.slice(-2000));
    assert.match(queued.stderr, /trial \d \(.*\): finished.*\[4\/4\]/);
    const localDirs = fs.readdirSync(path.join(work, 'local')).filter((d) => d.includes('-same-')).map((d) => path.join(work, 'local', d));
    const queuedDirs = fs.readdirSync(artifacts).filter((d) => /-trial-\d+$/.test(d)).map((d) => path.join(artifacts, d));
    assert.equal(queuedDirs.length, 4);
    assert.deepEqual(trialNumbers(queuedDirs), trialNumbers(localDirs));
    // The same table: each trial's values, status and metrics, and the same best trial.
    const results = (dir: string) => {
      const id = fs.readdirSync(path.join(dir, 'sweeps')).find((d) => d.startsWith('same-'))!;
      for (const file of ['results.csv', 'plot.png']) assert.ok(fs.existsSync(path.join(dir, 'sweeps', id, file)), file);
      const json = JSON.parse(fs.readFileSync(path.join(dir, 'sweeps', id, 'results.json'), 'utf8')) as { best_trial: number; trials: Record<string, unknown>[] };
      return { best: json.best_trial, trials: json.trials.map((t) => [t.trial, t.assignments, t.status, t.best_val_accuracy, t.val_accuracy, t.val_loss]) };
    };
    assert.deepEqual(results(artifacts), results(path.join(work, 'local')));
    await stopWorkers();
  });

  test('the same command again, and a second coordinator, enqueue nothing twice', async () => {
    const file = sweepFile('attach', '    train.fine_tune.fine_tune_at: [100, 120, 140]');
    const [a, b] = await Promise.all([runTlx(['--runs-dir', artifacts, 'sweep', file, '--queue', redis.url], { cwd: work }), runTlx(['--runs-dir', artifacts, 'sweep', file, '--queue', redis.url], { cwd: work })]);
    assert.equal(a.exitCode, 0, a.stderr);
    assert.equal(b.exitCode, 0, b.stderr);
    const again = await runTlx(['--runs-dir', artifacts, 'sweep', file, '--queue', redis.url], { cwd: work });
    assert.match(again.stderr, /is already on the queue; attaching to it/);
    // One leader job for the shared feature extraction; its followers are added once it is done.
    assert.equal((await jobs()).filter((j) => j.id.startsWith('attach-')).length, 1);
    startWorker();
    const waited = await runTlx(['--runs-dir', artifacts, 'sweep', file, '--queue', redis.url, '--wait'], { cwd: work, timeout: 600_000 });
    assert.equal(waited.exitCode, 0, waited.stderr.slice(-2000));
    const ids = (await jobs()).filter((j) => j.id.startsWith('attach-'));
    assert.deepEqual(ids.map((j) => j.id.replace(/^.*\./, '')).sort(), ['trial-0', 'trial-1', 'trial-2'], 'one job per trial');
    assert.ok(ids.every((j) => j.state === 'completed'));
    await stopWorkers();
  });

  test('a worker killed mid-trial: another takes the job over and resumes the trial from its checkpoint; MLflow has each epoch once', async () => {
    const file = sweepFile('killed', '    train.fine_tune.fine_tune_at: [120]', 'feature_extraction: { epochs: 30 }, fine_tune: { epochs: 1 }');
    const first = startWorker();
    const enqueued = await runTlx(['--runs-dir', artifacts, 'sweep', file, '--queue', redis.url], { cwd: work });
    assert.equal(enqueued.exitCode, 0, enqueued.stderr);
    let dir = '';
    for (let i = 0; i < 600 && !(dir && fs.existsSync(path.join(dir, 'metrics.jsonl')) && readMetrics(dir).length > 3); i++) {
      await new Promise((resolve) => setTimeout(resolve, 200));
      dir = fs.readdirSync(artifacts).filter((d) => d.startsWith('killed-') && d.endsWith('-trial-0')).map((d) => path.join(artifacts, d))[0] ?? '';
    }
    assert.ok(dir, 'the trial started');
    const trialProcesses = descendantsOf(first.pid!, '__trial');
    assert.ok(trialProcesses.length > 0, 'the trial runs in a child process');
    first.kill('SIGKILL');
    await first;
    workers.splice(workers.indexOf(first), 1);
    assert.ok(await allEnded(trialProcesses), 'the trial process died with its worker');
    assert.equal(trialFoldersOf(first.pid).length, 1, 'the killed worker left its trial folder');
    const epochsAtKill = readMetrics(dir).length;
    startWorker();
    const waited = await runTlx(['--runs-dir', artifacts, 'sweep', file, '--queue', redis.url, '--wait'], { cwd: work, timeout: 600_000 });
    assert.equal(waited.exitCode, 0, waited.stderr.slice(-2000));
    const epochs = readMetrics(dir).map((r) => r.epoch);
    assert.deepEqual(epochs, Array.from({ length: 32 }, (_, i) => i), 'every epoch once in the folder');
    assert.ok(epochsAtKill > 3 && epochsAtKill < 32);
    const log = fs.readFileSync(path.join(dir, 'log.jsonl'), 'utf8');
    assert.match(log, /continuing from the checkpoint of epoch \d+/, 'resumed, not restarted');
    assert.deepEqual(trialFoldersOf(first.pid), [], 'the next worker removed the dead one\'s trial folder');
    const remote = await readRunWithMlflow(mlflow.url, mlflowState(dir, mlflow.url).run_id, ['val_loss']);
    assert.deepEqual(remote.histories.val_loss.map((m) => m.step).sort((a, b) => a - b), epochs, 'each epoch once in MLflow');
    await stopWorkers();
  });

  test('Redis restarted mid-sweep: no job is lost, the worker reconnects, the sweep finishes', async () => {
    const file = sweepFile('restart', '    seed: [4, 5, 6]', 'feature_extraction: { epochs: 8 }, fine_tune: { epochs: 1 }');
    startWorker();
    const enqueued = await runTlx(['--runs-dir', artifacts, 'sweep', file, '--queue', redis.url], { cwd: work });
    assert.equal(enqueued.exitCode, 0, enqueued.stderr);
    for (let i = 0; i < 600 && !fs.readdirSync(artifacts).some((d) => d.startsWith('restart-') && fs.existsSync(path.join(artifacts, d, 'metrics.jsonl'))); i++) await new Promise((resolve) => setTimeout(resolve, 200));
    await redis.restart();
    const waited = await runTlx(['--runs-dir', artifacts, 'sweep', file, '--queue', redis.url, '--wait'], { cwd: work, timeout: 600_000 });
    assert.equal(waited.exitCode, 0, waited.stderr.slice(-2000));
    const restartJobs = (await jobs()).filter((j) => j.id.startsWith('restart-'));
    assert.equal(restartJobs.length, 3);
    assert.ok(restartJobs.every((j) => j.state === 'completed'));
    await stopWorkers();
  });

  test('a trial that cannot succeed fails once (not retried); the others finish', async () => {
    const file = sweepFile('unfixable', '    model.weights: [none, missing-weights.h5]');
    startWorker();
    const waited = await runTlx(['--runs-dir', artifacts, 'sweep', file, '--queue', redis.url, '--wait'], { cwd: work, timeout: 600_000 });
    assert.equal(waited.exitCode, 1, waited.stderr.slice(-2000));
    const states = (await jobs()).filter((j) => j.id.startsWith('unfixable-')).sort((a, b) => a.id.localeCompare(b.id));
    assert.deepEqual(states.map((j) => j.state), ['completed', 'failed']);
    assert.equal(states[1].attempts, 1, 'one attempt, no retries');
    assert.match(waited.stdout, /failed/);
    await stopWorkers();
  });

  test("a group leader whose export fails still hands its feature extraction on: the other trials run and the sweep ends", async () => {
    const file = writeExperiment(work, 'orphans', `seed: 4\n${tinyDataAndModel}train: { feature_extraction: { epochs: 2 }, fine_tune: { epochs: 1 } }\nexport: { tflite: { quantization: float16 } }\nsweep:\n  grid:\n    train.fine_tune.fine_tune_at: [100, 140]\n`);
    const worker = execa(process.execPath, [tlxBin, '--runs-dir', artifacts, 'worker', '--queue', redis.url], { cwd: work, env: { ...workerEnv(), TLX_TEST_EXPORT_FAIL: '1' }, reject: false });
    workers.push(worker);
    const waited = await runTlx(['--runs-dir', artifacts, 'sweep', file, '--queue', redis.url, '--wait'], { cwd: work, timeout: 600_000 });
    assert.equal(waited.timedOut ?? false, false, 'the sweep ended');
    assert.equal(waited.exitCode, 1, waited.stderr.slice(-2000));
    const states = (await jobs()).filter((j) => j.id.startsWith('orphans-')).sort((a, b) => a.id.localeCompare(b.id));
    assert.deepEqual(states.map((j) => [j.state, j.attempts]), [['failed', 1], ['failed', 1]], 'each trial ran once, failing at its export');
    const dirs = fs.readdirSync(artifacts).filter((d) => d.startsWith('orphans-') && /-trial-\d+$/.test(d)).sort().map((d) => path.join(artifacts, d));
    assert.equal(dirs.length, 2);
    const featureExtraction = (dir: string) => readMetrics(dir).filter((r) => r.phase !== 'fine_tune').map((r) => [r.epoch, r.loss, r.val_loss]);
    assert.deepEqual(featureExtraction(dirs[1]), featureExtraction(dirs[0]), 'the follower started from the leader\'s feature extraction');
    assert.ok(readMetrics(dirs[1]).some((r) => r.phase === 'fine_tune'), 'and trained its own fine-tuning');
    await stopWorkers();
  });

  test('an idle worker stops on SIGTERM within seconds, even while Redis is unreachable', async () => {
    const lonely = await startRedis(path.join(work, 'redis-lonely'));
    const worker = execa(process.execPath, [tlxBin, '--runs-dir', artifacts, 'worker', '--queue', lonely.url], { cwd: work, env: workerEnv(), reject: false });
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
  });
});
