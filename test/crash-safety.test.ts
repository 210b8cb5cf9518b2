import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa } from 'execa';
import { runTlx, tlxBin } from './helpers/cli.ts';
import { writeClassFolders } from './helpers/images.ts';
import { readRunWithMlflow, startMlflowServer, type MlflowServer } from './helpers/mlflow.ts';
import { waitForStderr } from './helpers/process.ts';
import { python } from './helpers/python.ts';
import {
  faultTestBody,
  mlflowState,
  readMetrics,
  runDirOf,
  runFolderNamed,
  tinyDataAndModel,
  waitForEpoch,
  writeExperiment,
} from './helpers/runs.ts';
import { tempDir } from './helpers/tmp.ts';

/**
 * Faults, injected with real processes: a second writer, a torn or emptied file, a SIGKILL
 * at every step of writing a checkpoint. After each, the run folder is whole and a resume
 * ends with exactly the numbers of a run nothing happened to. (A server that refuses or
 * never answers: sync-faults.test.ts; Ctrl-C and SIGKILL of processes: processes.test.ts.)
 */

const work = tempDir('tlx-crash-');
const runsDir = path.join(work, 'runs');
let server: MlflowServer;

function experiment(name: string, extra = ''): string {
  return writeExperiment(work, name, `${faultTestBody}${extra}`);
}

const runFolder = (fragment: string) => runFolderNamed(runsDir, fragment);

