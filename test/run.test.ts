import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { execa } from 'execa';
import type { RunJson as RunMeta, RunSummary } from '../src/run-folder/records.ts';
import { runTlx, tlxBin } from './helpers/cli.ts';
import { writeClassFolders } from './helpers/images.ts';
import { readMetrics, runDirOf, waitForEpoch, writeExperiment } from './helpers/runs.ts';
import { tempDir } from './helpers/tmp.ts';

const work = tempDir('tlx-run-');
const runsDir = path.join(work, 'runs');

/** What a run computed, epoch by epoch (not when or how long). */
function numbersOf(records: ReturnType<typeof readMetrics>): unknown[] {
  return records.map((r) => [r.epoch, r.phase, r.loss, r.accuracy, r.val_loss, r.val_accuracy, r.learning_rate]);
}

function experiment(name: string, body: string): string {
  return writeExperiment(work, name, `seed: 5\n${body}`);
}

const tinyData = `dataset:
  path: data
  validation_split: 0.3
  image_size: [32, 32]
  batch_size: 8
augmentation:
  - random_flip: horizontal
  - random_rotation: 0.05
model:
  weights: npm:nsfwjs
  dropout: 0.2
`;

before(async () => {
  await writeClassFolders(path.join(work, 'data'), ['cats', 'dogs'], 30, { size: 32 });
});

