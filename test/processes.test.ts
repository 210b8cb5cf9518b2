import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { execa } from 'execa';
import type { RunSummary } from '../src/run-folder/records.ts';
import { freePort } from '../src/track/mlflow-server.ts';
import { runTlx, tlxBin } from './helpers/cli.ts';
import { writeClassFolders } from './helpers/images.ts';
import { startMlflowServer } from './helpers/mlflow.ts';
import { allEnded, descendantsOf, waitForStderr } from './helpers/process.ts';
import {
  faultTestBody,
  readMetrics,
  runFolderNamed,
  tinyDataAndModel,
  waitForEpoch,
  writeExperiment,
} from './helpers/runs.ts';
import { tempDir } from './helpers/tmp.ts';

/**
 * tlx's processes under signals: Ctrl-C and SIGKILL during the Python export, SIGKILL of
 * `tlx ui` (its MLflow server goes too), an MLflow server's whole process group stopped, Ctrl-C during a sweep. No child outlives tlx, and
 * what was interrupted resumes.
 */

const work = tempDir('tlx-processes-');
const runsDir = path.join(work, 'runs');

function experiment(name: string, extra = ''): string {
  return writeExperiment(work, name, `${faultTestBody}${extra}`);
}

const runFolder = (fragment: string) => runFolderNamed(runsDir, fragment);

before(async () => {
  await writeClassFolders(path.join(work, 'data'), ['ants', 'bees'], 16, { size: 32 });
});

