import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, test } from 'node:test';
import fs from 'node:fs';
import { runTlx } from './helpers/cli.ts';
import { writeClassFolders } from './helpers/images.ts';
import { tempDir, writeFiles } from './helpers/tmp.ts';

const designCommands = ['validate', 'data', 'run', 'convert', 'sweep', 'predict', 'ui', 'sync'];

describe('the tlx command line', () => {
  test('--help lists every command of the design, and each command has --help', async () => {
    const help = await runTlx(['--help']);
    assert.equal(help.exitCode, 0);
    for (const command of designCommands) assert.match(help.stdout, new RegExp(`^  ${command} `, 'm'), command);
    for (const command of designCommands) {
      const sub = await runTlx([command, '--help']);
      assert.equal(sub.exitCode, 0, command);
      assert.match(sub.stdout, new RegExp(`Usage: tlx ${command}`));
    }
  });

  test('an unknown command exits 2 with a suggestion', async () => {
    const result = await runTlx(['valdate', 'configs/finetune.yaml']);
    assert.equal(result.exitCode, 2);
    assert.match(result.stderr, /unknown command 'valdate'/);
    assert.match(result.stderr, /Did you mean validate\?/);
  });

  test('convert: an unknown quantization mode exits 2 naming the modes (several may be given, comma-separated)', async () => {
    const result = await runTlx(['convert', 'runs/none', '--quantization', 'float16,int4']);
    assert.equal(result.exitCode, 2);
    assert.match(
      result.stderr,
      /--quantization float16,int4: expected none, dynamic, float16, int8, or several of them comma-separated/,
    );
  });

  test('an unknown flag exits 2 with a suggestion', async () => {
    const result = await runTlx(['validate', '--sett', 'a=1', 'configs/finetune.yaml']);
    assert.equal(result.exitCode, 2);
    assert.match(result.stderr, /unknown option '--sett'/);
    assert.match(result.stderr, /Did you mean --set\?/);
  });

  test('validate prints ok for the shipped configs and exits 0', async () => {
    const result = await runTlx(['validate', 'configs/finetune.yaml', 'configs/sweep-fine-tune-at.yaml']);
    assert.equal(result.exitCode, 0, result.stderr);
    assert.equal(result.stdout, 'configs/finetune.yaml: ok\nconfigs/sweep-fine-tune-at.yaml: ok');
  });

  test('validate of a bad file prints file:line:col problems, no stack trace, and exits 2', async () => {
    const dir = tempDir();
    writeFiles(dir, { 'bad.yaml': 'name: x\ndataset:\n  path: d\n  validation_split: 1.5\n' });
    const result = await runTlx(['validate', path.join(dir, 'bad.yaml')]);
    assert.equal(result.exitCode, 2);
    assert.match(result.stderr, /bad\.yaml:4:21: dataset\.validation_split: found 1\.5, expected a number < 1/);
    assert.doesNotMatch(result.stderr, /^\s+at /m);
  });

  test('data fetches, splits and draws the pictures without a model; --json gives classes, counts and skipped files, each with a reason a person reads', async () => {
    const dir = tempDir();
    await writeClassFolders(path.join(dir, 'images'), ['cat', 'dog'], 10, { size: 32, format: 'jpg' });
    const jpeg = fs.readFileSync(path.join(dir, 'images', 'cat', fs.readdirSync(path.join(dir, 'images', 'cat'))[0]));
    writeFiles(dir, {
      'images/cat/cut.jpg': jpeg.subarray(0, jpeg.length >> 1),
      'images/cat/notes.jpg': 'a text file with a .jpg name',
      'images/dog/readme.txt': 'not an image',
      'exp.yaml':
        'name: peek\ndataset: { path: images, validation_split: 0.5, image_size: [32, 32], batch_size: 4 }\naugmentation: [ { random_flip: horizontal } ]\n',
      'single/only/a.png': 'x',
      'bad.yaml': 'name: bad\ndataset: { path: single, validation_split: 0.5 }\n',
    });
    const result = await runTlx(['--json', 'data', 'exp.yaml', '--out', 'pictures'], { cwd: dir });
    assert.equal(result.exitCode, 0, result.stderr);
    const report = JSON.parse(result.stdout) as {
      classes: string[];
      counts: Record<string, number>;
      skipped: { file: string; reason: string }[];
    };
    assert.deepEqual(report.classes, ['cat', 'dog']);
    assert.equal(report.counts.train + report.counts.validation + report.counts.test, 20);
    const reasons = Object.fromEntries(report.skipped.map((s) => [s.file, s.reason]));
    assert.deepEqual(Object.keys(reasons).sort(), ['cat/cut.jpg', 'cat/notes.jpg', 'dog/readme.txt']);
    assert.match(reasons['cat/cut.jpg'], /truncated JPEG/);
    assert.match(reasons['cat/notes.jpg'], /not an image \(no JPEG, PNG, GIF or BMP signature/);
    assert.doesNotMatch(result.stderr, /JPEG library|TF_Status|Corrupt JPEG/, 'no decoder noise on stderr');
    for (const picture of ['samples.png', 'augmentation.png'])
      assert.ok(fs.existsSync(path.join(dir, 'pictures', picture)), picture);
    const bad = await runTlx(['data', 'bad.yaml'], { cwd: dir });
    assert.equal(bad.exitCode, 2);
    assert.match(bad.stderr, /only one class folder \(only\)/);
  });

  test('memory: tlx data prints the estimate; a run that cannot fit is refused before training with the batch size that fits, and leaves no folder', async () => {
    const dir = tempDir();
    await writeClassFolders(path.join(dir, 'images'), ['cat', 'dog'], 10, { size: 32, format: 'png' });
    // The case: 1024 x 1024 images and a batch of 4096 (of 14 training images: a batch of 14).
    const experiment = (batch: number) =>
      `name: big\ndataset: { path: images, validation_split: 0.3, image_size: [1024, 1024], batch_size: ${batch} }\nmodel: { alpha: 0.35, weights: none }\ntrain:\n  feature_extraction: { epochs: 1 }\n  fine_tune: { epochs: 1 }\n`;
    writeFiles(dir, { 'big.yaml': experiment(4096) });
    const budget = { TLX_MEMORY_BUDGET_MB: '2048' };
    type Memory = {
      estimated_peak_mb: number;
      limit_mb: number;
      limit_source: string;
      verdict: string;
      phases: { phase: string; batch: number; peak_mb: number }[];
    };
    const data = await runTlx(['--json', 'data', 'big.yaml', '--out', 'pictures'], { cwd: dir, env: budget });
    assert.equal(data.exitCode, 0, data.stderr);
    const memory = (JSON.parse(data.stdout) as { memory: Memory }).memory;
    assert.deepEqual(
      memory.phases.map((phase) => [phase.phase, phase.batch]),
      [
        ['feature_extraction', 14],
        ['fine_tune', 14],
      ],
    );
    assert.equal(memory.limit_mb, 2048);
    assert.equal(memory.limit_source, 'TLX_MEMORY_BUDGET_MB');
    assert.equal(memory.verdict, 'does not fit');
    assert.ok(memory.estimated_peak_mb > 2048, `estimate ${memory.estimated_peak_mb} MiB`);

    const run = await runTlx(['--runs-dir', 'runs', 'run', 'big.yaml'], { cwd: dir, env: budget });
    assert.equal(run.exitCode, 2, run.stderr);
    const refusal =
      /memory: about [\d.]+ GiB at its peak \((feature_extraction|fine_tune), [a-z ]+, batch of 14\), \d+% of the 2\.0 GiB this process can use \(TLX_MEMORY_BUDGET_MB\): over it by [\d.]+ [MG]iB; dataset\.batch_size: (\d+) or less fits/.exec(
        run.stderr,
      );
    assert.ok(refusal, run.stderr.slice(-1500));
    assert.deepEqual(
      fs.existsSync(path.join(dir, 'runs')) ? fs.readdirSync(path.join(dir, 'runs')) : [],
      [],
      'no run folder is left',
    );
    assert.doesNotMatch(run.stderr, /epoch 1/, 'refused before training');

    // The batch it names fits (less a fifth: each process holds a little more or less than the one that estimated).
    const fits = Number(refusal[2]);
    assert.ok(fits >= 1 && fits < 14, `batch ${fits}`);
    writeFiles(dir, { 'big.yaml': experiment(Math.max(1, Math.floor(fits * 0.8))) });
    const smaller = await runTlx(['--json', 'data', 'big.yaml', '--out', 'pictures'], { cwd: dir, env: budget });
    assert.notEqual((JSON.parse(smaller.stdout) as { memory: Memory }).memory.verdict, 'does not fit');
  });
});
