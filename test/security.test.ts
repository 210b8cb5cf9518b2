import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as tar from 'tar';
import { execa } from 'execa';
import { loadExperiment } from '../src/config/load.ts';
import { csvTable } from '../src/core/csv.ts';
import { redactText, redactUrl } from '../src/core/redact.ts';
import { prepareDataset } from '../src/data/dataset.ts';
import { extractArchive } from '../src/data/extract.ts';
import { escapeMarkdown } from '../src/export/model-card.ts';
import { readTfjsModelJson, shardUrlInside } from '../src/models/weights.ts';
import { downloadToCache } from '../src/net/download.ts';
import { resultsCsv } from '../src/sweep/report.ts';
import { runTlx, tlxBin } from './helpers/cli.ts';
import { TestServer } from './helpers/http.ts';
import { writeClassFolders } from './helpers/images.ts';
import { ruleProxy, startMlflowServer, type MlflowServer } from './helpers/mlflow.ts';
import { descendantsOf, waitForStderr } from './helpers/process.ts';
import { makeZip, python } from './helpers/python.ts';
import { mlflowState, runDirOf, writeExperiment } from './helpers/runs.ts';
import { tempDir, writeFiles } from './helpers/tmp.ts';

/**
 * What a shared archive, image, weights file or experiment file can do to a machine, and
 * what a run leaks: every item here was reproduced against the code before the fix.
 */

const work = tempDir('tlx-security-');
const http = new TestServer();
let base = '';

before(async () => {
  base = await http.start();
});

after(() => http.stop());

/** A zip with symlink entries (Unix mode 0o120777 in the external attributes), built by Python's zipfile. */
async function zipWithLinks(file: string, entries: { name: string; link?: string; text?: string }[]): Promise<void> {
  await python(
    `import json, sys, zipfile
spec = json.load(sys.stdin)
with zipfile.ZipFile(spec["file"], "w") as z:
    for e in spec["entries"]:
        info = zipfile.ZipInfo(e["name"])
        if "link" in e:
            info.create_system = 3
            info.external_attr = (0o120777 << 16)
            z.writestr(info, e["link"])
        else:
            z.writestr(info, e.get("text", ""))`,
    [],
    JSON.stringify({ file, entries }),
  );
}

describe('archives', () => {
  test('a zip whose symlinks chain out of the folder is refused, naming the entry; nothing is written anywhere', async () => {
    const zip = path.join(work, 'chain.zip');
    // x -> ., x/a -> .., x/a/b -> ..: each name looks harmless, but a file written through them lands above.
    await zipWithLinks(zip, [
      { name: 'x', link: '.' },
      { name: 'x/a', link: '..' },
      { name: 'x/a/b', link: '..' },
      { name: 'x/a/b/escaped.txt', text: 'pwned' },
    ]);
    const out = path.join(work, 'chain-out', 'target');
    fs.mkdirSync(path.dirname(out), { recursive: true });
    await assert.rejects(
      extractArchive(zip, 'zip', out),
      /refusing to extract chain\.zip: entry "x": symlink \(to \.\); datasets need no links/,
    );
    assert.deepEqual(fs.readdirSync(path.dirname(out)), []);
    assert.ok(
      !fs.existsSync(path.join(work, 'escaped.txt')) && !fs.existsSync(path.join(work, 'chain-out', 'escaped.txt')),
    );
  });

  test('the same chain in a tar is refused too (node-tar will not write through a link)', async () => {
    const src = path.join(work, 'tar-chain');
    fs.mkdirSync(src, { recursive: true });
    fs.symlinkSync('.', path.join(src, 'x'));
    const archive = path.join(work, 'chain.tar');
    await tar.c({ file: archive, cwd: src, portable: true }, ['x']);
    // Append an entry whose path runs through the link: what the zip attack does.
    await python(
      `import io, sys, tarfile
with tarfile.open(sys.argv[1], "a") as t:
    data = b"pwned"
    info = tarfile.TarInfo("x/x/x/escaped.txt"); info.size = len(data)
    t.addfile(info, io.BytesIO(data))`,
      [archive],
    );
    const out = path.join(work, 'tar-chain-out', 'target');
    fs.mkdirSync(path.dirname(out), { recursive: true });
    await assert.rejects(extractArchive(archive, 'tar', out));
    assert.deepEqual(fs.readdirSync(path.dirname(out)), []);
  });

  test('a download over dataset.max_download_bytes is refused before the disk fills: by Content-Length, and counted when there is none', async () => {
    const big = path.join(work, 'big.zip');
    fs.writeFileSync(big, Buffer.alloc(300_000, 7));
    http.route('/big.zip', big);
    http.route('/chunked.zip', big, [{ kind: 'chunked' }]);
    const cacheDir = path.join(work, 'cache-cap');
    await assert.rejects(
      downloadToCache(`${base}/big.zip`, { cacheDir, maxBytes: 100_000, what: 'dataset.url' }),
      /dataset\.url: http:\/\/127\.0\.0\.1:\d+\/big\.zip is 0\.3 MiB, over the limit of 0\.1 MiB \(dataset\.max_download_bytes\)/,
    );
    await assert.rejects(
      downloadToCache(`${base}/chunked.zip`, { cacheDir, maxBytes: 100_000, what: 'dataset.url' }),
      /is over 0\.1 MiB, over the limit of 0\.1 MiB/,
    );
    const kept = fs
      .readdirSync(cacheDir, { recursive: true })
      .map(String)
      .filter((f) => f.endsWith('.zip') || f.endsWith('.part'));
    assert.deepEqual(kept, [], 'nothing of either download is kept');
  });

  test('dataset.max_extracted_bytes caps what an archive may unpack', async () => {
    const zip = path.join(work, 'bomb.zip');
    await makeZip(zip, [
      { name: 'd/a/1.png', text: 'x'.repeat(50_000) },
      { name: 'd/b/1.png', text: 'y'.repeat(50_000) },
    ]);
    http.route('/bomb.zip', zip);
    const file = writeExperiment(
      work,
      'bomb',
      `dataset: { url: ${base}/bomb.zip, validation_split: 0.5, max_extracted_bytes: 60000 }\n`,
    );
    const loaded = loadExperiment(file);
    await assert.rejects(
      prepareDataset(loaded.config, { baseDir: work, cacheDir: path.join(work, 'cache-bomb') }),
      /unpacked size over the limit of 60000 bytes \(dataset\.max_extracted_bytes\)/,
    );
  });
});

