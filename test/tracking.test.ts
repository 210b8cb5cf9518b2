import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { freePort } from '../src/track/mlflow-server.ts';
import { shortRunName } from '../src/run-folder/run-folder.ts';
import { runTlx, tlxBin } from './helpers/cli.ts';
import { writeClassFolders } from './helpers/images.ts';
import { mlflowState, readMetrics, runDirOf, tinyDataAndModel, writeExperiment } from './helpers/runs.ts';
import {
  assertExactlySynced,
  faultyProxy,
  metricKeys,
  modelViews,
  readRunWithMlflow,
  startMlflowServer,
  type MlflowServer,
} from './helpers/mlflow.ts';
import { tempDir } from './helpers/tmp.ts';

const work = tempDir('tlx-track-');
const runsDir = path.join(work, 'runs');
let server: MlflowServer;

function experiment(name: string, epochs = 2): string {
  return writeExperiment(
    work,
    name,
    `seed: 1
${tinyDataAndModel}train:
  feature_extraction: { epochs: ${epochs} }
  fine_tune: { epochs: 1 }
tracking:
  mlflow: { experiment: tlx-tests }
`,
  );
}

before(async () => {
  await writeClassFolders(path.join(work, 'data'), ['ants', 'bees'], 16, { size: 32 });
  server = await startMlflowServer({ dataDir: path.join(work, 'mlflow-main') });
});

after(() => server?.stop());

