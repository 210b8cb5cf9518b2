import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { runSweep } from '../src/sweep/sweep.ts';
import { silentLogger } from '../src/core/log.ts';
import { tf } from '../src/tfjs/tf.ts';
import { runTlx, tlxBin } from './helpers/cli.ts';
import { writeClassFolders } from './helpers/images.ts';
import { readRunWithMlflow, startMlflowServer, type MlflowServer } from './helpers/mlflow.ts';
import { mlflowState, runDirOf, tinyDataAndModel, writeExperiment } from './helpers/runs.ts';
import { tempDir } from './helpers/tmp.ts';

const work = tempDir('tlx-sweep-');
const runsDir = path.join(work, 'runs');

function experiment(name: string, grid: string): string {
  return writeExperiment(
    work,
    name,
    `seed: 2
${tinyDataAndModel}train:
  feature_extraction: { epochs: 2, optimizer: { name: adam, learning_rate: 0.001 } }
  fine_tune: { epochs: 1, optimizer: { name: rmsprop, learning_rate: 0.0001 } }
sweep:
  grid:
${grid}
`,
  );
}

interface StatusLine {
  trial: number;
  status: string;
  run_dir?: string;
  error?: string;
}

function statusOf(sweepDir: string): StatusLine[] {
  return JSON.parse(fs.readFileSync(path.join(sweepDir, 'status.json'), 'utf8')) as StatusLine[];
}

function sweepDirOf(stdout: string): string {
  const line = stdout.split('\n').find((l) => l.startsWith('sweep '));
  assert.ok(line, stdout);
  return line.slice(line.indexOf(': ') + 2).trim();
}

before(async () => {
  await writeClassFolders(path.join(work, 'data'), ['ants', 'bees'], 16, { size: 32 });
});

