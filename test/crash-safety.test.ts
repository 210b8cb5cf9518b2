import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import type { RunSummary } from '../src/run-folder/records.ts';
import { runTlx, tlxBin } from './helpers/cli.ts';
import { writeClassFolders } from './helpers/images.ts';
import { hangingServer, readRunWithMlflow, ruleProxy, startMlflowServer, type MlflowServer } from './helpers/mlflow.ts';
import { allEnded, descendantsOf, waitForStderr } from './helpers/process.ts';
import { python } from './helpers/python.ts';
import { mlflowState, readMetrics, runDirOf, tinyDataAndModel, waitForEpoch, writeExperiment } from './helpers/runs.ts';
import { tempDir } from './helpers/tmp.ts';

/**
 * Faults, injected with real processes: a second writer, a torn or emptied file, a SIGKILL
 * at every step of writing a checkpoint, a server that refuses or never answers, Ctrl-C and
 * SIGKILL during the Python export. After each, the run folder is whole and a resume ends
 * with exactly the numbers of a run nothing happened to.
 */

const work = tempDir('tlx-crash-');
const runsDir = path.join(work, 'runs');
let server: MlflowServer;

const body = `seed: 9
${tinyDataAndModel}train:
  feature_extraction: { epochs: 3, optimizer: { name: adam, learning_rate: 0.001 } }
  fine_tune: { fine_tune_at: 120, epochs: 2 }
`;

function experiment(name: string, extra = ''): string {
  return writeExperiment(work, name, `${body}${extra}`);
}

function runFolder(fragment: string): string {
  return fs.readdirSync(runsDir).map((d) => path.join(runsDir, d)).find((d) => d.includes(`-${fragment}-`))!;
}

/** What a run computed, epoch by epoch (not when or how long). */
function numbersOf(dir: string): unknown[] {
  return readMetrics(dir).map((r) => [r.epoch, r.phase, r.loss, r.accuracy, r.val_loss, r.val_accuracy, r.learning_rate]);
}

let reference: unknown[];

before(async () => {
  await writeClassFolders(path.join(work, 'data'), ['ants', 'bees'], 16, { size: 32 });
  server = await startMlflowServer({ dataDir: path.join(work, 'mlflow') });
  const whole = await runTlx(['--runs-dir', runsDir, 'run', experiment('reference')], { cwd: work });
  assert.equal(whole.exitCode, 0, whole.stderr.slice(-2000));
  reference = numbersOf(runDirOf(whole.stdout));
});

after(() => server?.stop());

describe('one writer per run and per sweep', () => {
  test('a second process on a run that is still alive exits 2 naming the owner; the first finishes with every epoch once', async () => {
    const file = writeExperiment(work, 'owned', `seed: 9\n${tinyDataAndModel}train:\n  feature_extraction: { epochs: 40 }\n  fine_tune: { epochs: 1 }\n`);
    // The first run holds after its third epoch's checkpoint until the second process has been refused.
    const release = path.join(work, 'release-owned');
    const first = execa(process.execPath, [tlxBin, '--runs-dir', runsDir, 'run', file], { cwd: work, reject: false, env: { TLX_TEST_HOLD_AT: 'epoch.checkpointed@3', TLX_TEST_HOLD_UNTIL: release } });
    const dir = await waitForEpoch(runsDir, '-owned-', 1);
    assert.ok(dir);
    const second = await runTlx(['--runs-dir', runsDir, 'run', '--resume', dir], { cwd: work });
    fs.writeFileSync(release, '');
    assert.equal(second.exitCode, 2, second.stderr);
    assert.match(second.stderr, new RegExp(`run ${path.basename(dir)} is in use by pid ${first.pid} on host \\S+ since \\d{4}-\\d\\d-\\d\\dT`));
    assert.equal((await first).exitCode, 0);
    assert.deepEqual(readMetrics(dir).map((m) => m.epoch), Array.from({ length: 42 }, (_, i) => i), 'every epoch once');
  });

  test('a lock left by a SIGKILLed process is taken over, with a log line', async () => {
    const child = execa(process.execPath, [tlxBin, '--runs-dir', runsDir, 'run', experiment('stale')], { cwd: work, reject: false });
    const dir = (await waitForEpoch(runsDir, '-stale-', 1))!;
    child.kill('SIGKILL');
    await child;
    assert.ok(fs.existsSync(path.join(dir, '.lock')), 'the dead process left its lock');
    const resumed = await runTlx(['--runs-dir', runsDir, 'run', '--resume', dir], { cwd: work });
    assert.equal(resumed.exitCode, 0, resumed.stderr.slice(-2000));
    assert.match(resumed.stderr, /taking over the lock of run .* \(pid \d+ is not running\)/);
    assert.deepEqual(numbersOf(dir), reference);
    assert.ok(!fs.existsSync(path.join(dir, '.lock')), 'released at exit');
  });

  test('two identical sweeps at once: the second exits 2, nothing runs twice', async () => {
    const file = writeExperiment(work, 'twice', `${body}sweep:\n  grid:\n    train.fine_tune.fine_tune_at: [100, 140]\n`);
    // The first sweep holds at its first trial's first checkpoint until the second has been refused.
    const release = path.join(work, 'release-twice');
    const first = execa(process.execPath, [tlxBin, '--runs-dir', runsDir, 'sweep', file], { cwd: work, reject: false, env: { TLX_TEST_HOLD_AT: 'epoch.checkpointed@1', TLX_TEST_HOLD_UNTIL: release } });
    await waitForStderr(first, /trial 0:/);
    const second = await runTlx(['--runs-dir', runsDir, 'sweep', file], { cwd: work });
    fs.writeFileSync(release, '');
    assert.equal(second.exitCode, 2, second.stderr);
    assert.match(second.stderr, /sweep twice-[0-9a-f]+ is in use by pid \d+/);
    assert.equal((await first).exitCode, 0);
    assert.equal(fs.readdirSync(runsDir).filter((d) => d.includes('-twice-')).length, 2, 'one run folder per trial');
  });
});

