import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as tar from 'tar';
import { execa } from 'execa';
import { projectRoot } from '../src/core/project.ts';
import { loadExperiment } from '../src/config/load.ts';
import { prepareDataset, splitCounts } from '../src/data/dataset.ts';
import { sha256OfFile } from '../src/core/hash.ts';
import { downloadToCache } from '../src/net/download.ts';
import { extractArchive } from '../src/data/extract.ts';
import { UserError } from '../src/core/errors.ts';
import { writeClassFolders } from './helpers/images.ts';
import { TestServer } from './helpers/http.ts';
import { makeZip } from './helpers/python.ts';
import { tempDir, writeFiles } from './helpers/tmp.ts';

const work = tempDir('tlx-fetch-');
const server = new TestServer();
let base = '';
let catsDogsZip = '';

before(async () => {
  // The tutorial's archive, shrunk in pixels but not in count: 1000 + 1000 train, 500 + 500 validation.
  const tree = path.join(work, 'tree', 'cats_and_dogs_filtered');
  await writeClassFolders(path.join(tree, 'train'), ['cats', 'dogs'], 1000, { size: 8, format: 'jpg' });
  await writeClassFolders(path.join(tree, 'validation'), ['cats', 'dogs'], 500, {
    size: 8,
    format: 'jpg',
    offset: 5000,
  });
  catsDogsZip = path.join(work, 'cats_and_dogs_filtered.zip');
  const entries = [];
  for (const split of ['train', 'validation']) {
    for (const cls of ['cats', 'dogs']) {
      for (const file of fs.readdirSync(path.join(tree, split, cls)))
        entries.push({
          name: `cats_and_dogs_filtered/${split}/${cls}/${file}`,
          file: path.join(tree, split, cls, file),
        });
    }
  }
  await makeZip(catsDogsZip, entries);
  base = await server.start();
});

after(() => server.stop());

function experiment(url: string, extra = ''): string {
  const file = path.join(work, `exp-${Math.random().toString(36).slice(2)}.yaml`);
  fs.writeFileSync(
    file,
    `name: cats-vs-dogs
seed: 42
dataset:
  url: ${url}
  train_dir: train
  validation_dir: validation
  test_fraction_of_validation: 0.2
  image_size: [32, 32]
  batch_size: 32
${extra}`,
  );
  return file;
}

describe('datasets from a URL', () => {
  test("the tutorial's archive gives the tutorial's split sizes, and a second run uses the cache", async () => {
    server.route('/cats_and_dogs_filtered.zip', catsDogsZip);
    const cacheDir = path.join(work, 'cache-tutorial');
    const loaded = loadExperiment(experiment(`${base}/cats_and_dogs_filtered.zip`));
    const first = await prepareDataset(loaded.config, { baseDir: loaded.baseDir, cacheDir });
    assert.deepEqual(first.classNames, ['cats', 'dogs']);
    // 2000 train; 1000 validation = 32 batches of 32, 32 // 5 = 6 batches (192 images) for test.
    assert.deepEqual(splitCounts(first), { train: 2000, validation: 808, test: 192 });
    const requests = server.requests.length;
    const second = await prepareDataset(loaded.config, { baseDir: loaded.baseDir, cacheDir });
    assert.equal(server.requests.length, requests, 'no new request: the cache was used');
    assert.deepEqual(second.splits.test.samples, first.splits.test.samples, 'same seed, same split');
  });

  test('a sha256 mismatch is a clear error and the file is discarded', async () => {
    server.route('/mismatch.zip', catsDogsZip);
    const cacheDir = path.join(work, 'cache-mismatch');
    const wrong = 'a'.repeat(64);
    await assert.rejects(downloadToCache(`${base}/mismatch.zip`, { cacheDir, sha256: wrong }), (error: Error) => {
      assert.ok(error instanceof UserError);
      assert.match(error.message, /has sha256 [0-9a-f]{64}, expected a{64}; the file was discarded/);
      return true;
    });
    const leftovers = fs
      .readdirSync(cacheDir, { recursive: true })
      .map(String)
      .filter((f) => f.endsWith('.zip') || f.endsWith('.part'));
    assert.deepEqual(leftovers, []);
  });

  test('the right sha256 is accepted', async () => {
    server.route('/checked.zip', catsDogsZip);
    const sha256 = await sha256OfFile(catsDogsZip);
    const result = await downloadToCache(`${base}/checked.zip`, { cacheDir: path.join(work, 'cache-checked'), sha256 });
    assert.equal(result.sha256, sha256);
  });

  test('a 500 then a 200 is retried and succeeds', async () => {
    server.route('/flaky.zip', catsDogsZip, [{ kind: 'status', status: 500 }, { kind: 'serve' }]);
    const before = server.requests.filter((r) => r.path === '/flaky.zip').length;
    const result = await downloadToCache(`${base}/flaky.zip`, {
      cacheDir: path.join(work, 'cache-flaky'),
      backoffMs: 10,
    });
    assert.equal(server.requests.filter((r) => r.path === '/flaky.zip').length - before, 2);
    assert.equal(result.sha256, await sha256OfFile(catsDogsZip));
  });

  test('a truncated body is retried, resuming with a Range request, and the file is whole', async () => {
    server.route('/truncated.zip', catsDogsZip, [{ kind: 'truncate', afterBytes: 10_000 }, { kind: 'serve' }]);
    const result = await downloadToCache(`${base}/truncated.zip`, {
      cacheDir: path.join(work, 'cache-truncated'),
      backoffMs: 10,
    });
    const seen = server.requests.filter((r) => r.path === '/truncated.zip');
    assert.equal(seen.length, 2);
    const resumedAt = Number(/^bytes=(\d+)-$/.exec(seen[1].range ?? '')?.[1]);
    assert.ok(resumedAt > 0 && resumedAt <= 10_000, `resumed with ${seen[1].range}`);
    assert.equal(result.sha256, await sha256OfFile(catsDogsZip));
  });

  test('a 404 is not retried and names the URL', async () => {
    await assert.rejects(
      downloadToCache(`${base}/missing.zip`, { cacheDir: path.join(work, 'cache-404'), backoffMs: 10 }),
      /missing\.zip failed: HTTP 404/,
    );
  });
});