describe('images', () => {
  let root = '';
  before(async () => {
    root = path.join(work, 'huge');
    await writeClassFolders(root, ['a', 'b'], 6, { size: 16 });
    // A 23000 x 23000 PNG that compresses to a few hundred kilobytes and would take ~14 GB to decode.
    await python(
      `import sys, zlib, struct
width = height = 23000
def chunk(kind, data): return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
raw = zlib.compress(b"".join(b"\\x00" + bytes(width) for _ in range(64)), 9)
png = b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")
open(sys.argv[1], "wb").write(png)`,
      [path.join(root, 'a', 'huge.png')],
    );
  });

  test('an image whose header announces more than dataset.max_image_pixels is skipped before decoding, and recorded', async () => {
    const file = writeExperiment(
      work,
      'huge',
      `dataset: { path: huge, validation_split: 0.5, image_size: [32, 32] }\n`,
    );
    const loaded = loadExperiment(file);
    const dataset = await prepareDataset(loaded.config, { baseDir: work });
    const skipped = dataset.skipped.find((s) => s.file.endsWith('huge.png'));
    assert.ok(skipped, 'the huge image is skipped');
    assert.match(skipped.reason, /too large: 23000x23000 pixels, over dataset\.max_image_pixels \(40000000\)/);
  });

  test('with on_bad_file: fail, the huge image refuses the dataset (exit 2), naming the file', async () => {
    const file = writeExperiment(
      work,
      'hugefail',
      `dataset: { path: huge, validation_split: 0.5, image_size: [32, 32], on_bad_file: fail }\nmodel: { alpha: 0.35, weights: none }\n`,
    );
    const result = await runTlx(['--runs-dir', path.join(work, 'runs'), 'data', file], { cwd: work });
    assert.equal(result.exitCode, 2);
    assert.match(result.stderr, /a\/huge\.png \(too large: 23000x23000 pixels/);
  });

  test('the Python side checks the header too (predict): the image is refused, the others are predicted', async () => {
    const model = path.join(work, 'm.tflite');
    await python(
      `import sys, tensorflow as tf, keras
m = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2), keras.layers.Softmax()])
open(sys.argv[1], "wb").write(tf.lite.TFLiteConverter.from_keras_model(m).convert())`,
      [model],
    );
    fs.writeFileSync(path.join(work, 'labels.txt'), 'a\nb\n');
    const result = await runTlx(
      ['--json', 'predict', model, path.join(root, 'a', 'huge.png'), path.join(root, 'a', '0000.png')],
      { cwd: work },
    );
    assert.equal(result.exitCode, 0, result.stderr.slice(-1500));
    const [huge, small] = JSON.parse(result.stdout) as { error?: string; top: unknown[] }[];
    assert.match(huge.error ?? '', /23000x23000 pixels, over the limit of 40000000/);
    assert.equal(small.top.length, 2);
  });
});

describe('secrets', () => {
  const password = 's3cret-Pa55word';
  const signature = 'AKIA-SIGNATURE-9f8e7d';
  let server: MlflowServer;
  let dataZip = '';

  before(async () => {
    server = await startMlflowServer({
      dataDir: path.join(work, 'mlflow-auth'),
      extraArgs: ['--app-name', 'basic-auth'],
      env: { MLFLOW_FLASK_SERVER_SECRET_KEY: 'tlx-test', MLFLOW_AUTH_ADMIN_PASSWORD: password },
    });
    const tree = path.join(work, 'signed');
    await writeClassFolders(tree, ['ants', 'bees'], 10, { size: 16 });
    dataZip = path.join(work, 'signed.zip');
    await makeZip(
      dataZip,
      fs
        .readdirSync(tree, { recursive: true })
        .map(String)
        .filter((f) => f.endsWith('.png'))
        .map((f) => ({ name: `signed/${f}`, file: path.join(tree, f) })),
    );
    http.route('/bucket/signed.zip', dataZip);
  });

  after(() => server?.stop());

  function textOfFolder(dir: string): string {
    return fs
      .readdirSync(dir, { recursive: true })
      .map((f) => path.join(dir, String(f)))
      .filter((f) => fs.statSync(f).isFile() && !/\.(bin|png|tflite)$/.test(f))
      .map((f) => fs.readFileSync(f, 'utf8'))
      .join('\n');
  }

  test('a password in MLFLOW_TRACKING_URI and a signed dataset URL never reach stdout, stderr, the run folder or MLflow params', async () => {
    const authed = server.url.replace('http://', `http://admin:${password}@`);
    const url = `${base}/bucket/signed.zip?X-Amz-Signature=${signature}&X-Amz-Expires=60`;
    const file = writeExperiment(
      work,
      'secret',
      `seed: 1\ndataset: { url: "${url}", validation_split: 0.4, image_size: [32, 32], batch_size: 8 }\nmodel: { alpha: 0.35, weights: none }\ntrain: { feature_extraction: { epochs: 1 }, fine_tune: { epochs: 1 } }\n`,
    );
    const runsDir = path.join(work, 'secret-runs');
    const env = { MLFLOW_TRACKING_URI: authed, TLX_CACHE_DIR: path.join(work, 'secret-cache') };
    const result = await runTlx(['--runs-dir', runsDir, 'run', file], { cwd: work, env });
    assert.equal(result.exitCode, 0, result.stderr.slice(-2000));
    assert.ok(
      http.requests.some((r) => r.path === '/bucket/signed.zip' && r.query.includes(signature)),
      'the signed URL itself was used to download',
    );
    const dir = runDirOf(result.stdout);
    const sync = await runTlx(['--runs-dir', runsDir, 'sync', dir], { cwd: work, env });
    assert.equal(sync.exitCode, 0, sync.stderr.slice(-2000));
    const everything = [result.stdout, result.stderr, sync.stdout, sync.stderr, textOfFolder(dir)].join('\n');
    for (const secret of [password, signature]) assert.ok(!everything.includes(secret), `${secret} leaked`);
    assert.match(textOfFolder(dir), /signed\.zip\?\[redacted\]/, 'the URL is kept without its secrets');
    const remote = await python(
      `import json, os, sys
os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"] = "admin", sys.argv[3]
from mlflow.tracking import MlflowClient
r = MlflowClient(sys.argv[1]).get_run(sys.argv[2])
print(json.dumps({"params": r.data.params, "tags": r.data.tags}))`,
      [server.url, mlflowState(dir, server.url).run_id, password],
    );
    const { params, tags } = JSON.parse(remote) as { params: Record<string, string>; tags: Record<string, string> };
    assert.ok(!remote.includes(signature));
    assert.equal(params['dataset.url'], `${base}/bucket/signed.zip?[redacted]`);
    assert.equal(params['data.root'], undefined, 'local paths are not params');
    assert.ok(tags['tlx.data_root'] && tags['tlx.run_dir'], 'they are tags');
  });

  test('the run resumes with its redacted URL: the data comes from the cache by its checksum', async () => {
    const dir = fs.readdirSync(path.join(work, 'secret-runs')).map((d) => path.join(work, 'secret-runs', d))[0];
    const converted = await runTlx(['convert', dir, '--quantization', 'none'], {
      cwd: work,
      env: { TLX_CACHE_DIR: path.join(work, 'secret-cache') },
      timeout: 600_000,
    });
    assert.equal(converted.exitCode, 0, converted.stderr.slice(-2000));
  });

  test('a wrong password is said once (401 is not retried) with what to check', async () => {
    const proxy = await ruleProxy(server.url, () => undefined);
    try {
      const wrong = proxy.url.replace('http://', 'http://admin:wrong@');
      const dir = fs.readdirSync(path.join(work, 'secret-runs')).map((d) => path.join(work, 'secret-runs', d))[0];
      const sync = await runTlx(['sync', dir, '--tracking-uri', wrong], { cwd: work });
      assert.equal(sync.exitCode, 1);
      assert.match(sync.stderr, /HTTP 401.*check MLFLOW_TRACKING_USERNAME\/MLFLOW_TRACKING_PASSWORD/);
      assert.equal(proxy.requests.length, 1, 'one request, no retries');
      assert.ok(!sync.stderr.includes('wrong@'));
    } finally {
      await proxy.stop();
    }
  });

  test('a host that does not resolve is said once', async () => {
    const dir = fs.readdirSync(path.join(work, 'secret-runs')).map((d) => path.join(work, 'secret-runs', d))[0];
    const sync = await runTlx(['sync', dir, '--tracking-uri', 'http://no-such-host.invalid:5000'], { cwd: work });
    assert.equal(sync.exitCode, 1);
    assert.match(sync.stderr, /cannot resolve the host of http:\/\/no-such-host\.invalid:5000/);
  });

  test('the Python worker gets the environment it needs, not the MLflow credentials', async () => {
    const runsDir = path.join(work, 'env-runs');
    await writeClassFolders(path.join(work, 'envdata'), ['a', 'b'], 8, { size: 32 });
    const file = writeExperiment(
      work,
      'pyenv',
      `dataset: { path: envdata, validation_split: 0.5, image_size: [32, 32], batch_size: 8 }\nmodel: { alpha: 0.35, weights: none }\ntrain: { feature_extraction: { epochs: 1 }, fine_tune: { epochs: 0 } }\nexport: { tflite: { quantization: none, max_accuracy_drop: 1 } }\n`,
    );
    const child = execa(process.execPath, [tlxBin, '--runs-dir', runsDir, 'run', file], {
      cwd: work,
      reject: false,
      env: { MLFLOW_TRACKING_PASSWORD: password, MLFLOW_TRACKING_USERNAME: 'admin', AWS_SECRET_ACCESS_KEY: signature },
    });
    await waitForStderr(child, /converting to TFLite/);
    const [worker] = descendantsOf(child.pid!, 'python/tlx_worker.py');
    assert.ok(worker, 'the export worker runs');
    const environment = fs.readFileSync(`/proc/${worker.pid}/environ`, 'utf8');
    await child;
    assert.ok(environment.includes('PATH='), 'it has what it needs');
    assert.ok(
      !environment.includes(password) && !environment.includes(signature) && !environment.includes('MLFLOW_'),
      'and no secrets',
    );
  });

  test('redaction keeps scheme, host and path', () => {
    assert.equal(redactUrl('https://user:pw@host.example/a/b.zip?sig=1#x'), 'https://host.example/a/b.zip?[redacted]');
    assert.equal(redactUrl('http://127.0.0.1:5000'), 'http://127.0.0.1:5000');
    assert.equal(redactUrl('http://admin:pw@127.0.0.1:5000'), 'http://127.0.0.1:5000');
    assert.equal(redactText('GET https://u:p@h/x?token=abc failed'), 'GET https://h/x?[redacted] failed');
  });
});

describe('experiment files and what they point at', () => {
  test('__proto__ in --set is refused with exit 2, and Object.prototype stays clean', async () => {
    const file = writeExperiment(work, 'proto', `dataset: { path: data, validation_split: 0.5 }\n`);
    const result = await runTlx(['validate', file, '--set', '__proto__.polluted=1'], { cwd: work });
    assert.equal(result.exitCode, 2);
    assert.match(result.stderr, /--set __proto__\.polluted=1: __proto__\.polluted: the key "__proto__" is not allowed/);
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
  });

  test('__proto__ and constructor as YAML keys are refused with file:line:col', async () => {
    const file = writeExperiment(
      work,
      'protoyaml',
      `dataset:\n  path: data\n  validation_split: 0.5\n  __proto__: { polluted: 1 }\nmodel:\n  constructor: x\n`,
    );
    const result = await runTlx(['validate', file], { cwd: work });
    assert.equal(result.exitCode, 2);
    assert.match(result.stderr, /protoyaml\.yaml:5:3: dataset\.__proto__: the key "__proto__" is not allowed/);
    assert.match(result.stderr, /protoyaml\.yaml:7:3: model\.constructor: the key "constructor" is not allowed/);
  });

  test('a sweep grid key with __proto__ is refused', async () => {
    const file = writeExperiment(work, 'protogrid', `dataset: { path: data, validation_split: 0.5 }\n`);
    const result = await runTlx(['sweep', file, '--grid', '__proto__.x=1,2'], { cwd: work });
    assert.equal(result.exitCode, 2);
    assert.match(result.stderr, /--grid __proto__\.x=1,2: __proto__\.x: the key "__proto__" is not allowed/);
  });

  test('a YAML alias bomb exits 2 naming the file; so does a file over 1 MiB', async () => {
    const lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'];
    for (let i = 1; i < 9; i++)
      lines.push(
        `${String.fromCharCode(97 + i)}: &${String.fromCharCode(97 + i)} [${Array(9)
          .fill(`*${String.fromCharCode(96 + i)}`)
          .join(',')}]`,
      );
    const bomb = path.join(work, 'bomb.yaml');
    fs.writeFileSync(bomb, `name: bomb\n${lines.join('\n')}\n`);
    const result = await runTlx(['validate', bomb], { cwd: work });
    assert.equal(result.exitCode, 2);
    assert.match(result.stderr, /bomb\.yaml: cannot read the YAML: /);
    const big = path.join(work, 'big.yaml');
    fs.writeFileSync(big, `name: big\n# ${'x'.repeat(1024 * 1024)}\n`);
    const tooBig = await runTlx(['validate', big], { cwd: work });
    assert.equal(tooBig.exitCode, 2);
    assert.match(tooBig.stderr, /big\.yaml: \d+ bytes; an experiment file may be at most 1048576 bytes/);
  });

  test('weight shards of a model.json must sit beside it (local and remote)', async () => {
    const dir = path.join(work, 'shards', 'model');
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(work, 'shards', 'secret.bin'), Buffer.alloc(16));
    fs.writeFileSync(
      path.join(dir, 'model.json'),
      JSON.stringify({
        weightsManifest: [{ paths: ['../secret.bin'], weights: [{ name: 'd/kernel', shape: [4], dtype: 'float32' }] }],
      }),
    );
    await assert.rejects(
      readTfjsModelJson(path.join(dir, 'model.json')),
      /weight shard path "\.\.\/secret\.bin" leaves the model\.json's folder/,
    );
    assert.throws(
      () => shardUrlInside('https://h.example/models/m/model.json', '../../other/x.bin', 'm'),
      /leaves the model\.json's folder/,
    );
    assert.throws(
      () => shardUrlInside('https://h.example/models/m/model.json', 'https://evil.example/x.bin', 'm'),
      /leaves the model\.json's folder/,
    );
    assert.equal(
      shardUrlInside('https://h.example/models/m/model.json', 'group1-shard1of1.bin', 'm'),
      'https://h.example/models/m/group1-shard1of1.bin',
    );
  });

  test('class folder names that would change labels.txt (a line break, a control character, a backslash) are refused', async () => {
    for (const [name, reason] of [
      ['two\nlines', 'contains a line break'],
      ['bell\u0007', 'contains a control character'],
      ['back\\slash', 'contains a path separator'],
    ]) {
      const root = path.join(work, `names-${reason.replace(/\W/g, '')}`);
      writeFiles(root, { [`${name}/a.png`]: 'x', ['ok/b.png']: 'x' });
      const loaded = loadExperiment(
        writeExperiment(work, 'names', `dataset: { path: ${root}, validation_split: 0.5 }\n`),
      );
      await assert.rejects(prepareDataset(loaded.config, { baseDir: work }), new RegExp(`refused: .*\\(${reason}\\)`));
    }
  });

  test('class names are escaped in the model card; CSV cells that a spreadsheet would run are neutralised', () => {
    assert.equal(escapeMarkdown('a|b *c* [x](y)'), 'a\\|b \\*c\\* \\[x\\]\\(y\\)');
    assert.equal(
      csvTable(['v'], [['=HYPERLINK("x")'], ['+cmd'], ['-cmd'], ['@SUM(A1)'], ['-0.5'], ['+1'], [3]]),
      'v\n"\'=HYPERLINK(""x"")"\n\'+cmd\n\'-cmd\n\'@SUM(A1)\n-0.5\n+1\n3\n',
    );
    const csv = resultsCsv([
      { trial: 0, assignments: { 'model.weights': '=cmd|/c calc' }, status: 'failed', error: '=1+1' },
    ]);
    assert.ok(!/(^|,)=/m.test(csv), csv);
  });
});
