import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { execa } from 'execa';
import { freePort } from '../src/track/mlflow-server.ts';
import { runTlx, tlxBin } from './helpers/cli.ts';
import { writeClassFolders } from './helpers/images.ts';
import { waitForStderr } from './helpers/process.ts';
import { assertExactlySynced, modelViews, startMlflowServer } from './helpers/mlflow.ts';
import { mlflowState, tinyDataAndModel, waitForEpoch, writeExperiment } from './helpers/runs.ts';
import { tempDir } from './helpers/tmp.ts';

/**
 * One MLflow server is one server whatever URL reaches it: `tlx ui` picks a new port each
 * time over the same store, and localhost, 127.0.0.1 and a trailing slash are one server.
 * A run synced through any of them is found again by what the server holds (its tlx.run_id
 * tag), and nothing is logged twice: metric points, dataset inputs, the logged model, the
 * run's model output, registry versions.
 */

const work = tempDir('tlx-sync-id-');

function exporting(name: string, featureEpochs: number): string {
  return writeExperiment(
    work,
    name,
    `seed: 1
${tinyDataAndModel}train:
  feature_extraction: { epochs: ${featureEpochs} }
  fine_tune: { epochs: 1 }
export:
  tflite: { quantization: float16, representative_images: 10, max_accuracy_drop: 1 }
tracking:
  mlflow: { experiment: tlx-identity, register_model: ${name}-classifier }
`,
  );
}

/** Exactly one of everything on this server for the run folder: points, inputs, model, output, version. */
async function assertNothingTwice(dir: string, uri: string, registered: string): Promise<void> {
  await assertExactlySynced(dir, uri);
  const views = await modelViews(uri, mlflowState(dir, uri).run_id, registered);
  assert.equal(views.inputs.length, 2, 'one dataset input per split');
  assert.equal(views.models.length, 1, 'one logged model');
  assert.equal(views.outputs.length, 1, 'one model output');
  assert.equal(views.versions.length, 1, 'one registry version');
}

/** Modification times of the files a server's artifact store holds (everything but its database). */
function artifactTimes(dataDir: string): Record<string, number> {
  return Object.fromEntries(
    fs
      .readdirSync(dataDir, { recursive: true })
      .map(String)
      .filter((file) => !file.startsWith('mlflow.db') && fs.statSync(path.join(dataDir, file)).isFile())
      .map((file) => [file, fs.statSync(path.join(dataDir, file)).mtimeMs]),
  );
}

before(async () => {
  await writeClassFolders(path.join(work, 'data'), ['ants', 'bees'], 16, { size: 32 });
});

describe('one server, whatever URL reaches it', () => {
  test('a run logged through one spelling, resumed through another and synced through a third: its new epochs arrive, nothing twice', async () => {
    const runsDir = path.join(work, 'runs-spellings');
    const port = await freePort();
    const server = await startMlflowServer({ dataDir: path.join(work, 'mlflow-spellings'), port });
    const spellings = [`http://127.0.0.1:${port}`, `http://localhost:${port}/`, `http://localhost:${port}`];
    try {
      const child = execa(process.execPath, [tlxBin, '--runs-dir', runsDir, 'run', exporting('spelled', 4)], {
        cwd: work,
        env: { MLFLOW_TRACKING_URI: spellings[0] },
        reject: false,
      });
      const dir = await waitForEpoch(runsDir, '-spelled-', 1);
      child.kill('SIGINT');
      assert.equal((await child).exitCode, 130);
      assert.ok(dir);
      const resumed = await runTlx(['--runs-dir', runsDir, 'run', '--resume', dir], {
        cwd: work,
        env: { MLFLOW_TRACKING_URI: spellings[1] },
        timeout: 600_000,
      });
      assert.equal(resumed.exitCode, 0, resumed.stderr.slice(-2000));
      const stored = artifactTimes(path.join(work, 'mlflow-spellings'));
      const synced = await runTlx(['--runs-dir', runsDir, 'sync', dir], {
        cwd: work,
        env: { MLFLOW_TRACKING_URI: spellings[2] },
      });
      assert.equal(synced.exitCode, 0, synced.stderr.slice(-2000));
      // A live update has a second per epoch: on a loaded machine one may miss it, and the run
      // says so ("not synced") while its last update, with retries, completes it. What the
      // spellings must never cause is a refusal, or a sync that is left incomplete.
      assert.doesNotMatch(resumed.stderr + synced.stderr, /refused|HTTP 4\d\d/);
      assert.doesNotMatch(synced.stderr, /not synced/);
      const runIds = spellings.map((uri) => mlflowState(dir, uri).run_id);
      assert.equal(new Set(runIds).size, 1, `one MLflow run for every spelling: ${runIds.join(', ')}`);
      assert.deepEqual(
        artifactTimes(path.join(work, 'mlflow-spellings')),
        stored,
        'the third spelling sent no artifact again: what the second sent was known',
      );
      await assertNothingTwice(dir, spellings[0], 'spelled-classifier');
      // A lost sync record (a power cut emptied mlflow.json): the server is asked what it has before anything is logged.
      fs.writeFileSync(path.join(dir, 'mlflow.json'), '');
      const again = await runTlx(['--runs-dir', runsDir, 'sync', dir], {
        cwd: work,
        env: { MLFLOW_TRACKING_URI: spellings[0] },
      });
      assert.equal(again.exitCode, 0, again.stderr.slice(-2000));
      await assertNothingTwice(dir, spellings[0], 'spelled-classifier');
    } finally {
      await server.stop();
    }
  });
  test('tlx ui started three times over that run (a new port each time, its own store): every run synced each time, no error, nothing twice', async () => {
    // The run of the test above: exported, registered, its folder under runs-spellings.
    const runsDir = path.join(work, 'runs-spellings');
    const dir = fs
      .readdirSync(runsDir)
      .map((name) => path.join(runsDir, name))
      .find((name) => name.includes('-spelled-'))!;
    for (let start = 1; start <= 3; start++) {
      const port = await freePort();
      const ui = execa(process.execPath, [tlxBin, '--runs-dir', runsDir, 'ui', '--port', String(port)], {
        cwd: work,
        reject: false,
      });
      let stderr = '';
      ui.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      try {
        await waitForStderr(ui, /synced \d+ local run/, 180_000);
        assert.match(stderr, /synced 1 local run/, `start ${start}: ${stderr.slice(-1500)}`);
        assert.doesNotMatch(stderr, /sync failed|HTTP 4\d\d|UNIQUE constraint/, `start ${start}`);
        if (start === 3) await assertNothingTwice(dir, `http://127.0.0.1:${port}`, 'spelled-classifier');
      } finally {
        ui.kill('SIGINT');
        await ui;
      }
    }
  });
});