/** What a run computed, epoch by epoch (not when or how long). */
function numbersOf(dir: string): unknown[] {
  return readMetrics(dir).map((r) => [
    r.epoch,
    r.phase,
    r.loss,
    r.accuracy,
    r.val_loss,
    r.val_accuracy,
    r.learning_rate,
  ]);
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
    const file = writeExperiment(
      work,
      'owned',
      `seed: 9\n${tinyDataAndModel}train:\n  feature_extraction: { epochs: 40 }\n  fine_tune: { epochs: 1 }\n`,
    );
    // The first run holds after its third epoch's checkpoint until the second process has been refused.
    const release = path.join(work, 'release-owned');
    const first = execa(process.execPath, [tlxBin, '--runs-dir', runsDir, 'run', file], {
      cwd: work,
      reject: false,
      env: { TLX_TEST_HOLD_AT: 'epoch.checkpointed@3', TLX_TEST_HOLD_UNTIL: release },
    });
    const dir = await waitForEpoch(runsDir, '-owned-', 1);
    assert.ok(dir);
    const second = await runTlx(['--runs-dir', runsDir, 'run', '--resume', dir], { cwd: work });
    fs.writeFileSync(release, '');
    assert.equal(second.exitCode, 2, second.stderr);
    assert.match(
      second.stderr,
      new RegExp(`run ${path.basename(dir)} is in use by pid ${first.pid} on host \\S+ since \\d{4}-\\d\\d-\\d\\dT`),
    );
    assert.equal((await first).exitCode, 0);
    assert.deepEqual(
      readMetrics(dir).map((m) => m.epoch),
      Array.from({ length: 42 }, (_, i) => i),
      'every epoch once',
    );
  });

  test('a lock left by a SIGKILLed process is taken over, with a log line', async () => {
    const child = execa(process.execPath, [tlxBin, '--runs-dir', runsDir, 'run', experiment('stale')], {
      cwd: work,
      reject: false,
    });
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
    const file = writeExperiment(
      work,
      'twice',
      `${faultTestBody}sweep:\n  grid:\n    train.fine_tune.fine_tune_at: [100, 140]\n`,
    );
    // The first sweep holds at its first trial's first checkpoint until the second has been refused.
    const release = path.join(work, 'release-twice');
    const first = execa(process.execPath, [tlxBin, '--runs-dir', runsDir, 'sweep', file], {
      cwd: work,
      reject: false,
      env: { TLX_TEST_HOLD_AT: 'epoch.checkpointed@1', TLX_TEST_HOLD_UNTIL: release },
    });
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
    const killed = await runTlx(['--runs-dir', runsDir, 'run', experiment('torn')], {
      cwd: work,
      env: { TLX_TEST_KILL_AT: 'epoch.recorded@2' },
    });
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
    const killed = await runTlx(['--runs-dir', runsDir, 'run', experiment('emptied')], {
      cwd: work,
      env: { ...env, TLX_TEST_KILL_AT: 'epoch.recorded@3' },
    });
    assert.equal(killed.signal, 'SIGKILL');
    const dir = runFolder('emptied');
    fs.writeFileSync(path.join(dir, 'mlflow.json'), '');
    const resumed = await runTlx(['--runs-dir', runsDir, 'run', '--resume', dir], { cwd: work, env });
    assert.equal(resumed.exitCode, 0, resumed.stderr.slice(-2000));
    assert.match(resumed.stderr, /mlflow\.json is unreadable; starting its record again/);
    const remote = await readRunWithMlflow(server.url, mlflowState(dir, server.url).run_id, ['val_loss']);
    assert.equal(remote.status, 'FINISHED');
    assert.deepEqual(
      remote.histories.val_loss.map((m) => m.step).sort((a, b) => a - b),
      [0, 1, 2, 3, 4, 5],
      'every epoch once',
    );
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

  for (const point of [
    'checkpoint.written@2',
    'checkpoint.moved-old@2',
    'checkpoint.installed@3',
    'epoch.checkpointed@2',
    'epoch.recorded@3',
  ]) {
    test(`SIGKILL at ${point}: one complete checkpoint survives and the resumed run ends as if nothing happened`, async () => {
      const name = `kill-${point.replace(/[^a-z0-9]/gi, '')}`;
      const killed = await runTlx(['--runs-dir', runsDir, 'run', experiment(name)], {
        cwd: work,
        env: { TLX_TEST_KILL_AT: point },
      });
      assert.equal(killed.signal, 'SIGKILL', `killed at ${point}`);
      const dir = runFolder(name);
      const resumed = await runTlx(['--runs-dir', runsDir, 'run', '--resume', dir], { cwd: work });
      assert.equal(resumed.exitCode, 0, resumed.stderr.slice(-2000));
      assert.deepEqual(numbersOf(dir), reference);
      assert.ok(
        !fs.existsSync(path.join(dir, 'checkpoints', 'last.previous')),
        'the older checkpoint is gone once the newer is in place',
      );
    });
  }

  test('a damaged file of the run at resume (last checkpoint.json, last weights.bin, a middle line of metrics.jsonl): resume passes over it, says which checkpoint it took, and every epoch is recorded once', async () => {
    const killed = await runTlx(['--runs-dir', runsDir, 'run', experiment('damaged')], {
      cwd: work,
      env: { TLX_TEST_KILL_AT: 'epoch.recorded@4' },
    });
    assert.equal(killed.signal, 'SIGKILL');
    const original = runFolder('damaged');
    const damages: [string, (dir: string) => void][] = [
      ['checkpoint.json', (dir) => fs.writeFileSync(path.join(dir, 'checkpoints', 'last', 'checkpoint.json'), '')],
      ['weights.bin', (dir) => fs.truncateSync(path.join(dir, 'checkpoints', 'last', 'weights.bin'), 1000)],
      [
        'metrics.jsonl',
        (dir) => {
          const lines = fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8').split('\n');
          lines[2] = lines[2].slice(0, 20);
          fs.writeFileSync(path.join(dir, 'metrics.jsonl'), lines.join('\n'));
        },
      ],
    ];
    for (const [file, damage] of damages) {
      const dir = `${original}-${file.replace('.', '')}`;
      fs.cpSync(original, dir, { recursive: true });
      damage(dir);
      const resumed = await runTlx(['--runs-dir', runsDir, 'run', '--resume', dir], { cwd: work });
      assert.equal(resumed.exitCode, 0, `${file}: ${resumed.stderr.slice(-2000)}`);
      assert.match(
        resumed.stderr,
        file === 'metrics.jsonl'
          ? /not a valid epoch record|training starts again|resuming from the/
          : /checkpoint last is damaged/,
        file,
      );
      assert.deepEqual(
        readMetrics(dir).map((r) => r.epoch),
        [0, 1, 2, 3, 4, 5],
        `${file}: every epoch once`,
      );
      assert.equal(
        (JSON.parse(fs.readFileSync(path.join(dir, 'run.json'), 'utf8')) as { status: string }).status,
        'FINISHED',
      );
      // Up to the checkpoint resumed from, the numbers are the reference's (after it, a checkpoint without optimizer state may differ).
      const from = /resuming from the \w+ checkpoint \(epoch (\d+)\)/.exec(resumed.stderr);
      const kept = from ? Number(from[1]) + 1 : /starts again from the beginning/.test(resumed.stderr) ? 1 : 5;
      assert.deepEqual(
        numbersOf(dir).slice(0, kept),
        reference.slice(0, kept),
        `${file}: epochs before ${kept} as in a run nothing happened to`,
      );
    }
  });

  test('a full disk (a real 1 MiB tmpfs): the run stops naming the file and what it was writing; with room again, resume ends as if nothing happened', async () => {
    const small = path.join(work, 'small-disk');
    fs.mkdirSync(small, { recursive: true });
    const file = experiment('full');
    // One mount namespace for both commands: the tmpfs lives as long as the shell.
    const script = `mount -t tmpfs -o size=1M tmpfs "$1" || exit 99
node "$2" --runs-dir "$1" run "$3"; echo "first exit $?" >&2
mount -o remount,size=64M "$1" || exit 98
node "$2" --runs-dir "$1" run --resume "$(ls -d "$1"/*-full-*)"; echo "second exit $?" >&2
cp -r "$1"/*-full-* "$4"/`;
    const result = await execa('unshare', ['-m', 'sh', '-c', script, 'sh', small, tlxBin, file, runsDir], {
      cwd: work,
      reject: false,
    });
    assert.match(result.stderr, /first exit 1\b/, result.stderr.slice(-2000));
    assert.match(
      result.stderr,
      /no space left on the device writing the checkpoint last \(epoch \d+\) to \S+-full-\w+\/checkpoints\/last \(ENOSPC\)/,
    );
    assert.match(result.stderr, /second exit 0\b/, result.stderr.slice(-2000));
    assert.deepEqual(numbersOf(runFolder('full')), reference);
  });

  test('epochs recorded but no checkpoint: resume refuses (exit 2) instead of training them twice', async () => {
    const killed = await runTlx(['--runs-dir', runsDir, 'run', experiment('lost')], {
      cwd: work,
      env: { TLX_TEST_KILL_AT: 'epoch.recorded@2' },
    });
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
    const killed = await runTlx(['--runs-dir', runsDir, 'run', experiment('leftovers')], {
      cwd: work,
      env: { TLX_TEST_KILL_AT: 'checkpoint.written@2' },
    });
    assert.equal(killed.signal, 'SIGKILL');
    const dir = runFolder('leftovers');
    const dead = 2 ** 22 + 17; // above the kernel's default pid_max: no process has it
    fs.mkdirSync(path.join(dir, `.export.tmp-${dead}-abc`));
    fs.writeFileSync(path.join(dir, `.export.tmp-${dead}-abc`, 'test.u8'), Buffer.alloc(1024));
    assert.ok(
      fs.readdirSync(path.join(dir, 'checkpoints')).some((name) => name.includes('.tmp-')),
      'the kill left a half-written checkpoint folder',
    );
    const resumed = await runTlx(['--runs-dir', runsDir, 'run', '--resume', dir], { cwd: work });
    assert.equal(resumed.exitCode, 0, resumed.stderr.slice(-2000));
    const leftovers = [...fs.readdirSync(dir), ...fs.readdirSync(path.join(dir, 'checkpoints'))].filter((name) =>
      name.includes('.tmp-'),
    );
    assert.deepEqual(leftovers, []);
  });
});