describe('tlx sweep', () => {
  let server: MlflowServer;
  before(async () => {
    server = await startMlflowServer({ dataDir: path.join(work, 'mlflow') });
  });
  after(() => server?.stop());

  test('every trial is validated before any runs; an invalid one is named', async () => {
    const file = experiment('invalid', '    train.fine_tune.fine_tune_at: [100, 200]');
    const result = await runTlx(['--runs-dir', runsDir, 'sweep', file], { cwd: work });
    assert.equal(result.exitCode, 2);
    assert.match(
      result.stderr,
      /trial 1 \(train\.fine_tune\.fine_tune_at=200\): train\.fine_tune\.fine_tune_at: found 200, expected at most 154/,
    );
    assert.equal(fs.existsSync(runsDir) ? fs.readdirSync(runsDir).filter((d) => d.includes('invalid')).length : 0, 0);
  });

  test('trials share one feature extraction, which is exactly the state an independent run reaches; parent and child runs nest in MLflow', async () => {
    const file = experiment('shared', '    train.fine_tune.fine_tune_at: [100, 140]');
    const result = await runTlx(['--runs-dir', runsDir, 'sweep', file], {
      cwd: work,
      env: { MLFLOW_TRACKING_URI: server.url },
    });
    assert.equal(result.exitCode, 0, result.stderr.slice(-3000));
    assert.match(result.stdout, /^\* /m, 'the best trial is marked');
    assert.match(result.stdout, /best: trial \d \(train\.fine_tune\.fine_tune_at=\d+\) val_accuracy/);
    const sweepDir = sweepDirOf(result.stdout);
    for (const name of ['plan.json', 'status.json', 'results.csv', 'results.json', 'plot.png'])
      assert.ok(fs.existsSync(path.join(sweepDir, name)), name);
    const [leader, follower] = statusOf(sweepDir);
    assert.equal(leader.status, 'finished');
    assert.equal(follower.status, 'finished');
    assert.match(result.stderr, /feature extraction shared: starting from its checkpoint/);
    assert.match(
      result.stderr,
      /feature_extraction: frozen layers' outputs computed once .*kept for what follows/,
      "the leader's feature extraction keeps the frozen layers below the smallest fine_tune_at",
    );
    assert.equal(
      result.stderr.match(
        /fine_tune: frozen layers' outputs computed once .*reused \(computed earlier in this process\)/g,
      )?.length,
      2,
      'and both trials fine-tune from them',
    );

    // The same trial run on its own, with the same seed.
    const alone = await runTlx(
      ['--runs-dir', path.join(work, 'alone'), 'run', file, '--set', 'train.fine_tune.fine_tune_at=140'],
      { cwd: work },
    );
    assert.equal(alone.exitCode, 0, alone.stderr.slice(-2000));
    const aloneDir = runDirOf(alone.stdout);
    const shared = fs.readFileSync(path.join(follower.run_dir!, 'checkpoints', 'feature_extraction', 'weights.bin'));
    const independent = fs.readFileSync(path.join(aloneDir, 'checkpoints', 'feature_extraction', 'weights.bin'));
    assert.ok(shared.equals(independent), "the shared checkpoint is bit for bit the independent run's state");
    const metrics = (dir: string) =>
      fs
        .readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { epoch: number; val_loss: number });
    assert.deepEqual(
      metrics(follower.run_dir!).map((m) => [m.epoch, m.val_loss]),
      metrics(aloneDir).map((m) => [m.epoch, m.val_loss]),
      'and the trial ends where the independent run ends',
    );

    const parent = JSON.parse(fs.readFileSync(path.join(sweepDir, 'mlflow.json'), 'utf8')) as {
      servers: Record<string, { run_id: string }>;
    };
    const parentRunId = parent.servers[server.url].run_id;
    for (const trial of [leader, follower]) {
      const child = await readRunWithMlflow(server.url, mlflowState(trial.run_dir!, server.url).run_id, []);
      assert.equal(child.tags['mlflow.parentRunId'], parentRunId);
    }
    const remoteParent = await readRunWithMlflow(server.url, parentRunId, ['best_val_accuracy']);
    assert.equal(remoteParent.params['sweep.train.fine_tune.fine_tune_at'], '[100,140]');
    assert.equal(remoteParent.histories.best_val_accuracy.length, 1);
    assert.ok(remoteParent.artifacts.includes('results.csv'));
  });

  test('a budget: one export per architecture, the best within budget exported, the Pareto front in the folder and on the MLflow parent', async () => {
    // MobileNetV2 at 32 px costs 1.2 M MACs, MobileNetV3-Small 0.4 M: a 0.8 M budget excludes every MobileNetV2 trial.
    const file = writeExperiment(
      work,
      'phone',
      `seed: 2
${tinyDataAndModel}train:
  feature_extraction: { epochs: 1 }
  fine_tune: { epochs: 1 }
export:
  tflite: { quantization: int8, representative_images: 10, max_accuracy_drop: 1 }
sweep:
  export: best
  constraints: { max_macs: 800000 }
  grid:
    model.base: [mobilenet_v2, mobilenet_v3_small]
    train.fine_tune.fine_tune_at: [100, 120]
`,
    );
    const result = await runTlx(['--runs-dir', runsDir, '--json', 'sweep', file], {
      cwd: work,
      env: { MLFLOW_TRACKING_URI: server.url },
      timeout: 600_000,
    });
    assert.equal(result.exitCode, 0, result.stderr.slice(-3000));
    const report = JSON.parse(result.stdout) as {
      best_trial: number;
      dir: string;
      constraints: { max_macs: number };
      trials: {
        trial: number;
        assignments: Record<string, string>;
        exported?: boolean;
        budget: string;
        over_budget?: string[];
        macs_per_image: number;
        footprint_trial: number;
        host_latency_ms_1: number;
      }[];
    };
    const v2 = report.trials.filter((t) => t.assignments['model.base'] === 'mobilenet_v2');
    const v3 = report.trials.filter((t) => t.assignments['model.base'] === 'mobilenet_v3_small');
    assert.deepEqual(
      v2.map((t) => t.budget),
      ['over', 'over'],
    );
    assert.match(v2[0].over_budget!.join(), /^MACs 1\.\d M > 0\.8 M$/);
    assert.deepEqual(
      v3.map((t) => t.budget),
      ['within', 'within'],
    );
    assert.ok(
      v3.some((t) => t.trial === report.best_trial),
      'the best is a trial within the budget',
    );
    // One export per architecture; its sibling shares that measurement.
    assert.equal(report.trials.filter((t) => t.exported).length, 2);
    for (const group of [v2, v3]) {
      const measuredOn = group.find((t) => t.exported)!.trial;
      assert.deepEqual(
        group.map((t) => t.footprint_trial),
        [measuredOn, measuredOn],
      );
      assert.equal(group[0].macs_per_image, group[1].macs_per_image);
      assert.ok(group[0].host_latency_ms_1 > 0);
    }
    assert.ok(report.trials.find((t) => t.trial === report.best_trial)!.exported, 'the best trial is exported');
    const png = fs.readFileSync(path.join(report.dir, 'pareto.png'));
    assert.equal(png.subarray(1, 4).toString(), 'PNG');
    const parentRunId = (
      JSON.parse(fs.readFileSync(path.join(report.dir, 'mlflow.json'), 'utf8')) as {
        servers: Record<string, { run_id: string }>;
      }
    ).servers[server.url].run_id;
    const remoteParent = await readRunWithMlflow(server.url, parentRunId, []);
    assert.ok(remoteParent.artifacts.includes('pareto.png'), remoteParent.artifacts.join(', '));

    // The same sweep under a budget nothing fits: nothing retrains, and the report says there is no best.
    const tight = await runTlx(['--runs-dir', runsDir, 'sweep', file, '--set', 'sweep.constraints.max_macs=1000'], {
      cwd: work,
    });
    assert.equal(tight.exitCode, 0, tight.stderr.slice(-3000));
    assert.match(tight.stderr, /4 trial\(s\), 4 already finished/);
    assert.match(tight.stdout, /best: none: no trial is within the budget \(sweep\.constraints max_macs 1000\)/);
    assert.doesNotMatch(tight.stdout, /^\* /m, 'no trial is marked best');
  });

  test('a random search killed during a trial resumes with the same draws, none twice', async () => {
    const file = writeExperiment(
      work,
      'random',
      `seed: 2
${tinyDataAndModel}train:
  feature_extraction: { epochs: 1 }
  fine_tune: { epochs: 1, optimizer: { name: adam, learning_rate: 0.0001 } }
sweep:
  method: random
  trials: 3
  grid:
    train.fine_tune.fine_tune_at: [100, 120, 140]
    train.fine_tune.optimizer.learning_rate: { min: 0.000001, max: 0.001, log: true }
`,
    );
    // Trial 0 records two epochs; the third recorded epoch is trial 1's, and the process dies there.
    const killed = await runTlx(['--runs-dir', runsDir, 'sweep', file], {
      cwd: work,
      env: { TLX_TEST_KILL_AT: 'epoch.recorded@3' },
    });
    assert.notEqual(killed.exitCode, 0);
    const sweeps = fs.readdirSync(path.join(runsDir, 'sweeps')).filter((d) => d.startsWith('random-'));
    assert.equal(sweeps.length, 1);
    const sweepDir = path.join(runsDir, 'sweeps', sweeps[0]);
    const before = statusOf(sweepDir) as (StatusLine & { assignments: Record<string, unknown> })[];
    assert.deepEqual(
      before.map((s) => s.status),
      ['finished', 'running', 'pending'],
    );
    const resumed = await runTlx(['--runs-dir', runsDir, 'sweep', file], { cwd: work });
    assert.equal(resumed.exitCode, 0, resumed.stderr.slice(-3000));
    assert.match(resumed.stderr, /3 trial\(s\), 1 already finished/);
    const after = statusOf(sweepDir) as (StatusLine & { assignments: Record<string, unknown> })[];
    assert.deepEqual(
      after.map((s) => s.assignments),
      before.map((s) => s.assignments),
      'the same draws',
    );
    assert.equal(new Set(after.map((s) => JSON.stringify(s.assignments))).size, 3, 'no trial twice');
    assert.ok(after.every((s) => s.status === 'finished'));
    assert.equal(after[0].run_dir, before[0].run_dir, 'the finished trial is not rerun');
    assert.equal(after[1].run_dir, before[1].run_dir, 'the killed trial resumes its own folder');
    const epochs = fs
      .readFileSync(path.join(after[1].run_dir!, 'metrics.jsonl'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => (JSON.parse(l) as { epoch: number }).epoch);
    assert.deepEqual(epochs, [0, 1, 2], 'every epoch once (the start, feature extraction, fine-tuning)');
    const rate = after[2].assignments['train.fine_tune.optimizer.learning_rate'] as number;
    assert.ok(rate >= 1e-6 && rate <= 1e-3);
  });

  test('a failing trial is recorded and the others go on', async () => {
    const file = experiment('failing', '    model.weights: [none, missing-weights.h5]');
    const result = await runTlx(['--runs-dir', runsDir, 'sweep', file], { cwd: work });
    assert.equal(result.exitCode, 1);
    const [ok, failed] = statusOf(sweepDirOf(result.stdout));
    assert.equal(ok.status, 'finished');
    assert.equal(failed.status, 'failed');
    assert.match(failed.error!, /missing-weights\.h5: file not found/);
  });

  test('a sweep killed during a trial resumes: finished trials are skipped, the rest run', async () => {
    const file = experiment('killed', '    train.fine_tune.fine_tune_at: [100, 120, 140]');
    const child = execa(process.execPath, [tlxBin, '--runs-dir', runsDir, 'sweep', file, '--grid', 'seed=2,3'], {
      cwd: work,
      reject: false,
    });
    const deadline = Date.now() + 240_000;
    let sweepDir: string | undefined;
    while (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 300));
      const sweeps = fs.existsSync(path.join(runsDir, 'sweeps'))
        ? fs.readdirSync(path.join(runsDir, 'sweeps')).filter((d) => d.startsWith('killed-'))
        : [];
      if (sweeps.length === 1) sweepDir = path.join(runsDir, 'sweeps', sweeps[0]);
      if (
        sweepDir &&
        fs.existsSync(path.join(sweepDir, 'status.json')) &&
        statusOf(sweepDir).filter((s) => s.status === 'finished').length >= 2
      )
        break;
    }
    child.kill('SIGKILL');
    await child;
    assert.ok(sweepDir);
    const before = statusOf(sweepDir);
    const finishedBefore = before.filter((s) => s.status === 'finished');
    assert.ok(
      finishedBefore.length >= 2 && finishedBefore.length < 6,
      `${finishedBefore.length} finished before the kill`,
    );
    const resumed = await runTlx(['--runs-dir', runsDir, 'sweep', '--resume', path.basename(sweepDir)], { cwd: work });
    assert.equal(resumed.exitCode, 0, resumed.stderr.slice(-3000));
    const after = statusOf(sweepDir);
    assert.equal(after.length, 6);
    assert.ok(after.every((s) => s.status === 'finished'));
    for (const done of finishedBefore)
      assert.equal(after.find((s) => s.trial === done.trial)?.run_dir, done.run_dir, 'finished trials are not rerun');
    assert.match(resumed.stderr, new RegExp(`${finishedBefore.length} already finished`));
    // And the plot is a real PNG.
    const png = fs.readFileSync(path.join(sweepDir, 'plot.png'));
    assert.equal(png.subarray(1, 4).toString(), 'PNG');
  });
});

