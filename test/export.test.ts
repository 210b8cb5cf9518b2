import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import type { RunSummary } from '../src/run-folder/records.ts';
import type { TfliteRecord } from '../src/run-folder/records.ts';
import { PythonWorker } from '../src/export/python.ts';
import { runTlx } from './helpers/cli.ts';
import { writeClassFolders } from './helpers/images.ts';
import { runDirOf } from './helpers/runs.ts';
import { tempDir } from './helpers/tmp.ts';

/**
 * For a 2-class and a 5-class model trained here on generated images, every quantization
 * mode exports, verifies by running the .tflite, and predicts; the output is always one
 * probability per label.
 */

const work = tempDir('tlx-export-');
const runsDir = path.join(work, 'runs');
const modes = ['none', 'dynamic', 'float16', 'int8'] as const;
const trained: Record<string, string> = {};

async function trainModel(name: string, classes: string[]): Promise<string> {
  await writeClassFolders(path.join(work, name), classes, 24, { size: 32 });
  const file = path.join(work, `${name}.yaml`);
  fs.writeFileSync(
    file,
    `name: ${name}
seed: 3
dataset: { path: ${name}, validation_split: 0.4, image_size: [32, 32], batch_size: 8, test_fraction_of_validation: 0.5 }
model: { weights: npm:nsfwjs, dropout: 0.1 }
train:
  feature_extraction: { epochs: 4, optimizer: { name: adam, learning_rate: 0.01 } }
  fine_tune: { epochs: 0 }
export:
  tflite: { quantization: int8, representative_images: 40, max_accuracy_drop: 1 }
`,
  );
  const result = await runTlx(['--runs-dir', runsDir, 'run', file], { cwd: work, timeout: 600_000 });
  assert.equal(result.exitCode, 0, result.stderr.slice(-3000));
  return runDirOf(result.stdout);
}

function record(dir: string, mode: string): TfliteRecord {
  const summary = JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8')) as RunSummary;
  const exports = summary.export as { tflite: TfliteRecord; tflite_modes?: Record<string, TfliteRecord> };
  return mode === 'int8' ? exports.tflite : exports.tflite_modes![mode];
}

before(async () => {
  // The two models train and convert side by side; each converts to the other three modes in one call (one Python start).
  const others = modes.filter((m) => m !== 'int8').join(',');
  await Promise.all(
    (
      [
        ['two', ['cats', 'dogs']],
        ['five', ['daisy', 'dandelion', 'roses', 'sunflowers', 'tulips']],
      ] as const
    ).map(async ([name, classes]) => {
      trained[name] = await trainModel(name, [...classes]);
      const result = await runTlx(['convert', trained[name], '--quantization', others], {
        cwd: work,
        timeout: 600_000,
      });
      assert.equal(result.exitCode, 0, `${others}: ${result.stderr.slice(-3000)}`);
    }),
  );
});

