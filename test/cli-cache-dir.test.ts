import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import * as tar from 'tar';
import { runTlx } from './helpers/cli.ts';
import { writeClassFolders } from './helpers/images.ts';
import { runDirOf, writeExperiment } from './helpers/runs.ts';
import { tempDir } from './helpers/tmp.ts';

/**
 * `--cache-dir` wherever a user writes it: each command that downloads puts the dataset in the
 * cache it was given (it used to be taken by the program and lost, so the download went to
 * $TLX_CACHE_DIR or ~/.cache/tlx).
 */

const work = tempDir('tlx-cache-dir-');
let experiment = '';
let trained = '';

/** The files a download cache holds (one per download). */
function downloads(cache: string): string[] {
  const dir = path.join(cache, 'downloads');
  return fs.existsSync(dir)
    ? fs
        .readdirSync(dir, { recursive: true })
        .map(String)
        .filter((name) => name.endsWith('.tar'))
    : [];
}

before(async () => {
  await writeClassFolders(path.join(work, 'images'), ['ants', 'bees'], 10, { size: 32 });
  await tar.c({ file: path.join(work, 'images.tar'), cwd: path.join(work, 'images') }, ['ants', 'bees']);
  experiment = writeExperiment(
    work,
    'cached',
    `dataset: { url: 'file://${path.join(work, 'images.tar')}', validation_split: 0.4, image_size: [32, 32], batch_size: 8 }\nmodel: { alpha: 0.35, weights: none }\ntrain: { feature_extraction: { epochs: 1 }, fine_tune: { epochs: 0 } }\n`,
  );
});

describe('--cache-dir after the command', () => {
  test('tlx data', async () => {
    const result = await runTlx(['data', experiment, '--cache-dir', path.join(work, 'c-data')], {
      cwd: work,
      env: { TLX_CACHE_DIR: path.join(work, 'not-here') },
    });
    assert.equal(result.exitCode, 0, result.stderr.slice(-1500));
    assert.equal(downloads(path.join(work, 'c-data')).length, 1);
    assert.deepEqual(downloads(path.join(work, 'not-here')), []);
  });

  test('tlx run, then tlx convert of that run', async () => {
    const result = await runTlx(
      ['--runs-dir', path.join(work, 'runs'), 'run', experiment, '--cache-dir', path.join(work, 'c-run')],
      { cwd: work, env: { TLX_CACHE_DIR: path.join(work, 'not-here') } },
    );
    assert.equal(result.exitCode, 0, result.stderr.slice(-1500));
    assert.equal(downloads(path.join(work, 'c-run')).length, 1);
    trained = runDirOf(result.stdout);
    const converted = await runTlx(
      ['convert', trained, '--quantization', 'none', '--cache-dir', path.join(work, 'c-convert')],
      { cwd: work, env: { TLX_CACHE_DIR: path.join(work, 'not-here') }, timeout: 600_000 },
    );
    assert.equal(converted.exitCode, 0, converted.stderr.slice(-1500));
    assert.equal(downloads(path.join(work, 'c-convert')).length, 1);
    assert.deepEqual(downloads(path.join(work, 'not-here')), []);
  });

  test('tlx sweep', async () => {
    const result = await runTlx(
      [
        '--runs-dir',
        path.join(work, 'runs'),
        'sweep',
        experiment,
        '--grid',
        'seed=1,2',
        '--cache-dir',
        path.join(work, 'c-sweep'),
      ],
      { cwd: work, env: { TLX_CACHE_DIR: path.join(work, 'not-here') } },
    );
    assert.equal(result.exitCode, 0, result.stderr.slice(-1500));
    assert.equal(downloads(path.join(work, 'c-sweep')).length, 1);
    assert.deepEqual(downloads(path.join(work, 'not-here')), []);
  });
});