describe('sweeps keep their memory and their plan', () => {
  test('tensor count and RSS stay flat across trials (classifier, optimizer and data released or shared)', async () => {
    const file = experiment('memory', '    train.fine_tune.fine_tune_at: [100, 120, 140]\n    model.dropout: [0.2]');
    const after: { tensors: number; rss: number }[] = [];
    const onTrialEnd = () => after.push({ tensors: tf.memory().numTensors, rss: process.memoryUsage().rss });
    const result = await runSweep({
      file,
      overrides: [],
      grid: [],
      parallel: 1,
      runsDir: path.join(work, 'memory-runs'),
      log: silentLogger,
      onTrialEnd,
    });
    assert.deepEqual(
      result.rows.map((r) => r.status),
      ['finished', 'finished', 'finished'],
    );
    assert.equal(after.length, 3);
    assert.equal(
      new Set(after.map((a) => a.tensors)).size,
      1,
      `tensors after each trial: ${after.map((a) => a.tensors).join(', ')}`,
    );
    const growth = (after[2].rss - after[1].rss) / 1024 ** 2;
    assert.ok(growth < 100, `RSS grew ${growth.toFixed(0)} MB between the 2nd and the 3rd trial`);
  });

  test('--resume of a sweep over list values (image_size) uses the stored plan as values, never re-parsed', async () => {
    const file = experiment('lists', '    dataset.image_size: [[32, 32], [40, 40]]');
    const first = await runTlx(['--runs-dir', runsDir, 'sweep', file, '--max-trials', '1'], { cwd: work });
    assert.equal(first.exitCode, 0, first.stderr.slice(-2000));
    const sweepId = path.basename(sweepDirOf(first.stdout));
    const plan = JSON.parse(fs.readFileSync(path.join(runsDir, 'sweeps', sweepId, 'plan.json'), 'utf8')) as {
      grid: Record<string, unknown>;
    };
    assert.deepEqual(plan.grid['dataset.image_size'], [
      [32, 32],
      [40, 40],
    ]);
    const resumed = await runTlx(['--runs-dir', runsDir, 'sweep', '--resume', sweepId], { cwd: work });
    assert.equal(resumed.exitCode, 0, resumed.stderr.slice(-2000));
    assert.match(resumed.stderr, /1 trial\(s\), 1 already finished/);
    const rows = JSON.parse(fs.readFileSync(path.join(runsDir, 'sweeps', sweepId, 'results.json'), 'utf8')) as {
      trials: { assignments: Record<string, unknown> }[];
    };
    assert.deepEqual(
      rows.trials.map((t) => t.assignments['dataset.image_size']),
      [[32, 32]],
    );
  });

  test('sweep.export: best exports only the best trial, and the results say which', async () => {
    const file = writeExperiment(
      work,
      'bestexport',
      `seed: 2
${tinyDataAndModel}train:
  feature_extraction: { epochs: 1 }
  fine_tune: { epochs: 1 }
export:
  tflite: { quantization: float16, representative_images: 10, max_accuracy_drop: 1 }
sweep:
  export: best
  grid:
    train.fine_tune.fine_tune_at: [100, 140]
`,
    );
    const result = await runTlx(['--runs-dir', runsDir, '--json', 'sweep', file], { cwd: work, timeout: 600_000 });
    assert.equal(result.exitCode, 0, result.stderr.slice(-2000));
    const report = JSON.parse(result.stdout) as {
      best_trial: number;
      trials: { trial: number; exported?: boolean; run_dir: string }[];
    };
    const exported = report.trials.filter((t) => t.exported).map((t) => t.trial);
    assert.deepEqual(exported, [report.best_trial]);
    for (const trial of report.trials)
      assert.equal(fs.existsSync(path.join(trial.run_dir, 'model.tflite')), trial.trial === report.best_trial);
  });
});