describe('TFLite export', () => {
  for (const [key, classes] of [
    ['two', ['cats', 'dogs']],
    ['five', ['daisy', 'dandelion', 'roses', 'sunflowers', 'tulips']],
  ] as const) {
    for (const mode of modes) {
      test(`${classes.length} classes, ${mode}: verified by running it, output [1, ${classes.length}], labels beside it`, () => {
        const dir = trained[key];
        const r = record(dir, mode);
        const folder = mode === 'int8' ? dir : path.join(dir, `tflite-${mode}`);
        assert.equal(r.status, 'verified', r.problems.join('; '));
        assert.deepEqual(r.output.shape, [1, classes.length], 'one probability per label, for two classes too');
        assert.deepEqual(r.input.shape, [1, 32, 32, 3]);
        assert.equal(r.input.dtype, mode === 'int8' ? 'uint8' : 'float32');
        assert.equal(r.output.dtype, mode === 'int8' ? 'uint8' : 'float32');
        assert.equal(fs.readFileSync(path.join(folder, 'labels.txt'), 'utf8'), `${classes.join('\n')}\n`);
        assert.equal(fs.statSync(path.join(folder, 'model.tflite')).size, r.bytes);
        const card = JSON.parse(fs.readFileSync(path.join(folder, 'model-card.json'), 'utf8')) as TfliteRecord;
        assert.deepEqual(card.output.shape, r.output.shape);
        assert.equal(card.quantization, mode);
        assert.match(
          fs.readFileSync(path.join(folder, 'model-card.md'), 'utf8'),
          new RegExp(`Array\\(1\\) \\{ (Float|Byte)Array\\(labels\\.size\\) \\}   // \\[1, ${classes.length}\\]`),
        );
        assert.match(
          fs.readFileSync(path.join(folder, 'model-card.md'), 'utf8'),
          /\| multiply-accumulates per image \| 6\.1 M .*\n\| host latency per image \(LiteRT \+ XNNPACK on the exporting machine: a proxy for a phone, not a phone\) \| [\d.]+ ms on 1 thread, [\d.]+ ms on 4 \|/,
        );
        assert.ok(
          r.accuracy !== undefined && r.median_latency_ms !== undefined && r.agreement_with_trained_model !== undefined,
        );
        assert.ok(r.accuracy_nearest_resize !== undefined, 'the Android-style nearest resize is measured too');
        // What the phone pays. MACs from the graph's shapes: MobileNetV2's base at 32 px is 6,112,128
        // (at 224 px the same count gives the paper's 300 M with the 1000-class top), plus 1280 per head unit.
        const units = classes.length === 2 ? 1 : classes.length;
        assert.equal(r.macs_per_image, 6_112_128 + 1280 * units);
        assert.equal(r.params, 2_257_984 + 1281 * units);
        assert.ok(
          r.host_latency_ms!.threads_1 > 0 && r.host_latency_ms!.threads_4 > 0,
          'host latency at 1 and 4 threads',
        );
        // Loading reads every weight (and XNNPACK packs a copy): the interpreter's peak holds at least the file.
        assert.ok(
          r.peak_memory_bytes! >= r.bytes && r.peak_memory_bytes! < 1024 ** 3,
          `peak memory ${r.peak_memory_bytes} for a ${r.bytes}-byte file`,
        );
        assert.match(
          fs.readFileSync(path.join(folder, 'model-card.md'), 'utf8'),
          /\| peak memory to classify an image \| [\d.]+ MiB \(resident memory LiteRT \+ XNNPACK adds/,
        );
        if (mode === 'none')
          assert.ok(r.max_abs_diff_vs_trained_model! < 1e-4, `float32 differs by ${r.max_abs_diff_vs_trained_model}`);
        if (mode === 'int8') assert.equal(r.input.quantization.scale, 1, 'raw pixels 0..255 go in as they are');
        // The labels travel inside the model, and MediaPipe Tasks (Android's task graph) names every result with them.
        assert.equal(r.labels_embedded, true);
        const mediapipe = r.mediapipe as {
          accuracy: number;
          agreement_with_tflite: number;
          named_results: number;
          images: number;
        };
        assert.equal(mediapipe.named_results, mediapipe.images, 'every MediaPipe result carries a category name');
        assert.ok(
          mediapipe.agreement_with_tflite >= 0.97,
          `MediaPipe agrees with the .tflite on ${mediapipe.agreement_with_tflite}`,
        );
        const metadata = (card as unknown as { metadata: { name: string; version: string } }).metadata;
        assert.equal(metadata.name, key);
        assert.match(metadata.version, new RegExp(`^tlx .+, run ${path.basename(dir)}$`));
      });
    }

    test(`${classes.length} classes: int8 is about a quarter of the float32 file`, () => {
      const ratio = record(trained[key], 'int8').bytes / record(trained[key], 'none').bytes;
      // int8 weights are 1/4; per-channel scales (float32) and zero points (int64) add ~24 bytes per channel.
      assert.ok(ratio < 0.31, `int8/float32 = ${ratio.toFixed(3)}`);
    });

    test(`${classes.length} classes: predict prints labels from labels.txt with probabilities`, async () => {
      const dir = trained[key];
      const images = classes.map((c) => path.join(work, key, c, '0000.png'));
      const result = await runTlx(['--json', 'predict', dir, ...images], { cwd: work });
      assert.equal(result.exitCode, 0, result.stderr.slice(-2000));
      const predictions = JSON.parse(result.stdout) as {
        file: string;
        top: { label: string; probability: number }[];
      }[];
      assert.equal(predictions.length, classes.length);
      let correct = 0;
      predictions.forEach((p, i) => {
        assert.ok(p.top.every((t) => (classes as readonly string[]).includes(t.label)));
        if (p.top[0].label === classes[i]) correct++;
      });
      assert.ok(correct >= classes.length - 1, `${correct}/${classes.length} right`);
      const folderRun = await runTlx(
        ['predict', dir, path.join(work, key), '--out', path.join(work, `${key}.csv`), '--resize', 'nearest'],
        { cwd: work },
      );
      assert.equal(folderRun.exitCode, 0);
      assert.equal(
        fs
          .readFileSync(path.join(work, `${key}.csv`), 'utf8')
          .trim()
          .split('\n').length,
        classes.length * 24 + 1,
      );
    });
  }

  test('predict names the outputs from the labels inside the model when there is no labels.txt', async () => {
    const alone = path.join(work, 'alone');
    fs.mkdirSync(alone);
    fs.copyFileSync(path.join(trained.five, 'model.tflite'), path.join(alone, 'model.tflite'));
    const result = await runTlx(
      ['--json', 'predict', path.join(alone, 'model.tflite'), path.join(work, 'five', 'roses', '0000.png')],
      { cwd: work },
    );
    assert.equal(result.exitCode, 0, result.stderr.slice(-2000));
    const [prediction] = JSON.parse(result.stdout) as { top: { label: string }[] }[];
    assert.ok(prediction.top.every((t) => ['daisy', 'dandelion', 'roses', 'sunflowers', 'tulips'].includes(t.label)));
  });

  test('labels.txt that disagrees with the labels inside the model is refused', async () => {
    const copy = path.join(work, 'renamed');
    fs.mkdirSync(copy);
    fs.copyFileSync(path.join(trained.five, 'model.tflite'), path.join(copy, 'model.tflite'));
    fs.writeFileSync(path.join(copy, 'labels.txt'), 'daisy\ndandelion\nroses\ntulips\nsunflowers\n');
    const result = await runTlx(
      ['predict', path.join(copy, 'model.tflite'), path.join(work, 'five', 'roses', '0000.png')],
      { cwd: work },
    );
    assert.equal(result.exitCode, 2);
    assert.match(result.stderr, /does not match the labels embedded in/);
  });

  test('a tampered labels.txt fails loudly: output size and labels disagree', async () => {
    const copy = path.join(work, 'tampered');
    fs.mkdirSync(copy);
    fs.copyFileSync(path.join(trained.five, 'model.tflite'), path.join(copy, 'model.tflite'));
    fs.writeFileSync(path.join(copy, 'labels.txt'), 'daisy\ndandelion\nroses\nsunflowers\n');
    const result = await runTlx(
      ['predict', path.join(copy, 'model.tflite'), path.join(work, 'five', 'roses', '0000.png')],
      { cwd: work },
    );
    assert.equal(result.exitCode, 2);
    assert.match(result.stderr, /outputs 5 scores but labels\.txt has 4 labels/);
  });
});

describe('an export that fails its checks', () => {
  let dir: string;
  const file = () => path.join(work, 'gate.yaml');

  before(async () => {
    // 80 images a class: 32 test images, enough for the paired gate to see a real drop (5 lost of 32 is p = 0.03).
    await writeClassFolders(path.join(work, 'gate'), ['cats', 'dogs'], 80, { size: 32 });
    fs.writeFileSync(
      file(),
      `name: gate
seed: 3
dataset: { path: gate, validation_split: 0.4, image_size: [32, 32], batch_size: 8, test_fraction_of_validation: 0.5 }
model: { weights: npm:nsfwjs, dropout: 0.1 }
train:
  feature_extraction: { epochs: 4, optimizer: { name: adam, learning_rate: 0.01 } }
  fine_tune: { epochs: 0 }
export:
  tflite: { quantization: float16, max_accuracy_drop: 0.02 }
`,
    );
  });

  test('the accuracy gate fires: the run exits 1 with the reason, keeps its training, and summary.json says export failed', async () => {
    // A test hook puts noise on the weights between the Keras check and the converter: a truly worse file.
    const result = await runTlx(['--runs-dir', runsDir, 'run', file()], {
      cwd: work,
      timeout: 600_000,
      env: { TLX_TEST_EXPORT_NOISE: '1.0' },
    });
    assert.equal(result.exitCode, 1, result.stderr.slice(-2000));
    assert.match(
      result.stderr,
      /export failed: accuracy drop \d+\.\d points > export\.tflite\.max_accuracy_drop 2\.0 points \(\d+ of \d+ images lost, \d+ gained; p = 0\.0\d\d < 0\.05\)/,
    );
    dir = fs
      .readdirSync(runsDir)
      .map((d) => path.join(runsDir, d))
      .find((d) => d.includes('-gate-'))!;
    const summary = JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8')) as RunSummary;
    assert.equal(summary.status, 'FAILED');
    assert.equal(summary.failed_stage, 'export');
    assert.equal(summary.export?.tflite?.status, 'failed');
    assert.ok(summary.metrics.final!.test_accuracy > 0.75, 'the trained model is good; only its export is not');
    assert.ok(fs.existsSync(path.join(dir, 'model', 'classifier.json')), 'the trained model is kept');
    assert.ok(!fs.existsSync(path.join(dir, 'model.tflite')), 'a failed export is not put where an app would take it');
    assert.equal(
      (JSON.parse(fs.readFileSync(path.join(dir, 'run.json'), 'utf8')) as { status: string; failed_stage: string })
        .failed_stage,
      'export',
    );
  });

  test('resuming the run exports again without training again', async () => {
    const before = fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8');
    const result = await runTlx(['--runs-dir', runsDir, 'run', '--resume', dir], { cwd: work, timeout: 600_000 });
    assert.equal(result.exitCode, 0, result.stderr.slice(-2000));
    assert.equal(fs.readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8'), before, 'no epoch trained again');
    const summary = JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8')) as RunSummary;
    assert.equal(summary.status, 'FINISHED');
    assert.equal(summary.export?.tflite?.status, 'verified');
  });

  test('tlx convert never replaces a verified export with a failed one', async () => {
    const model = fs.readFileSync(path.join(dir, 'model.tflite'));
    const summary = fs.readFileSync(path.join(dir, 'summary.json'), 'utf8');
    const result = await runTlx(['convert', dir], {
      cwd: work,
      timeout: 600_000,
      env: { TLX_TEST_EXPORT_NOISE: '1.0' },
    });
    assert.equal(result.exitCode, 1);
    assert.match(result.stderr, /failed verification: accuracy drop/);
    assert.ok(fs.readFileSync(path.join(dir, 'model.tflite')).equals(model), 'model.tflite is the verified one');
    assert.equal(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8'), summary, 'summary.json still describes it');
    assert.deepEqual(
      fs.readdirSync(dir).filter((name) => name.includes('.tmp-')),
      [],
      'no staging folder left behind',
    );
  });

  test("tlx convert refuses when the dataset's classes no longer match the trained labels", async () => {
    fs.renameSync(path.join(work, 'gate', 'dogs'), path.join(work, 'gate', 'wolves'));
    try {
      const result = await runTlx(['convert', dir, '--quantization', 'none'], { cwd: work, timeout: 600_000 });
      assert.equal(result.exitCode, 2);
      assert.match(
        result.stderr,
        /the dataset's 2 classes are not the 2 the run was trained on \(new: wolves; missing: dogs\)/,
      );
    } finally {
      fs.renameSync(path.join(work, 'gate', 'wolves'), path.join(work, 'gate', 'dogs'));
    }
  });

  test('int8 input and output: exported and verified; MediaPipe (uint8/float32 only) is skipped, and the card says why', async () => {
    const result = await runTlx(
      [
        '--runs-dir',
        runsDir,
        'run',
        file(),
        '--set',
        'export.tflite.quantization=int8',
        '--set',
        'export.tflite.io_type=int8',
        '--set',
        'export.tflite.max_accuracy_drop=1',
        '--set',
        'train.feature_extraction.epochs=1',
      ],
      { cwd: work, timeout: 600_000 },
    );
    assert.equal(result.exitCode, 0, result.stderr.slice(-2000));
    const run = runDirOf(result.stdout);
    const r = (JSON.parse(fs.readFileSync(path.join(run, 'summary.json'), 'utf8')) as RunSummary).export!.tflite!;
    assert.equal(r.input.dtype, 'int8');
    assert.match((r.mediapipe as { skipped: string }).skipped, /uint8 or float32/);
    assert.match(
      fs.readFileSync(path.join(run, 'model-card.md'), 'utf8'),
      /int8 input and output: MediaPipe Tasks and the TFLite Task Library read only uint8 or float32/,
    );
  });
});

describe('train.restore_best_weights', () => {
  test("the best validation epoch's weights are evaluated and exported, and every record says which epoch", async () => {
    // Feature extraction learns the images; fine-tuning the whole base at a rate far too high then wrecks it,
    // so the best epoch is one of the first three whatever the CPU's rounding.
    const file = path.join(work, 'restore.yaml');
    fs.writeFileSync(
      file,
      `name: restore
seed: 5
dataset: { path: gate, validation_split: 0.4, image_size: [32, 32], batch_size: 8, test_fraction_of_validation: 0.5 }
model: { weights: npm:nsfwjs, dropout: 0.1 }
train:
  restore_best_weights: true
  feature_extraction: { epochs: 3, optimizer: { name: adam, learning_rate: 0.01 } }
  fine_tune: { fine_tune_at: 0, epochs: 2, optimizer: { name: sgd, learning_rate: 10 } }
export:
  tflite: { quantization: float16, representative_images: 8, max_accuracy_drop: 1 }
`,
    );
    const result = await runTlx(['--runs-dir', runsDir, 'run', file], { cwd: work, timeout: 600_000 });
    assert.equal(result.exitCode, 0, result.stderr.slice(-2000));
    const dir = runDirOf(result.stdout);
    const summary = JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8')) as RunSummary;
    const records = fs
      .readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as { epoch: number; val_accuracy: number })
      .filter((r) => r.epoch > 0);
    const best = records.reduce((a, b) => (b.val_accuracy > a.val_accuracy ? b : a));
    assert.deepEqual(summary.final_weights, { epoch: best.epoch, last_epoch: 5, selected_by: 'best_val_accuracy' });
    assert.ok(
      best.epoch <= 3,
      `the wrecked fine-tuning was not the best: epoch ${best.epoch} (${records.map((r) => r.val_accuracy).join(' ')})`,
    );
    assert.ok(records[records.length - 1].val_accuracy < best.val_accuracy, 'the last epoch is worse than the best');
    assert.equal(
      summary.metrics.final!.val_accuracy,
      best.val_accuracy,
      "the model evaluated after training is the best epoch's",
    );
    const exported = summary.export!.tflite!;
    assert.equal(exported.status, 'verified', exported.problems.join('; '));
    assert.deepEqual(exported.final_weights, summary.final_weights);
    assert.equal(
      exported.trained_model_accuracy,
      summary.metrics.final!.test_accuracy,
      'the file was checked against the restored model',
    );
    assert.ok(
      Math.abs(exported.accuracy! - summary.metrics.final!.test_accuracy) <= 1 / 32 + 1e-9,
      'the float16 file classifies as the restored model does',
    );
    assert.match(
      fs.readFileSync(path.join(dir, 'model-card.md'), 'utf8'),
      new RegExp(`\\| weights \\| epoch ${best.epoch} of 5 \\(best validation accuracy`),
    );
    assert.match(result.stderr + result.stdout, new RegExp(`restored the weights of epoch ${best.epoch}`));
  });
});

describe('the export watchdog', () => {
  test('a worker silent for longer than the limit is stopped and the call fails naming its last step; it leaves no process', async () => {
    process.env.TLX_TEST_EXPORT_HANG = '1';
    const worker = PythonWorker.start();
    delete process.env.TLX_TEST_EXPORT_HANG;
    // Ready once it answers (here with an error): TensorFlow's import is not the stall measured.
    await assert.rejects(worker.call('predict', { model: '/nonexistent.tflite', images: [] }), /No such file/);
    const started = Date.now();
    await assert.rejects(
      worker.call('export', {}, { stallMs: 3000 }),
      /python export made no progress for 3 s after step "start"; stopped it \(TLX_EXPORT_STALL_SECONDS sets the limit\)/,
    );
    const waited = Date.now() - started;
    assert.ok(waited >= 3000 && waited < 20_000, `stopped after ${waited} ms`);
    for (let i = 0; i < 50 && worker.running; i++) await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(worker.running, false, 'the stuck worker was killed');
    await assert.rejects(worker.call('predict', { model: 'x', images: [] }), /is not running/);
  });

  test('progress keeps a slow call alive: the limit is on silence, not on the whole call', async () => {
    process.env.TLX_TEST_EXPORT_HANG = 'slow';
    const worker = PythonWorker.start();
    delete process.env.TLX_TEST_EXPORT_HANG;
    try {
      await assert.rejects(worker.call('predict', { model: '/nonexistent.tflite', images: [] }), /No such file/);
      const started = Date.now();
      // 6 s of work reported every second, under a 3-s limit: it runs to its end (then fails on the empty request).
      await assert.rejects(worker.call('export', {}, { stallMs: 3000 }), /python: KeyError: 'classifier'/);
      assert.ok(Date.now() - started >= 6000, 'the slow step ran to its end');
      assert.equal(worker.running, true);
    } finally {
      await worker.close();
    }
  });
});
