import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import type { Tensor4D } from '@tensorflow/tfjs-node';
import { loadExperiment } from '../src/config/load.ts';
import {
  applyOp,
  augmentBatch,
  projectiveTransform,
  rotationTransform,
  translationTransform,
  zoomTransform,
} from '../src/data/augment.ts';
import type { AugmentationOp } from '../src/config/resolved.ts';
import { prepareDataset, splitCounts } from '../src/data/dataset.ts';
import { DecodePool } from '../src/data/decode-pool.ts';
import { decodeToBytes, ImageSplit } from '../src/data/images.ts';
import { UserError } from '../src/core/errors.ts';
import { Random } from '../src/core/random.ts';
import { tf } from '../src/tfjs/tf.ts';
import { epochOrder } from '../src/train/engine.ts';
import { encodeImage, classImage, writeClassFolders } from './helpers/images.ts';
import { python } from './helpers/python.ts';
import { tempDir, writeFiles } from './helpers/tmp.ts';

const work = tempDir('tlx-pipeline-');

function experimentFile(datasetPath: string, extra = '', datasetExtra = ''): string {
  const file = path.join(work, `exp-${Math.random().toString(36).slice(2)}.yaml`);
  fs.writeFileSync(
    file,
    `name: t\nseed: 7\ndataset:\n  path: ${datasetPath}\n  validation_split: 0.25\n  image_size: [32, 32]\n  batch_size: 8\n${datasetExtra}${extra}`,
  );
  return file;
}

async function prepare(file: string) {
  const loaded = loadExperiment(file);
  return prepareDataset(loaded.config, { baseDir: loaded.baseDir, cacheDir: path.join(work, 'cache') });
}

before(async () => {
  await writeClassFolders(path.join(work, 'mixed'), ['a', 'b', 'c'], 20, { size: 20, format: 'png' });
  // Every format the loader reads, and files it must skip.
  const image = classImage(0, 99, 20);
  fs.writeFileSync(path.join(work, 'mixed', 'a', 'photo.jpg'), await encodeImage(image, 'jpg'));
  const rgba = tf.tidy(() => tf.concat([image, tf.fill([20, 20, 1], 255, 'int32')], 2));
  fs.writeFileSync(path.join(work, 'mixed', 'b', 'rgba.png'), await tf.node.encodePng(rgba as never));
  const gray = tf.tidy(() => image.mean(2, true).toInt());
  fs.writeFileSync(path.join(work, 'mixed', 'c', 'gray.png'), await tf.node.encodePng(gray as never));
  tf.dispose([image, rgba, gray]);
  await python(
    `from PIL import Image
import sys
im = Image.new("RGB", (20, 20), (200, 10, 10))
im.save(sys.argv[1] + "/a/pic.bmp")
frames = [Image.new("RGB", (20, 20), c) for c in [(0, 200, 0), (0, 0, 200)]]
frames[0].save(sys.argv[1] + "/b/anim.gif", save_all=True, append_images=frames[1:])`,
    [path.join(work, 'mixed')],
  );
  writeFiles(path.join(work, 'mixed'), {
    'a/notes.txt': 'not an image',
    'b/broken.jpg': 'definitely not a jpeg',
    '.DS_Store': 'x',
  });
});