describe('tlx run', () => {
  test('a run leaves the complete record: config, metrics per epoch and phase, summary, plots, model', async () => {
    const file = experiment(
      'record',
      `${tinyData}train:
  feature_extraction: { epochs: 2, optimizer: { name: adam, learning_rate: 0.001 } }
  fine_tune: { fine_tune_at: 100, epochs: 2, optimizer: { name: rmsprop, learning_rate: 0.0001 } }
`,
    );
    const result = await runTlx(['--runs-dir', runsDir, 'run', file], { cwd: work });
    assert.equal(result.exitCode, 0, result.stderr.slice(-3000));
    const dir = runDirOf(result.stdout);
    const metrics = readMetrics(dir);
    assert.deepEqual(
      metrics.map((m) => [m.epoch, m.phase]),
      [
        [0, 'initial'],
        [1, 'feature_extraction'],
        [2, 'feature_extraction'],
        [3, 'fine_tune'],
        [4, 'fine_tune'],
      ],
    );
    for (const m of metrics.slice(1))
      for (const key of ['loss', 'accuracy', 'val_loss', 'val_accuracy'] as const)
        assert.equal(typeof m[key], 'number');
    const summary = JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8')) as RunSummary;
    assert.equal(summary.status, 'FINISHED');
    assert.equal(summary.run_id, path.basename(dir));
    assert.deepEqual(summary.dataset.classes, ['cats', 'dogs']);
    assert.equal(summary.dataset.counts.train + summary.dataset.counts.validation + summary.dataset.counts.test, 60);
    assert.equal(summary.head.kind, 'binary_logit');
    assert.equal(summary.phases.feature_extraction?.trainable_variables, 2);
    assert.equal(summary.phases.fine_tune?.trainable_variables, 56);
    assert.equal(summary.phases.fine_tune?.epochs, 2);
    // Two colour-and-stripe classes (chance: 0.5) from pretrained features: a run that learns gets well above chance.
    assert.ok(
      summary.metrics.final && summary.metrics.final.val_accuracy >= 0.8,
      `final val_accuracy ${summary.metrics.final?.val_accuracy}`,
    );
    assert.ok(metrics.at(-1)!.val_loss < metrics[0].val_loss, 'validation loss fell from before training');
    for (const file of [
      'config.yaml',
      'labels.txt',
      'run.json',
      'model/model.json',
      'model/classifier.json',
      'checkpoints/last/checkpoint.json',
      'plots/learning_curves.png',
      'plots/confusion_matrix.png',
      'plots/samples.png',
      'plots/augmentation.png',
    ]) {
      assert.ok(fs.existsSync(path.join(dir, file)), file);
    }
    assert.equal(fs.readFileSync(path.join(dir, 'labels.txt'), 'utf8'), 'cats\ndogs\n');
    assert.match(fs.readFileSync(path.join(dir, 'config.yaml'), 'utf8'), /fine_tune_at: 100/);
    const png = fs.readFileSync(path.join(dir, 'plots', 'learning_curves.png'));
    assert.equal(png.subarray(1, 4).toString(), 'PNG');
  });

  test('same seed and config: same splits, augmentation draws, initialisation and dropout masks, so the same numbers', async () => {
    const body = `${tinyData}train:\n  feature_extraction: { epochs: 1 }\n  fine_tune: { epochs: 0 }\n`;
    const a = await runTlx(['--runs-dir', runsDir, 'run', experiment('same-a', body)], { cwd: work });
    const b = await runTlx(['--runs-dir', runsDir, 'run', experiment('same-b', body)], { cwd: work });
    const [ma, mb] = [readMetrics(runDirOf(a.stdout)), readMetrics(runDirOf(b.stdout))];
    assert.equal(ma[0].val_loss, mb[0].val_loss, 'evaluation before training is identical');
    assert.equal(ma[1].loss, mb[1].loss, 'the training epoch is identical');
    assert.equal(ma[1].val_loss, mb[1].val_loss);
  });

  test('a run killed with SIGKILL resumes from its last completed epoch to exactly the numbers of an uninterrupted run', async () => {
    const body = `${tinyData}train:
  feature_extraction: { epochs: 3, optimizer: { name: adam, learning_rate: 0.001 } }
  fine_tune: { fine_tune_at: 120, epochs: 3 }
`;
    const file = experiment('killed', body);
    const child = execa(process.execPath, [tlxBin, '--runs-dir', runsDir, 'run', file], { cwd: work, reject: false });
    const dir = await waitForEpoch(runsDir, '-killed-', 2);
    child.kill('SIGKILL');
    await child;
    assert.ok(dir, 'the run folder appeared');
    const before = fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8');
    assert.ok(readMetrics(dir).length < 7, 'killed before the end');
    assert.equal((JSON.parse(fs.readFileSync(path.join(dir, 'run.json'), 'utf8')) as RunMeta).status, 'RUNNING');
    const resumed = await runTlx(['--runs-dir', runsDir, 'run', '--resume', dir], { cwd: work });
    assert.equal(resumed.exitCode, 0, resumed.stderr.slice(-3000));
    const after = fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8');
    assert.ok(after.startsWith(before), 'earlier lines are untouched');
    const summary = JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8')) as RunSummary;
    assert.equal(summary.status, 'FINISHED');
    // Runs are bitwise reproducible: the resumed run must end exactly where an uninterrupted one does.
    const whole = await runTlx(['--runs-dir', runsDir, 'run', experiment('unkilled', body)], { cwd: work });
    assert.equal(whole.exitCode, 0, whole.stderr.slice(-2000));
    assert.deepEqual(
      numbersOf(readMetrics(dir)),
      numbersOf(readMetrics(runDirOf(whole.stdout))),
      'epoch by epoch, the same numbers',
    );
  });

  test('fine-tuning from the outputs feature extraction kept (in memory or in files) ends exactly where fine-tuning that computes them ends', async () => {
    // A random flip alone is cached (two variants per image), so feature extraction keeps the layers below fine_tune_at.
    const body =
      tinyData.replace('  - random_rotation: 0.05\n', '') +
      `train:
  feature_extraction: { epochs: 2, optimizer: { name: adam, learning_rate: 0.001 } }
  fine_tune: { fine_tune_at: 120, epochs: 2 }
`;
    const whole = await runTlx(['--runs-dir', runsDir, 'run', experiment('kept', body)], { cwd: work });
    assert.equal(whole.exitCode, 0, whole.stderr.slice(-2000));
    assert.match(
      whole.stderr,
      /feature_extraction: frozen layers' outputs computed for 2 variants .*kept for what follows/,
    );
    assert.match(
      whole.stderr,
      /fine_tune: frozen layers' outputs computed for 2 variants .*reused \(computed earlier in this process\)/,
    );
    // Killed as feature extraction completes: the resumed process fine-tunes with nothing kept, computing them itself.
    const killed = await runTlx(['--runs-dir', runsDir, 'run', experiment('recomputed', body)], {
      cwd: work,
      env: { TLX_TEST_KILL_AT: 'phase.complete' },
    });
    assert.equal(killed.signal, 'SIGKILL');
    const dir = path.join(
      runsDir,
      fs.readdirSync(runsDir).find((d) => d.includes('-recomputed-'))!,
    );
    const resumed = await runTlx(['--runs-dir', runsDir, 'run', '--resume', dir], { cwd: work });
    assert.equal(resumed.exitCode, 0, resumed.stderr.slice(-2000));
    assert.match(
      resumed.stderr,
      /fine_tune: frozen layers' outputs computed for 2 variants of each image \(random_flip:horizontal\) \([\d.]+ MiB\)"/,
    );
    assert.deepEqual(
      numbersOf(readMetrics(dir)),
      numbersOf(readMetrics(runDirOf(whole.stdout))),
      'epoch by epoch, the same numbers',
    );
    // Nothing kept in memory: both phases' rows in files under the cache folder, the same numbers again.
    const cacheDir = path.join(work, 'cache-files');
    const inFiles = await runTlx(['--runs-dir', runsDir, '--cache-dir', cacheDir, 'run', experiment('files', body)], {
      cwd: work,
      env: { TLX_CACHE_MEMORY_MB: '0' },
    });
    assert.equal(inFiles.exitCode, 0, inFiles.stderr.slice(-2000));
    assert.match(
      inFiles.stderr,
      /feature_extraction: frozen layers' outputs computed for 2 variants .* of it in files under .*cache-files\/frozen-outputs, beyond the 0\.0 MiB a cache keeps in memory.*kept for what follows/,
    );
    assert.deepEqual(fs.readdirSync(path.join(cacheDir, 'frozen-outputs')), [], 'the files are gone');
    assert.deepEqual(
      numbersOf(readMetrics(runDirOf(inFiles.stdout))),
      numbersOf(readMetrics(runDirOf(whole.stdout))),
      'epoch by epoch, the same numbers from files',
    );
  });

  test('a phase that stopped early is not entered again on resume', async () => {
    // min_delta 10 on the loss: no epoch improves, so early stopping ends feature extraction at its 2nd epoch (of 5).
    const body = `${tinyData}train:
  feature_extraction: { epochs: 5, optimizer: { name: adam, learning_rate: 0.001 }, early_stopping: { monitor: loss, patience: 1, min_delta: 10 } }
  fine_tune: { fine_tune_at: 120, epochs: 2 }
`;
    const killed = await runTlx(['--runs-dir', runsDir, 'run', experiment('stopped', body)], {
      cwd: work,
      env: { TLX_TEST_KILL_AT: 'phase.complete' },
    });
    assert.equal(killed.signal, 'SIGKILL', 'killed right after feature extraction completed');
    const dir = fs
      .readdirSync(runsDir)
      .map((d) => path.join(runsDir, d))
      .find((d) => d.includes('-stopped-'))!;
    assert.deepEqual(
      readMetrics(dir).map((m) => m.epoch),
      [0, 1, 2],
    );
    const resumed = await runTlx(['--runs-dir', runsDir, 'run', '--resume', dir], { cwd: work });
    assert.equal(resumed.exitCode, 0, resumed.stderr.slice(-3000));
    assert.deepEqual(
      readMetrics(dir).map((m) => [m.epoch, m.phase]),
      [
        [0, 'initial'],
        [1, 'feature_extraction'],
        [2, 'feature_extraction'],
        [6, 'fine_tune'],
        [7, 'fine_tune'],
      ],
    );
    const summary = JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8')) as RunSummary;
    assert.equal(summary.phases.feature_extraction?.stopped_early, true);
    assert.equal(summary.phases.feature_extraction?.restored_best_epoch, 1);
    const whole = await runTlx(['--runs-dir', runsDir, 'run', experiment('unstopped', body)], { cwd: work });
    assert.deepEqual(
      numbersOf(readMetrics(dir)),
      numbersOf(readMetrics(runDirOf(whole.stdout))),
      'the same numbers as without the kill',
    );
  });

  for (const [signal, name] of [
    ['SIGINT', 'Ctrl-C'],
    ['SIGHUP', 'SIGHUP (a closed terminal)'],
  ] as const) {
    test(`${name} stops after the current batch, saves, marks the run KILLED (exit 130); resume finishes it`, async () => {
      const file = experiment(
        `interrupted-${signal}`,
        `${tinyData}train:\n  feature_extraction: { epochs: 20 }\n  fine_tune: { epochs: 1 }\n`,
      );
      // The run holds right after recording epoch 1 until the test lets it go, so the signal
      // always reaches a run that is training, however fast the epochs and slow the machine.
      const release = path.join(work, `release-${signal}`);
      const child = execa(process.execPath, [tlxBin, '--runs-dir', runsDir, 'run', file], {
        cwd: work,
        reject: false,
        env: { TLX_TEST_HOLD_AT: 'epoch.recorded@1', TLX_TEST_HOLD_UNTIL: release },
      });
      const dir = await waitForEpoch(runsDir, `-interrupted-${signal}-`, 1);
      child.kill(signal);
      fs.writeFileSync(release, '');
      const result = await child;
      assert.equal(result.exitCode, 130);
      assert.ok(dir);
      assert.equal((JSON.parse(fs.readFileSync(path.join(dir, 'run.json'), 'utf8')) as RunMeta).status, 'KILLED');
      assert.ok(
        fs.existsSync(path.join(dir, 'checkpoints', 'last', 'checkpoint.json')),
        'the last completed epoch is checkpointed',
      );
      assert.ok(
        !fs.existsSync(path.join(dir, 'checkpoints', 'interrupted')),
        'no half-epoch checkpoint: resume starts the interrupted epoch again',
      );
      const epochs = readMetrics(dir).map((m) => m.epoch);
      assert.ok(epochs.length < 22);
      const resumed = await runTlx(['--runs-dir', runsDir, 'run', '--resume', dir], { cwd: work });
      assert.equal(resumed.exitCode, 0, resumed.stderr.slice(-2000));
      assert.deepEqual(
        readMetrics(dir).map((m) => m.epoch),
        Array.from({ length: 22 }, (_, i) => i),
      );
    });
  }

  test('data tlx refuses (one class; a folder of many empty class folders) exits 2 with the problem, quotes at most 5 names, and leaves no run folder', async () => {
    const oneClass = path.join(work, 'one-class');
    await writeClassFolders(oneClass, ['only'], 4, { size: 32 });
    const empties = path.join(work, 'empties');
    for (let i = 0; i < 40; i++)
      fs.mkdirSync(path.join(empties, `empty-${String(i).padStart(2, '0')}`), { recursive: true });
    const before = fs.existsSync(runsDir) ? fs.readdirSync(runsDir).sort() : [];
    for (const [data, problem] of [
      [oneClass, /only one class folder \(only\)/],
      [
        empties,
        /class folder\(s\) with no images in \S+: empty-00, empty-01, empty-02, empty-03, empty-04 and 35 more$/m,
      ],
    ] as const) {
      const file = experiment(
        `refused-${path.basename(data)}`,
        `dataset: { path: ${data}, validation_split: 0.3, image_size: [32, 32], batch_size: 8 }\nmodel: { alpha: 0.35, weights: none }\n`,
      );
      const result = await runTlx(['--runs-dir', runsDir, 'run', file], { cwd: work });
      assert.equal(result.exitCode, 2, result.stderr.slice(-1000));
      assert.match(result.stderr, problem);
      assert.deepEqual(
        fs.existsSync(runsDir) ? fs.readdirSync(runsDir).sort() : [],
        before,
        'no run folder left behind',
      );
    }
  });

  test('an invalid experiment exits 2 with the problem and leaves no run folder', async () => {
    const before = fs.existsSync(runsDir) ? fs.readdirSync(runsDir).length : 0;
    const result = await runTlx(
      ['--runs-dir', runsDir, 'run', experiment('bad', `${tinyData}train:\n  fine_tune: { fine_tune_at: 500 }\n`)],
      { cwd: work },
    );
    assert.equal(result.exitCode, 2);
    assert.match(result.stderr, /bad\.yaml:\d+:\d+: train\.fine_tune\.fine_tune_at: found 500, expected at most 154/);
    assert.equal(fs.existsSync(runsDir) ? fs.readdirSync(runsDir).length : 0, before);
  });
});