describe('torn and lost writes', () => {
  test('a torn last line of metrics.jsonl is cut with a warning; the resumed run records every epoch once, as if nothing happened', async () => {
    const killed = await runTlx(['--runs-dir', runsDir, 'run', experiment('torn')], { cwd: work, env: { TLX_TEST_KILL_AT: 'epoch.recorded@2' } });
    assert.equal(killed.signal, 'SIGKILL');
    const dir = runFolder('torn');
    fs.appendFileSync(path.join(dir, 'metrics.jsonl'), '{"epoch":3,"phase":"feature_extr');
    const resumed = await runTlx(['--runs-dir', runsDir, 'run', '--resume', dir], { cwd: work });
    assert.equal(resumed.exitCode, 0, resumed.stderr.slice(-2000));
    assert.match(resumed.stderr, /metrics\.jsonl ended with a torn line \(\d+ bytes/);
    assert.deepEqual(numbersOf(dir), reference);
  });

  test('an empty mlflow.json (power cut): the tracked run resumes and MLflow gets every epoch once, in one run', async () => {
    const env = { MLFLOW_TRACKING_URI: server.url };
    const killed = await runTlx(['--runs-dir', runsDir, 'run', experiment('emptied')], { cwd: work, env: { ...env, TLX_TEST_KILL_AT: 'epoch.recorded@3' } });
    assert.equal(killed.signal, 'SIGKILL');
    const dir = runFolder('emptied');
    fs.writeFileSync(path.join(dir, 'mlflow.json'), '');
    const resumed = await runTlx(['--runs-dir', runsDir, 'run', '--resume', dir], { cwd: work, env });
    assert.equal(resumed.exitCode, 0, resumed.stderr.slice(-2000));
    assert.match(resumed.stderr, /mlflow\.json is unreadable; starting its record again/);
    const remote = await readRunWithMlflow(server.url, mlflowState(dir, server.url).run_id, ['val_loss']);
    assert.equal(remote.status, 'FINISHED');
    assert.deepEqual(remote.histories.val_loss.map((m) => m.step).sort((a, b) => a - b), [0, 1, 2, 3, 4, 5], 'every epoch once');
    const runs = await python(
      `import sys
from mlflow.tracking import MlflowClient
c = MlflowClient(sys.argv[1])
e = c.get_experiment_by_name("emptied")
print(len(c.search_runs([e.experiment_id], filter_string="tags.\`tlx.run_id\` = '" + sys.argv[2] + "'")))`,
      [server.url, path.basename(dir)],
    );
    assert.equal(runs.trim(), '1', 'no second MLflow run for the same tlx run');
  });

  for (const point of ['checkpoint.written@2', 'checkpoint.moved-old@2', 'checkpoint.installed@3', 'epoch.checkpointed@2', 'epoch.recorded@3']) {
    test(`SIGKILL at ${point}: one complete checkpoint survives and the resumed run ends as if nothing happened`, async () => {
      const name = `kill-${point.replace(/[^a-z0-9]/gi, '')}`;
      const killed = await runTlx(['--runs-dir', runsDir, 'run', experiment(name)], { cwd: work, env: { TLX_TEST_KILL_AT: point } });
      assert.equal(killed.signal, 'SIGKILL', `killed at ${point}`);
      const dir = runFolder(name);
      const resumed = await runTlx(['--runs-dir', runsDir, 'run', '--resume', dir], { cwd: work });
      assert.equal(resumed.exitCode, 0, resumed.stderr.slice(-2000));
      assert.deepEqual(numbersOf(dir), reference);
      assert.ok(!fs.existsSync(path.join(dir, 'checkpoints', 'last.previous')), 'the older checkpoint is gone once the newer is in place');
    });
  }

  test('epochs recorded but no checkpoint: resume refuses (exit 2) instead of training them twice', async () => {
    const killed = await runTlx(['--runs-dir', runsDir, 'run', experiment('lost')], { cwd: work, env: { TLX_TEST_KILL_AT: 'epoch.recorded@2' } });
    assert.equal(killed.signal, 'SIGKILL');
    const dir = runFolder('lost');
    fs.rmSync(path.join(dir, 'checkpoints'), { recursive: true });
    const before = fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8');
    const resumed = await runTlx(['--runs-dir', runsDir, 'run', '--resume', dir], { cwd: work });
    assert.equal(resumed.exitCode, 2);
    assert.match(resumed.stderr, /metrics\.jsonl records epochs 1\.\.2 but the run has no checkpoint/);
    assert.equal(fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8'), before, 'nothing appended');
  });

  test('temp files of dead processes are removed when a run starts again', async () => {
    const killed = await runTlx(['--runs-dir', runsDir, 'run', experiment('leftovers')], { cwd: work, env: { TLX_TEST_KILL_AT: 'checkpoint.written@2' } });
    assert.equal(killed.signal, 'SIGKILL');
    const dir = runFolder('leftovers');
    const dead = 2 ** 22 + 17; // above the kernel's default pid_max: no process has it
    fs.mkdirSync(path.join(dir, `.export.tmp-${dead}-abc`));
    fs.writeFileSync(path.join(dir, `.export.tmp-${dead}-abc`, 'test.u8'), Buffer.alloc(1024));
    assert.ok(fs.readdirSync(path.join(dir, 'checkpoints')).some((name) => name.includes('.tmp-')), 'the kill left a half-written checkpoint folder');
    const resumed = await runTlx(['--runs-dir', runsDir, 'run', '--resume', dir], { cwd: work });
    assert.equal(resumed.exitCode, 0, resumed.stderr.slice(-2000));
    const leftovers = [...fs.readdirSync(dir), ...fs.readdirSync(path.join(dir, 'checkpoints'))].filter((name) => name.includes('.tmp-'));
    assert.deepEqual(leftovers, []);
  });
});

describe('MLflow sync', () => {
  test('a proxy\'s 413 on one artifact and a 400 on one param: the rest arrives, the run is FINISHED in MLflow, and both refusals are recorded and printed', async () => {
    const proxy = await ruleProxy(server.url, (request) => {
      if (request.method === 'PUT' && request.url.endsWith('/artifacts/config.yaml')) return { status: 413, body: '<html>Request Entity Too Large</html>' };
      if (request.url.includes('log-batch') && request.body.includes('"key":"seed"')) return { status: 400, body: '{"error_code":"INVALID_PARAMETER_VALUE","message":"Changing param values is not allowed"}' };
      return undefined;
    });
    try {
      const result = await runTlx(['--runs-dir', runsDir, 'run', experiment('refused')], { cwd: work, env: { MLFLOW_TRACKING_URI: proxy.url } });
      assert.equal(result.exitCode, 0, result.stderr.slice(-2000));
      const dir = runDirOf(result.stdout);
      const state = JSON.parse(fs.readFileSync(path.join(dir, 'mlflow.json'), 'utf8')) as { servers: Record<string, { refused: { kind: string; item: string; status: number }[]; run_id: string }> };
      const refused = state.servers[proxy.url].refused.map((r) => [r.kind, r.item.split('@')[0], r.status]);
      assert.deepEqual(refused.sort(), [['artifact', 'config.yaml', 413], ['param', 'seed=9', 400]]);
      const remote = await readRunWithMlflow(server.url, state.servers[proxy.url].run_id, ['val_loss']);
      assert.equal(remote.status, 'FINISHED');
      assert.equal(remote.params['train.fine_tune.fine_tune_at'], '120', 'the other params arrived');
      assert.equal(remote.params.seed, undefined);
      assert.ok(remote.artifacts.includes('metrics.jsonl') && !remote.artifacts.includes('config.yaml'));
      assert.equal(remote.histories.val_loss.length, 6);
      const sync = await runTlx(['--runs-dir', runsDir, 'sync', dir], { cwd: work, env: { MLFLOW_TRACKING_URI: proxy.url } });
      assert.equal(sync.exitCode, 0, sync.stderr);
      const line = JSON.parse(sync.stdout.trim()) as { refused: { kind: string }[] };
      assert.deepEqual(line.refused.map((r) => r.kind).sort(), ['artifact', 'param'], 'tlx sync says what could not be sent');
    } finally {
      await proxy.stop();
    }
  });

  test('a server that never answers: at most one probe per epoch, and the run finishes not synced', async () => {
    const hanging = await hangingServer();
    try {
      // The final sync waits MLflow's request timeout per attempt (30 s by default): 2 s here, the property is the count.
      const result = await runTlx(['--runs-dir', runsDir, 'run', experiment('blackhole')], { cwd: work, env: { MLFLOW_TRACKING_URI: hanging.url, MLFLOW_HTTP_REQUEST_TIMEOUT: '2' }, timeout: 300_000 });
      assert.equal(result.exitCode, 0, result.stderr.slice(-2000));
      const dir = runDirOf(result.stdout);
      // 5 epochs + epoch 0 + the data: at most one bounded probe each, plus the final attempt with its retries.
      assert.ok(hanging.connections() <= 12, `${hanging.connections()} connections`);
      assert.match(fs.readFileSync(path.join(dir, 'mlflow.json'), 'utf8'), /"synced": false/);
    } finally {
      await hanging.stop();
    }
  });

  test('final metrics go to a server once, however often the run is synced', async () => {
    const proxy = await ruleProxy(server.url, () => undefined);
    try {
      const result = await runTlx(['--runs-dir', runsDir, 'run', experiment('once')], { cwd: work, env: { MLFLOW_TRACKING_URI: proxy.url } });
      assert.equal(result.exitCode, 0, result.stderr.slice(-2000));
      for (let i = 0; i < 2; i++) assert.equal((await runTlx(['--runs-dir', runsDir, 'sync', runDirOf(result.stdout)], { cwd: work, env: { MLFLOW_TRACKING_URI: proxy.url } })).exitCode, 0);
      const finals = proxy.requests.filter((r) => r.url.includes('log-batch') && r.body.includes('"key":"final_val_accuracy"'));
      assert.equal(finals.length, 1, `final metrics were sent ${finals.length} times`);
      assert.doesNotMatch(fs.readFileSync(path.join(runDirOf(result.stdout), 'mlflow.json'), 'utf8'), /"pending": \{\s*"/);
    } finally {
      await proxy.stop();
    }
  });
});

describe('processes', () => {
  const exporting = `\nexport:\n  tflite: { quantization: int8, representative_images: 20, max_accuracy_drop: 1 }\n`;

  test('Ctrl-C during the export (the terminal signals the whole group): exit 130, run KILLED, no Python left; resume exports', async () => {
    const file = experiment('ctrlc-export', exporting);
    const child = execa(process.execPath, [tlxBin, '--runs-dir', runsDir, 'run', file], { cwd: work, reject: false, detached: true });
    await waitForStderr(child, /converting to TFLite/);
    const exporters = descendantsOf(child.pid!, 'python/tlx_worker.py');
    assert.ok(exporters.length > 0, 'the export worker runs');
    process.kill(-child.pid!, 'SIGINT');
    const result = await child;
    assert.equal(result.exitCode, 130, String(result.stderr).slice(-2000));
    const dir = runFolder('ctrlc-export');
    assert.equal((JSON.parse(fs.readFileSync(path.join(dir, 'run.json'), 'utf8')) as { status: string }).status, 'KILLED');
    assert.ok(await allEnded(exporters), 'the export worker stopped');
    assert.ok(!fs.existsSync(path.join(dir, 'model.tflite')));
    const resumed = await runTlx(['--runs-dir', runsDir, 'run', '--resume', dir], { cwd: work, timeout: 600_000 });
    assert.equal(resumed.exitCode, 0, resumed.stderr.slice(-2000));
    assert.equal((JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8')) as RunSummary).export?.tflite?.status, 'verified');
  });

  test('SIGKILL of tlx during the export: the Python worker exits too and never writes into the run', async () => {
    const file = experiment('killed-export', exporting);
    const child = execa(process.execPath, [tlxBin, '--runs-dir', runsDir, 'run', file], { cwd: work, reject: false });
    await waitForStderr(child, /converting to TFLite/);
    const exporters = descendantsOf(child.pid!, 'python/tlx_worker.py');
    assert.ok(exporters.length > 0, 'the worker runs');
    child.kill('SIGKILL');
    await child;
    assert.ok(await allEnded(exporters), 'the worker died with its parent');
    await new Promise((resolve) => setTimeout(resolve, 3000));
    const dir = runFolder('killed-export');
    assert.ok(!fs.existsSync(path.join(dir, 'model.tflite')), 'no late model.tflite');
  });

  test('stopping an MLflow server stops its whole process group', async () => {
    const own = await startMlflowServer({ dataDir: path.join(work, 'mlflow-group') });
    const group = own.pid!;
    const members = async () => String((await execa('pgrep', ['-g', String(group)], { reject: false })).stdout).trim();
    assert.notEqual(await members(), '', 'the server and its workers run in their own group');
    await own.stop();
    assert.equal(await members(), '', 'nothing of the group is left (port and database are free)');
  });

  test('Ctrl-C during a sweep: the trial stops after its batch (exit 130); the same command resumes that trial from its checkpoint', async () => {
    const file = writeExperiment(work, 'stopsweep', `seed: 9\n${tinyDataAndModel}train:\n  feature_extraction: { epochs: 12 }\n  fine_tune: { epochs: 1 }\nsweep:\n  grid:\n    train.fine_tune.fine_tune_at: [100, 140]\n`);
    const child = execa(process.execPath, [tlxBin, '--runs-dir', runsDir, 'sweep', file], { cwd: work, reject: false });
    const dir = await waitForEpoch(runsDir, '-stopsweep-', 2);
    child.kill('SIGINT');
    const stopped = await child;
    assert.equal(stopped.exitCode, 130, String(stopped.stderr).slice(-2000));
    assert.ok(dir);
    const sweeps = fs.readdirSync(path.join(runsDir, 'sweeps')).filter((d) => d.startsWith('stopsweep-'));
    const status = JSON.parse(fs.readFileSync(path.join(runsDir, 'sweeps', sweeps[0], 'status.json'), 'utf8')) as { status: string; run_dir?: string }[];
    assert.equal(status[0].status, 'killed');
    assert.equal(status[0].run_dir, dir);
    const epochsBefore = readMetrics(dir).length;
    const resumed = await runTlx(['--runs-dir', runsDir, 'sweep', file], { cwd: work, timeout: 600_000 });
    assert.equal(resumed.exitCode, 0, resumed.stderr.slice(-2000));
    const after = JSON.parse(fs.readFileSync(path.join(runsDir, 'sweeps', sweeps[0], 'status.json'), 'utf8')) as { status: string; run_dir?: string }[];
    assert.deepEqual(after.map((s) => s.status), ['finished', 'finished']);
    assert.equal(after[0].run_dir, dir, 'the same folder, resumed');
    assert.deepEqual(readMetrics(dir).map((m) => m.epoch).slice(0, epochsBefore), Array.from({ length: epochsBefore }, (_, i) => i));
    assert.equal(fs.readdirSync(runsDir).filter((d) => d.includes('-stopsweep-')).length, 2, 'no new folder for the interrupted trial');
  });
});