describe('every run in MLflow', () => {
  test('a run logs live to a real server: params, per-epoch metrics, tags, artifacts; MLflow reads them back', async () => {
    const result = await runTlx(['--runs-dir', runsDir, 'run', experiment('live')], {
      cwd: work,
      env: { MLFLOW_TRACKING_URI: server.url, MLFLOW_TRACKING_TOKEN: 'secret-token-123' },
    });
    assert.equal(result.exitCode, 0, result.stderr.slice(-2000));
    const dir = runDirOf(result.stdout);
    const remote = await readRunWithMlflow(server.url, mlflowState(dir, server.url).run_id, metricKeys);
    assert.equal(remote.name, shortRunName(path.basename(dir)), 'a readable name: the experiment and a short id');
    assert.match(remote.name, /^live-[a-z0-9]{4}$/);
    assert.equal(remote.params['train.fine_tune.fine_tune_at'], '100');
    assert.equal(remote.params['dataset.image_size'], '[32,32]');
    assert.equal(remote.params['data.class_count'], '2');
    assert.equal(remote.tags['mlflow.source.type'], 'LOCAL');
    assert.equal(remote.tags['mlflow.runName'], remote.name);
    assert.equal(remote.tags['tlx.run_id'], path.basename(dir));
    assert.ok(remote.tags['mlflow.user']);
    assert.match(remote.tags['tlx.config_sha256'], /^[0-9a-f]{64}$/);
    assert.deepEqual(
      remote.histories.val_accuracy.map((m) => m.step),
      [0, 1, 2, 3],
    );
    for (const artifact of [
      'config.yaml',
      'metrics.jsonl',
      'summary.json',
      'labels.txt',
      'plots/learning_curves.png',
      'plots/confusion_matrix.png',
    ])
      assert.ok(remote.artifacts.includes(artifact), artifact);
    await assertExactlySynced(dir, server.url);
    const everything = textOfRunFolder(dir);
    assert.ok(!everything.includes('secret-token-123'), 'the token is never written to the run folder');
    assert.ok(!result.stderr.includes('secret-token-123'), 'nor to the logs');
  });

  test('tlx sync of an untracked run sends all of it; a second sync changes nothing', async () => {
    const offline = await runTlx(['--runs-dir', runsDir, 'run', experiment('untracked')], {
      cwd: work,
      env: { MLFLOW_TRACKING_URI: '' },
    });
    assert.equal(offline.exitCode, 0, offline.stderr.slice(-2000));
    const dir = runDirOf(offline.stdout);
    assert.ok(!fs.existsSync(path.join(dir, 'mlflow.json')), 'nothing was sent during the run');
    const first = await runTlx(['--runs-dir', runsDir, 'sync', dir], {
      cwd: work,
      env: { MLFLOW_TRACKING_URI: server.url },
    });
    assert.equal(first.exitCode, 0, first.stderr);
    // The first sync did the work: every point, the params, the artifacts, the final status.
    await assertExactlySynced(dir, server.url);
    const before = await readRunWithMlflow(server.url, mlflowState(dir, server.url).run_id, metricKeys);
    assert.equal(before.params['train.fine_tune.fine_tune_at'], '100');
    assert.ok(before.artifacts.includes('summary.json') && before.artifacts.includes('plots/learning_curves.png'));
    const second = await runTlx(['--runs-dir', runsDir, 'sync', dir], {
      cwd: work,
      env: { MLFLOW_TRACKING_URI: server.url },
    });
    assert.equal(second.exitCode, 0, second.stderr);
    const after = await readRunWithMlflow(server.url, mlflowState(dir, server.url).run_id, metricKeys);
    assert.deepEqual(after, before);
  });

  test('server down from the start: the run finishes, is marked not synced, and tlx sync completes it', async () => {
    const port = await freePort();
    const uri = `http://127.0.0.1:${port}`;
    const result = await runTlx(['--runs-dir', runsDir, 'run', experiment('offline')], {
      cwd: work,
      env: { MLFLOW_TRACKING_URI: uri },
    });
    assert.equal(result.exitCode, 0, result.stderr.slice(-2000));
    assert.match(result.stderr, /MLflow logging failed; the run carries on and is marked not synced/);
    const dir = runDirOf(result.stdout);
    assert.match(fs.readFileSync(path.join(dir, 'mlflow.json'), 'utf8'), /"synced": false/);
    const late = await startMlflowServer({ dataDir: path.join(work, 'mlflow-late'), port });
    try {
      const synced = await runTlx(['--runs-dir', runsDir, 'sync', dir], {
        cwd: work,
        env: { MLFLOW_TRACKING_URI: uri },
      });
      assert.equal(synced.exitCode, 0, synced.stderr);
      await assertExactlySynced(dir, uri);
    } finally {
      await late.stop();
    }
  });

  test('server killed mid-run and restarted: after tlx sync every metric point is there exactly once', async () => {
    const port = await freePort();
    const uri = `http://127.0.0.1:${port}`;
    const dataDir = path.join(work, 'mlflow-restart');
    let flaky = await startMlflowServer({ dataDir, port });
    const child = execa(process.execPath, [tlxBin, '--runs-dir', runsDir, 'run', experiment('restart', 6)], {
      cwd: work,
      env: { MLFLOW_TRACKING_URI: uri },
      reject: false,
    });
    let dir: string | undefined;
    const deadline = Date.now() + 180_000;
    while (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      dir = fs
        .readdirSync(runsDir)
        .map((d) => path.join(runsDir, d))
        .find((d) => d.includes('-restart-'));
      if (dir && fs.existsSync(path.join(dir, 'metrics.jsonl')) && readMetrics(dir).length >= 2) break;
    }
    await flaky.stop();
    await new Promise((r) => setTimeout(r, 3000));
    flaky = await startMlflowServer({ dataDir, port });
    try {
      const result = await child;
      assert.equal(result.exitCode, 0, String(result.stderr).slice(-2000));
      const synced = await runTlx(['--runs-dir', runsDir, 'sync', dir!], {
        cwd: work,
        env: { MLFLOW_TRACKING_URI: uri },
      });
      assert.equal(synced.exitCode, 0, synced.stderr);
      await assertExactlySynced(dir!, uri);
    } finally {
      await flaky.stop();
    }
  });

  test('a 500 on one request is retried and nothing is lost or doubled', async () => {
    const proxy = await faultyProxy(server.url, { pathIncludes: 'log-batch', nth: 2 });
    try {
      const result = await runTlx(['--runs-dir', runsDir, 'run', experiment('five-hundred')], {
        cwd: work,
        env: { MLFLOW_TRACKING_URI: proxy.url },
      });
      assert.equal(result.exitCode, 0, result.stderr.slice(-2000));
      assert.equal(proxy.failures, 1);
      const dir = runDirOf(result.stdout);
      const synced = await runTlx(['--runs-dir', runsDir, 'sync', dir], {
        cwd: work,
        env: { MLFLOW_TRACKING_URI: proxy.url },
      });
      assert.equal(synced.exitCode, 0);
      await assertExactlySynced(dir, proxy.url);
    } finally {
      await proxy.stop();
    }
  });
});

function textOfRunFolder(dir: string): string {
  return fs
    .readdirSync(dir, { recursive: true })
    .map((f) => path.join(dir, String(f)))
    .filter((f) => fs.statSync(f).isFile() && !f.endsWith('.bin') && !f.endsWith('.png') && !f.endsWith('.tflite'))
    .map((f) => fs.readFileSync(f, 'utf8'))
    .join('\n');
}