describe('scanning, decoding and splitting', () => {
  test('JPEG, PNG (RGBA, gray), GIF and BMP decode to RGB; bad files are skipped and recorded', async () => {
    const dataset = await prepare(experimentFile(path.join(work, 'mixed')));
    assert.deepEqual(dataset.classNames, ['a', 'b', 'c']);
    const counts = splitCounts(dataset);
    // 60 generated + jpg + rgba + gray + bmp + gif = 65 images; broken.jpg is dropped after decoding.
    assert.equal(counts.train + counts.validation + counts.test, 65);
    const skipped = Object.fromEntries(dataset.skipped.map((s) => [s.file, s.reason]));
    assert.match(skipped['a/notes.txt'], /not an image file type/);
    assert.match(skipped['b/broken.jpg'], /cannot decode/);
    assert.equal(dataset.skipped.length, 2);
    const all = [
      ...dataset.splits.train.samples,
      ...dataset.splits.validation.samples,
      ...dataset.splits.test.samples,
    ].map((s) => path.basename(s.file));
    for (const name of ['photo.jpg', 'rgba.png', 'gray.png', 'pic.bmp', 'anim.gif'])
      assert.ok(all.includes(name), name);
    const batch = dataset.splits.train.images([0]);
    assert.deepEqual(batch.shape, [1, 32, 32, 3]);
    batch.dispose();
  });

  test("every format decodes to the pixels of Keras's own loader (image_dataset_from_directory's), rounded, when shrunk, enlarged or kept", async () => {
    const dir = path.join(work, 'mixed');
    const large = classImage(1, 5, 64);
    fs.writeFileSync(path.join(work, 'large.jpg'), await encodeImage(large, 'jpg'));
    const grayJpeg = tf.tidy(() => large.mean(2, true).toInt());
    fs.writeFileSync(path.join(work, 'gray.jpg'), await tf.node.encodeJpeg(grayJpeg as never, 'grayscale'));
    tf.dispose([large, grayJpeg]);
    const files = [
      path.join(work, 'large.jpg'),
      path.join(work, 'gray.jpg'),
      ...['a/photo.jpg', 'b/rgba.png', 'c/gray.png', 'a/pic.bmp', 'b/anim.gif'].map((f) => path.join(dir, f)),
    ];
    const sizes: [number, number][] = [
      [13, 29],
      [20, 20],
      [64, 64],
      [71, 40],
    ];
    const keras = JSON.parse(
      await python(
        `import json, sys
import numpy as np
from keras.src.utils.image_dataset_utils import _load_image_tf
spec = json.load(sys.stdin)
print(json.dumps([[np.round(np.asarray(_load_image_tf(f, tuple(s), 3, "bilinear", "channels_last"))).astype(np.uint8).reshape(-1).tolist() for s in spec["sizes"]] for f in spec["files"]]))`,
        [],
        JSON.stringify({ files, sizes }),
      ),
    ) as number[][][];
    files.forEach((file, f) =>
      sizes.forEach((size, s) => {
        const ours = decodeToBytes(fs.readFileSync(file), size);
        const differing = ours.reduce((count, value, i) => count + (value === keras[f][s][i] ? 0 : 1), 0);
        assert.equal(
          differing,
          0,
          `${path.basename(file)} at ${size.join('x')}: ${differing} of ${ours.length} values differ from Keras's loader`,
        );
      }),
    );
  });

  test('on_bad_file: fail refuses the dataset and names the file', async () => {
    await assert.rejects(
      prepare(experimentFile(path.join(work, 'mixed'), '', '  on_bad_file: fail\n')),
      (error: Error) => {
        assert.ok(error instanceof UserError);
        assert.match(error.message, /b\/broken\.jpg \(cannot decode/);
        return true;
      },
    );
  });

  test('an empty class folder, a single class, and no class folders are clear errors', async () => {
    await writeClassFolders(path.join(work, 'empty'), ['x'], 3);
    fs.mkdirSync(path.join(work, 'empty', 'y'));
    await assert.rejects(
      prepare(experimentFile(path.join(work, 'empty'))),
      /class folder\(s\) with no images in .*empty: y/,
    );
    await writeClassFolders(path.join(work, 'single'), ['only'], 3);
    await assert.rejects(prepare(experimentFile(path.join(work, 'single'))), /only one class folder \(only\)/);
    writeFiles(path.join(work, 'flat'), { 'a.png': 'x' });
    await assert.rejects(prepare(experimentFile(path.join(work, 'flat'))), /no class folders in/);
  });

  test('same seed, same splits; another seed, other splits', async () => {
    const a = await prepare(experimentFile(path.join(work, 'mixed')));
    const b = await prepare(experimentFile(path.join(work, 'mixed')));
    assert.deepEqual(a.splits.validation.samples, b.splits.validation.samples);
    const other = loadExperiment(experimentFile(path.join(work, 'mixed')), { overrides: ['seed=8'] });
    const c = await prepareDataset(other.config, { baseDir: other.baseDir });
    assert.notDeepEqual(a.splits.validation.samples, c.splits.validation.samples);
  });

  test('streaming from disk gives the same pixels as keeping images in memory', async () => {
    const loaded = loadExperiment(experimentFile(path.join(work, 'mixed')));
    const memory = await prepareDataset(loaded.config, { baseDir: loaded.baseDir });
    const stream = await prepareDataset(loaded.config, { baseDir: loaded.baseDir, memoryBudgetBytes: 1 });
    assert.equal(memory.storage, 'memory');
    assert.equal(stream.storage, 'stream');
    // One rule for all: decoded, resized, rounded once to uint8. Every pixel of every split is
    // identical in memory, streamed from the pixel file, and decoded again per batch (no room for the file).
    for (const name of ['train', 'validation', 'test'] as const) {
      const split = memory.splits[name];
      const perBatch = ImageSplit.load([...split.samples], split.size, 'stream').split;
      const indices = Array.from({ length: split.length }, (_, i) => i);
      const [x, y, z] = [split.images(indices), stream.splits[name].images(indices), perBatch.images(indices)];
      assert.deepEqual(
        Buffer.from(y.dataSync().buffer),
        Buffer.from(x.dataSync().buffer),
        `${name}: pixels streamed from the pixel file differ from in-memory pixels`,
      );
      assert.deepEqual(
        Buffer.from(z.dataSync().buffer),
        Buffer.from(x.dataSync().buffer),
        `${name}: pixels decoded per batch differ from in-memory pixels`,
      );
      tf.dispose([x, y, z]);
      if (split.length === 0) continue;
      const batch = stream.splits[name].batches(4, [...indices].reverse()).next().value!;
      const expected = split.images(batch.indices);
      assert.deepEqual(
        Buffer.from(batch.images.dataSync().buffer),
        Buffer.from(expected.dataSync().buffer),
        `${name}: a shuffled streamed batch differs`,
      );
      tf.dispose([expected, batch.images, batch.labels]);
    }
  });

  test('decode threads: a split loaded or streamed through them has the pixels of decoding each file here; a broken file is reported, not fatal', async () => {
    const dir = path.join(work, 'threaded');
    await writeClassFolders(dir, ['a', 'b'], 150, { size: 40, format: 'jpg' });
    fs.writeFileSync(path.join(dir, 'a', '0007.jpg'), 'not a jpeg');
    const samples = ['a', 'b'].flatMap((name, label) =>
      fs
        .readdirSync(path.join(dir, name))
        .sort()
        .map((f) => ({ file: path.join(dir, name, f), label })),
    );
    const pool = DecodePool.shared();
    assert.ok(pool.threads > 0);
    await pool.ready();
    const files = samples.slice(20, 84).map((s) => s.file);
    const pending = pool.submit(files, [32, 32], 1e6);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const decoded = pending.wait((file) => decodeToBytes(fs.readFileSync(file), [32, 32]));
    assert.ok(
      decoded.decodedHere < files.length,
      `the threads decoded ${files.length - decoded.decodedHere} of ${files.length}`,
    );
    files.forEach((file, i) =>
      assert.deepEqual(
        decoded.pixels.subarray(i * 3072, (i + 1) * 3072),
        decodeToBytes(fs.readFileSync(file), [32, 32]),
        file,
      ),
    );

    const { split, bad } = ImageSplit.load(samples, [32, 32], 'memory');
    assert.deepEqual(
      bad.map((b) => [path.basename(b.file), /^cannot decode: /.test(b.reason)]),
      [['0007.jpg', true]],
    );
    assert.equal(split.length, 299);
    const good = samples.filter((s) => !s.file.endsWith(`a${path.sep}0007.jpg`));
    good.forEach((sample, i) =>
      assert.deepEqual(split.imageBytes(i), decodeToBytes(fs.readFileSync(sample.file), [32, 32]), sample.file),
    );
    // Streamed, in a shuffled order, batch by batch (each decoded ahead while the one before is in use).
    const streamed = ImageSplit.load(good, [32, 32], 'stream').split;
    const order = new Random(3, 'order').permutation(good.length);
    let position = 0;
    for (const batch of streamed.batches(32, order)) {
      const pixels = batch.images.dataSync();
      batch.indices.forEach((index, i) =>
        assert.deepEqual(
          Float32Array.from(split.imageBytes(index)),
          pixels.subarray(i * 3072, (i + 1) * 3072),
          `streamed image ${index}`,
        ),
      );
      position += batch.indices.length;
      tf.dispose([batch.images, batch.labels]);
    }
    assert.equal(position, good.length);
  });

  test('epochs leak no tensors: numTensors is the same after every epoch', async () => {
    const dataset = await prepare(
      experimentFile(
        path.join(work, 'mixed'),
        'augmentation:\n  - random_flip: horizontal_and_vertical\n  - random_rotation: 0.2\n  - random_zoom: 0.1\n  - random_translation: { height_factor: 0.1, width_factor: 0.1 }\n  - random_contrast: 0.2\n  - random_brightness: 0.1\n',
      ),
    );
    const ops = loadExperiment(
      experimentFile(
        path.join(work, 'mixed'),
        'augmentation:\n  - random_flip: horizontal_and_vertical\n  - random_rotation: 0.2\n  - random_zoom: 0.1\n  - random_translation: { height_factor: 0.1, width_factor: 0.1 }\n  - random_contrast: 0.2\n  - random_brightness: 0.1\n',
      ),
    ).config.augmentation;
    const counts: number[] = [];
    for (let epoch = 1; epoch <= 3; epoch++) {
      let index = 0;
      for (const batch of dataset.splits.train.batches(8, epochOrder(7, epoch, dataset.splits.train.length))) {
        const augmented = augmentBatch(batch.images, ops, new Random(7, 'augment', epoch, index++));
        tf.dispose([augmented, batch.images, batch.labels]);
      }
      counts.push(tf.memory().numTensors);
    }
    assert.equal(new Set(counts).size, 1, `numTensors per epoch: ${counts.join(', ')}`);
  });

  test('augmentation draws are reproducible from the seed', () => {
    const images = tf.randomUniform([4, 16, 16, 3], 0, 255, 'float32', 3) as Tensor4D;
    const ops = [{ random_rotation: 0.2 }, { random_flip: 'horizontal' as const }];
    const a = augmentBatch(images, ops, new Random(1, 'augment', 1, 0));
    const b = augmentBatch(images, ops, new Random(1, 'augment', 1, 0));
    const c = augmentBatch(images, ops, new Random(1, 'augment', 2, 0));
    assert.deepEqual(Array.from(a.dataSync()), Array.from(b.dataSync()));
    assert.notDeepEqual(Array.from(a.dataSync()), Array.from(c.dataSync()));
    tf.dispose([images, a, b, c]);
  });
});

describe('augmentation matches Keras 3 preprocessing layers', () => {
  const size = 17;
  let image: Float32Array;
  let keras: Record<string, number[]>;

  before(async () => {
    const tensor = tf.randomUniform([1, size, 19, 3], 0, 255, 'float32', 11);
    image = tensor.dataSync() as Float32Array;
    tensor.dispose();
    const out = await python(
      `import json, sys
import numpy as np
import keras
x = np.array(json.loads(sys.stdin.read()), dtype="float32").reshape(1, ${size}, 19, 3)
layers = {
  "rotation": keras.layers.RandomRotation(factor=(0.1, 0.1), fill_mode="reflect", interpolation="bilinear"),
  "rotation_nearest_constant": keras.layers.RandomRotation(factor=(-0.3, -0.3), fill_mode="constant", interpolation="nearest"),
  "zoom": keras.layers.RandomZoom(height_factor=(0.2, 0.2), width_factor=(-0.1, -0.1), fill_mode="reflect"),
  "translation": keras.layers.RandomTranslation(height_factor=(0.1, 0.1), width_factor=(-0.2, -0.2), fill_mode="reflect"),
  "flip": keras.layers.RandomFlip("horizontal"),
}
out = {}
for name, layer in layers.items():
  if name == "flip":
    out[name] = np.flip(x, axis=2).reshape(-1).tolist()
  else:
    out[name] = np.asarray(layer(x, training=True)).reshape(-1).tolist()
print(json.dumps(out))`,
      [],
      JSON.stringify(Array.from(image)),
    );
    keras = JSON.parse(out) as Record<string, number[]>;
  });

  function maxDiff(ours: Tensor4D, theirs: number[]): number {
    const values = ours.dataSync();
    let max = 0;
    for (let i = 0; i < values.length; i++) max = Math.max(max, Math.abs(values[i] - theirs[i]));
    ours.dispose();
    return max;
  }

  const input = () => tf.tensor4d(image, [1, size, 19, 3]);

  test('a rotation by a fixed angle gives the same pixels (reflect, bilinear)', () => {
    const diff = maxDiff(projectiveTransform(input(), [rotationTransform(0.1, size, 19)]), keras.rotation);
    assert.ok(diff < 1e-4, `max diff ${diff}`);
  });

  test('a rotation by a fixed angle gives the same pixels (constant, nearest)', () => {
    assert.ok(
      maxDiff(
        projectiveTransform(input(), [rotationTransform(-0.3, size, 19)], 'constant', 'nearest'),
        keras.rotation_nearest_constant,
      ) < 1e-4,
    );
  });

  test('a zoom by fixed factors gives the same pixels', () => {
    assert.ok(maxDiff(projectiveTransform(input(), [zoomTransform(0.9, 1.2, size, 19)]), keras.zoom) < 1e-4);
  });

  test('a translation by fixed fractions gives the same pixels', () => {
    assert.ok(
      maxDiff(projectiveTransform(input(), [translationTransform(-0.2 * 19, 0.1 * size)]), keras.translation) < 1e-4,
    );
  });
});

/** A seeded Random whose every draw is `u`: the same draw for tlx as the patched Keras layer gets. */
class FixedDraw extends Random {
  constructor(private readonly u: number) {
    super(0);
  }

  override next(): number {
    return this.u;
  }
}

describe('augmentation from the config, drawn and applied as Keras 3 layers do', () => {
  // Each op as a user writes it in the experiment, and the Keras layer the schema says it is like.
  const cases: { op: AugmentationOp; keras: string }[] = [
    { op: { random_flip: 'horizontal' }, keras: 'keras.layers.RandomFlip("horizontal")' },
    { op: { random_flip: 'vertical' }, keras: 'keras.layers.RandomFlip("vertical")' },
    { op: { random_flip: 'horizontal_and_vertical' }, keras: 'keras.layers.RandomFlip("horizontal_and_vertical")' },
    { op: { random_rotation: 0.2 }, keras: 'keras.layers.RandomRotation(0.2)' },
    {
      op: { random_rotation: { factor: 0.3, fill_mode: 'constant', interpolation: 'nearest' } },
      keras: 'keras.layers.RandomRotation(0.3, fill_mode="constant", interpolation="nearest")',
    },
    { op: { random_zoom: 0.2 }, keras: 'keras.layers.RandomZoom(0.2)' },
    { op: { random_zoom: { height_factor: 0.2, width_factor: 0.1 } }, keras: 'keras.layers.RandomZoom(0.2, 0.1)' },
    {
      op: { random_translation: { height_factor: 0.1, width_factor: 0.2 } },
      keras: 'keras.layers.RandomTranslation(0.1, 0.2)',
    },
    { op: { random_contrast: 0.3 }, keras: 'keras.layers.RandomContrast(0.3)' },
    { op: { random_brightness: 0.1 }, keras: 'keras.layers.RandomBrightness(0.1, value_range=(0, 255))' },
  ];
  // The lowest draw, one inside, and the highest: together they pin the range and the transform.
  const draws = [0, 0.3, 0.999];
  const size: [number, number] = [13, 17];
  let pixels: Float32Array;
  let keras: number[][][];

  before(async () => {
    const images = tf.randomUniform([2, ...size, 3], 0, 255, 'float32', 21);
    pixels = images.dataSync() as Float32Array;
    images.dispose();
    const out = await python(
      `import json, sys
import numpy as np
import keras
spec = json.loads(sys.stdin.read())
x = np.array(spec["pixels"], dtype="float32").reshape(2, ${size[0]}, ${size[1]}, 3)
def with_draw(layer, u):
    # Keras's own layer and code path, with every random.uniform draw fixed at u of its range.
    backend = layer.backend
    uniform = backend.random.uniform
    def fixed(shape, minval=0.0, maxval=1.0, dtype=None, seed=None):
        return backend.numpy.full(shape, minval + (maxval - minval) * u, dtype="float32")
    backend.random.uniform = fixed
    try:
        return np.asarray(layer(x, training=True)).reshape(-1).tolist()
    finally:
        backend.random.uniform = uniform
print(json.dumps([[with_draw(eval(make), u) for u in spec["draws"]] for make in spec["layers"]]))`,
      [],
      JSON.stringify({ pixels: Array.from(pixels), draws, layers: cases.map((c) => c.keras) }),
    );
    keras = JSON.parse(out) as number[][][];
  });

  test('horizontal_and_vertical flips both axes on one draw per image, as Keras does', () => {
    const i = cases.findIndex((c) => c.op.random_flip === 'horizontal_and_vertical');
    // The first draw of each image says "flip"; any further draw would say "do not".
    let calls = 0;
    const thenNot = new (class extends Random {
      override next(): number {
        return calls++ < 2 ? 0 : 0.999;
      }
    })(0);
    const images = tf.tensor4d(pixels, [2, ...size, 3]);
    const ours = applyOp(images, cases[i].op, thenNot);
    const values = ours.dataSync();
    tf.dispose([images, ours]);
    const max = Math.max(...Array.from(values, (v, k) => Math.abs(v - keras[i][0][k])));
    assert.ok(max < 1e-4, `both images flipped on both axes, as Keras with draw 0 (max abs diff ${max})`);
  });

  cases.forEach(({ op, keras: layer }, i) => {
    test(`${JSON.stringify(op)} equals ${layer} for the same draws (lowest, inside, highest)`, () => {
      draws.forEach((u, j) => {
        const images = tf.tensor4d(pixels, [2, ...size, 3]);
        const ours = applyOp(images, op, new FixedDraw(u));
        const values = ours.dataSync();
        let max = 0;
        for (let k = 0; k < values.length; k++) max = Math.max(max, Math.abs(values[k] - keras[i][j][k]));
        tf.dispose([images, ours]);
        assert.ok(max < 1e-4, `draw ${u}: max abs diff ${max}`);
      });
    });
  });
});