describe('processes', () => {
  const exporting = `\nexport:\n  tflite: { quantization: int8, representative_images: 20, max_accuracy_drop: 1 }\n`;

  test('Ctrl-C during the export (the terminal signals the whole group): exit 130, run KILLED, no Python left; resume exports', async () => {
    const file = experiment('ctrlc-export', exporting);
    const child = execa(process.execPath, [tlxBin, '--runs-dir', runsDir, 'run', file], {
      cwd: work,
      reject: false,
      detached: true,
    });
    await waitForStderr(child, /converting to TFLite/);
    const exporters = descendantsOf(child.pid!, 'python/tlx_worker.py');
    assert.ok(exporters.length > 0, 'the export worker runs');
    process.kill(-child.pid!, 'SIGINT');
    const result = await child;
    assert.equal(result.exitCode, 130, String(result.stderr).slice(-2000));
    const dir = runFolder('ctrlc-export');
    assert.equal(
      (JSON.parse(fs.readFileSync(path.join(dir, 'run.json'), 'utf8')) as { status: string }).status,
      'KILLED',
    );
    assert.ok(await allEnded(exporters), 'the export worker stopped');
    assert.ok(!fs.existsSync(path.join(dir, 'model.tflite')));
    const resumed = await runTlx(['--runs-dir', runsDir, 'run', '--resume', dir], { cwd: work, timeout: 600_000 });
    assert.equal(resumed.exitCode, 0, resumed.stderr.slice(-2000));
    assert.equal(
      (JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8')) as RunSummary).export?.tflite?.status,
      'verified',
    );
  });

  test('SIGKILL of tlx during the export: the Python worker exits too and never writes into the run', async () => {
    const file = experiment('killed-export', exporting);
    const child = execa(process.execPath, [tlxBin, '--runs-dir', runsDir, 'run', file], { cwd: work, reject: false });
    await waitForStderr(child, /converting to TFLite/);
    const exporters = descendantsOf(child.pid!, 'python/tlx_worker.py');
    assert.ok(exporters.length > 0, 'the worker runs');
    child.kill('SIGKILL');
    await child;
    assert.ok(await allEnded(exporters, 5000), 'the worker died with its parent (within 5 s)');
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const dir = runFolder('killed-export');
    assert.ok(!fs.existsSync(path.join(dir, 'model.tflite')), 'no late model.tflite');
  });

  test('SIGKILL of tlx ui: its MLflow server and everything of it are gone within 5 s', async () => {
    const uiRuns = path.join(work, 'runs-ui');
    fs.mkdirSync(uiRuns, { recursive: true });
    const ui = execa(process.execPath, [tlxBin, '--runs-dir', uiRuns, 'ui', '--port', String(await freePort())], {
      cwd: work,
      reject: false,
    });
    await waitForStderr(ui, /synced \d+ local run/, 180_000);
    const server = descendantsOf(ui.pid!, 'mlflow');
    assert.ok(
      server.some((p) => p.command.includes('tlx_mlflow_server.py')),
      `the MLflow server runs under tlx ui: ${server.map((p) => p.command).join(' | ')}`,
    );
    ui.kill('SIGKILL');
    await ui;
    assert.ok(await allEnded(server, 5000), `left 5 s after the SIGKILL: ${server.map((p) => p.command).join(' | ')}`);
  });

  test('stopping an MLflow server stops its whole process group', async () => {
    const own = await startMlflowServer({ dataDir: path.join(work, 'mlflow-group') });
    const group = own.pid!;
    const members = async () => String((await execa('pgrep', ['-g', String(group)], { reject: false })).stdout).trim();
    assert.notEqual(await members(), '', 'the server runs in its own group');
    await own.stop();
    assert.equal(await members(), '', 'nothing of the group is left (port and database are free)');
  });

  // One stop signal per command here (run: SIGINT and SIGHUP in run.test; worker: SIGTERM and SIGHUP in queue.test);
  // every command listens for the same three (core/interrupt.ts stopSignals).
  {
    const signal = 'SIGTERM';
    test(`${signal} during a sweep stops it as Ctrl-C does: the trial KILLED with its checkpoint, exit 130`, async () => {
      const name = `sweep-${signal.toLowerCase()}`;
      const file = writeExperiment(
        work,
        name,
        `seed: 9\n${tinyDataAndModel}train:\n  feature_extraction: { epochs: 12 }\n  fine_tune: { epochs: 1 }\nsweep:\n  grid:\n    train.fine_tune.fine_tune_at: [100, 140]\n`,
      );
      const child = execa(process.execPath, [tlxBin, '--runs-dir', runsDir, 'sweep', file], {
        cwd: work,
        reject: false,
      });
      const dir = await waitForEpoch(runsDir, `-${name}-`, 1);
      child.kill(signal);
      const stopped = await child;
      assert.equal(stopped.exitCode, 130, String(stopped.stderr).slice(-2000));
      assert.ok(dir);
      assert.equal(
        (JSON.parse(fs.readFileSync(path.join(dir, 'run.json'), 'utf8')) as { status: string }).status,
        'KILLED',
      );
      assert.ok(
        fs.existsSync(path.join(dir, 'checkpoints', 'last', 'checkpoint.json')),
        'resumable from its last epoch',
      );
      const sweep = fs.readdirSync(path.join(runsDir, 'sweeps')).find((d) => d.startsWith(`${name}-`))!;
      const status = JSON.parse(fs.readFileSync(path.join(runsDir, 'sweeps', sweep, 'status.json'), 'utf8')) as {
        status: string;
      }[];
      assert.equal(status[0].status, 'killed');
    });
  }
  {
    const signal = 'SIGHUP';
    test(`${signal} stops tlx ui (its normal end: exit 0) and its MLflow server with it, even while it is starting`, async () => {
      const uiRuns = path.join(work, `runs-ui-${signal}`);
      fs.mkdirSync(uiRuns, { recursive: true });
      for (const when of [/synced \d+ local run/, /starting the MLflow server/]) {
        const port = await freePort();
        const ui = execa(process.execPath, [tlxBin, '--runs-dir', uiRuns, 'ui', '--port', String(port)], {
          cwd: work,
          reject: false,
        });
        await waitForStderr(ui, when, 180_000);
        const server = descendantsOf(ui.pid!, 'mlflow');
        ui.kill(signal);
        const { exitCode, signal: killedBy } = await ui;
        assert.equal(exitCode, 0, `${signal} at ${when}: ended by ${killedBy}`);
        assert.ok(await allEnded(server, 5000), 'the server stopped');
        const answered = await fetch(`http://127.0.0.1:${port}/health`).then(
          () => true,
          () => false,
        );
        assert.equal(answered, false, 'nothing listens on its port any more');
      }
    });
  }
  {
    const signal = 'SIGTERM';
    test(`${signal} during tlx convert: exit 130, no Python left, the run's export unchanged; nothing half-written`, async () => {
      const dir = runFolder('ctrlc-export');
      const filesOf = () =>
        fs
          .readdirSync(dir, { recursive: true })
          .map(String)
          .filter((f) => !f.startsWith('log.jsonl'))
          .sort();
      const before = {
        files: filesOf(),
        summary: fs.readFileSync(path.join(dir, 'summary.json'), 'utf8'),
        model: fs.readFileSync(path.join(dir, 'model.tflite')),
      };
      const child = execa(
        process.execPath,
        [tlxBin, '--runs-dir', runsDir, 'convert', dir, '--quantization', 'float16'],
        { cwd: work, reject: false },
      );
      await waitForStderr(child, /converting/);
      const exporters = descendantsOf(child.pid!, 'python/tlx_worker.py');
      child.kill(signal);
      const stopped = await child;
      assert.equal(stopped.exitCode, 130, String(stopped.stderr).slice(-2000));
      assert.ok(await allEnded(exporters, 5000), 'the export worker stopped');
      assert.deepEqual(filesOf(), before.files, 'no file added or left behind');
      assert.equal(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8'), before.summary);
      assert.ok(fs.readFileSync(path.join(dir, 'model.tflite')).equals(before.model));
    });
  }

  test('Ctrl-C during a sweep: the trial stops after its batch (exit 130); the same command resumes that trial from its checkpoint', async () => {
    const file = writeExperiment(
      work,
      'stopsweep',
      `seed: 9\n${tinyDataAndModel}train:\n  feature_extraction: { epochs: 12 }\n  fine_tune: { epochs: 1 }\nsweep:\n  grid:\n    train.fine_tune.fine_tune_at: [100, 140]\n`,
    );
    const child = execa(process.execPath, [tlxBin, '--runs-dir', runsDir, 'sweep', file], { cwd: work, reject: false });
    const dir = await waitForEpoch(runsDir, '-stopsweep-', 2);
    child.kill('SIGINT');
    const stopped = await child;
    assert.equal(stopped.exitCode, 130, String(stopped.stderr).slice(-2000));
    assert.ok(dir);
    const sweeps = fs.readdirSync(path.join(runsDir, 'sweeps')).filter((d) => d.startsWith('stopsweep-'));
    const status = JSON.parse(fs.readFileSync(path.join(runsDir, 'sweeps', sweeps[0], 'status.json'), 'utf8')) as {
      status: string;
      run_dir?: string;
    }[];
    assert.equal(status[0].status, 'killed');
    assert.equal(status[0].run_dir, dir);
    const epochsBefore = readMetrics(dir).length;
    const resumed = await runTlx(['--runs-dir', runsDir, 'sweep', file], { cwd: work, timeout: 600_000 });
    assert.equal(resumed.exitCode, 0, resumed.stderr.slice(-2000));
    const after = JSON.parse(fs.readFileSync(path.join(runsDir, 'sweeps', sweeps[0], 'status.json'), 'utf8')) as {
      status: string;
      run_dir?: string;
    }[];
    assert.deepEqual(
      after.map((s) => s.status),
      ['finished', 'finished'],
    );
    assert.equal(after[0].run_dir, dir, 'the same folder, resumed');
    assert.deepEqual(
      readMetrics(dir)
        .map((m) => m.epoch)
        .slice(0, epochsBefore),
      Array.from({ length: epochsBefore }, (_, i) => i),
    );
    assert.equal(
      fs.readdirSync(runsDir).filter((d) => d.includes('-stopsweep-')).length,
      2,
      'no new folder for the interrupted trial',
    );
  });
});