describe('dataset lineage and the model where models live', () => {
  const exporting = (name: string) =>
    writeExperiment(
      work,
      name,
      `seed: 1
${tinyDataAndModel}train:
  feature_extraction: { epochs: 1 }
  fine_tune: { epochs: 1 }
export:
  tflite: { quantization: float16, representative_images: 10, max_accuracy_drop: 1 }
tracking:
  mlflow: { experiment: tlx-models, register_model: ${name}-classifier }
`,
    );

  test('a run logs its data as dataset inputs, its TFLite file as a logged model, and a registry version; two more syncs add none', async () => {
    const result = await runTlx(['--runs-dir', runsDir, 'run', exporting('registered')], {
      cwd: work,
      env: { MLFLOW_TRACKING_URI: server.url },
      timeout: 600_000,
    });
    assert.equal(result.exitCode, 0, result.stderr.slice(-2000));
    const dir = runDirOf(result.stdout);
    const runId = mlflowState(dir, server.url).run_id;
    for (let i = 0; i < 2; i++)
      assert.equal(
        (await runTlx(['--runs-dir', runsDir, 'sync', dir], { cwd: work, env: { MLFLOW_TRACKING_URI: server.url } }))
          .exitCode,
        0,
      );
    const views = await modelViews(server.url, runId, 'registered-classifier');
    assert.deepEqual(
      views.inputs.map((i) => i.context).sort(),
      ['training', 'validation'],
      'one input per split (this dataset has no test split)',
    );
    const dataset = JSON.parse(fs.readFileSync(path.join(dir, 'dataset.json'), 'utf8')) as {
      digest: string;
      root: string;
    };
    for (const input of views.inputs) {
      assert.equal(input.name, `registered-${input.context === 'training' ? 'train' : input.context}`);
      assert.equal(input.digest, dataset.digest.slice(0, 36));
      assert.equal(input.source_type, 'local');
    }
    assert.equal(views.models.length, 1, 'one logged model');
    assert.deepEqual(views.models[0].artifacts, ['labels.txt', 'model-card.json', 'model-card.md', 'model.tflite']);
    assert.match(views.models[0].status, /READY/);
    assert.deepEqual(views.outputs, [views.models[0].model_id], "the logged model is the run's output");
    assert.equal(views.versions.length, 1, 'one registry version');
    assert.equal(views.versions[0].run_id, runId);
    assert.equal(views.versions[0].tags.quantization, 'float16');
    const summary = JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8')) as {
      export: { tflite: { bytes: number } };
    };
    assert.equal(views.versions[0].tags.bytes, String(summary.export.tflite.bytes));
    assert.ok('test_accuracy' in views.versions[0].tags);
  });

  test('two runs on the same data carry the same dataset digest', async () => {
    const result = await runTlx(['--runs-dir', runsDir, 'run', experiment('samedata')], {
      cwd: work,
      env: { MLFLOW_TRACKING_URI: server.url },
    });
    assert.equal(result.exitCode, 0, result.stderr.slice(-2000));
    const first = fs
      .readdirSync(runsDir)
      .map((d) => path.join(runsDir, d))
      .find((d) => d.includes('-registered-'))!;
    const views = await modelViews(server.url, mlflowState(runDirOf(result.stdout), server.url).run_id, 'none');
    const digest = (
      JSON.parse(fs.readFileSync(path.join(first, 'dataset.json'), 'utf8')) as { digest: string }
    ).digest.slice(0, 36);
    assert.ok(views.inputs.every((i) => i.digest === digest));
  });

  test('a server away during the run: tlx sync later logs dataset inputs, the model and its version exactly once', async () => {
    const port = await freePort();
    const uri = `http://127.0.0.1:${port}`;
    const result = await runTlx(['--runs-dir', runsDir, 'run', exporting('outage')], {
      cwd: work,
      env: { MLFLOW_TRACKING_URI: uri },
      timeout: 600_000,
    });
    assert.equal(result.exitCode, 0, result.stderr.slice(-2000));
    const dir = runDirOf(result.stdout);
    const late = await startMlflowServer({ dataDir: path.join(work, 'mlflow-outage'), port });
    try {
      for (let i = 0; i < 2; i++)
        assert.equal(
          (await runTlx(['--runs-dir', runsDir, 'sync', dir], { cwd: work, env: { MLFLOW_TRACKING_URI: uri } }))
            .exitCode,
          0,
        );
      const views = await modelViews(uri, mlflowState(dir, uri).run_id, 'outage-classifier');
      assert.equal(views.inputs.length, 2);
      assert.equal(views.models.length, 1);
      assert.equal(views.versions.length, 1);
    } finally {
      await late.stop();
    }
  });
});