describe('safe extraction', () => {
  test('a zip entry with ../ is refused and nothing is written outside', async () => {
    const zip = path.join(work, 'slip.zip');
    await makeZip(zip, [
      { name: 'good/a.txt', text: 'fine' },
      { name: '../../evil.txt', text: 'escaped' },
    ]);
    const target = path.join(work, 'slip-out', 'extracted');
    fs.mkdirSync(path.dirname(target), { recursive: true });
    await assert.rejects(
      extractArchive(zip, 'zip', target),
      /refusing to extract slip\.zip: entry "\.\.\/\.\.\/evil\.txt": path leaves the extraction folder/,
    );
    assert.equal(fs.existsSync(path.join(work, 'evil.txt')), false);
    assert.equal(fs.existsSync(path.join(work, 'slip-out', 'evil.txt')), false);
    assert.deepEqual(fs.readdirSync(path.dirname(target)), [], 'no partial extraction left behind');
  });

  test('a zip entry with an absolute path is refused', async () => {
    const zip = path.join(work, 'absolute.zip');
    await makeZip(zip, [{ name: '/tmp/tlx-absolute-evil.txt', text: 'x' }]);
    await assert.rejects(
      extractArchive(zip, 'zip', path.join(work, 'abs-out')),
      /absolute path|leaves the extraction folder/,
    );
    assert.equal(fs.existsSync('/tmp/tlx-absolute-evil.txt'), false);
  });

  test('a tar symlink pointing outside is refused', async () => {
    const src = path.join(work, 'tar-src');
    writeFiles(src, { 'data/a.txt': 'a' });
    fs.symlinkSync('../../../etc/passwd', path.join(src, 'data', 'link'));
    const archive = path.join(work, 'link.tar');
    await tar.c({ file: archive, cwd: src }, ['data']);
    await assert.rejects(extractArchive(archive, 'tar', path.join(work, 'tar-out')), /symlink pointing outside/);
  });

  test('an archive with more entries than the limit is refused', async () => {
    const src = path.join(work, 'many');
    writeFiles(src, Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`d/f${i}.txt`, 'x'])));
    const archive = path.join(work, 'many.tar.gz');
    await tar.c({ file: archive, cwd: src, gzip: true }, ['d']);
    await assert.rejects(
      extractArchive(archive, 'tar.gz', path.join(work, 'many-out'), { maxEntries: 10, maxBytes: 1e9 }),
      /21 entries, more than the limit of 10/,
    );
    await extractArchive(archive, 'tar.gz', path.join(work, 'many-ok'), { maxEntries: 100, maxBytes: 1e9 });
    assert.equal(fs.readdirSync(path.join(work, 'many-ok', 'd')).length, 20);
  });

  test('an archive whose unpacked size is over the limit is refused', async () => {
    const zip = path.join(work, 'big.zip');
    await makeZip(zip, [{ name: 'big.txt', text: 'x'.repeat(5000) }]);
    await assert.rejects(
      extractArchive(zip, 'zip', path.join(work, 'big-out'), { maxEntries: 10, maxBytes: 1000 }),
      /unpacked size over the limit of 1000 bytes/,
    );
  });
});

describe('the download cache shared by processes', () => {
  test('two processes on a cold cache: one downloads, the other waits and uses it; the file is whole', async () => {
    server.route('/shared.zip', catsDogsZip, [{ kind: 'slow', chunkDelayMs: 5 }]);
    const cacheDir = path.join(work, 'cache-shared');
    const script = path.join(work, 'download.mts');
    fs.writeFileSync(
      script,
      `import { downloadToCache } from ${JSON.stringify(path.join(projectRoot, 'src', 'net', 'download.ts'))};\nconst d = await downloadToCache(process.argv[2], { cacheDir: process.argv[3] });\nprocess.stdout.write(d.sha256);\n`,
    );
    const run = () =>
      execa(process.execPath, ['--import', 'tsx', script, `${base}/shared.zip`, cacheDir], {
        cwd: projectRoot,
        reject: false,
      });
    const [a, b] = await Promise.all([run(), run()]);
    assert.equal(a.exitCode, 0, String(a.stderr));
    assert.equal(b.exitCode, 0, String(b.stderr));
    const expected = await sha256OfFile(catsDogsZip);
    assert.equal(a.stdout, expected);
    assert.equal(b.stdout, expected);
    assert.equal(server.requests.filter((r) => r.path === '/shared.zip').length, 1, 'downloaded once');
  });

  test('a cached file that changed since it was downloaded is fetched again (its sha256 was recorded)', async () => {
    server.route('/changed.zip', catsDogsZip);
    const cacheDir = path.join(work, 'cache-changed');
    const first = await downloadToCache(`${base}/changed.zip`, { cacheDir });
    fs.writeFileSync(first.file, 'corrupted on disk');
    const second = await downloadToCache(`${base}/changed.zip`, { cacheDir });
    assert.equal(second.fromCache, false);
    assert.equal(second.sha256, await sha256OfFile(catsDogsZip));
    assert.equal(await sha256OfFile(second.file), second.sha256);
    assert.equal(server.requests.filter((r) => r.path === '/changed.zip').length, 2);
  });
});
