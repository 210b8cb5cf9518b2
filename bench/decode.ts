/**
 * Decode + resize throughput of the data pipeline on JPEGs (issue: data), in images/s.
 *
 *   npx tsx bench/decode.ts [--images 1000] [--size 160] [--source 320] [--baseline]
 *
 * --baseline: the pipeline as it was before decode threads (issue 19's "today"): the same
 * decoder and resize with the former op chain (float cast and clip), on the calling thread.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as tf from '@tensorflow/tfjs-node';
import { ImageSplit } from '../src/data/images.ts';
import { classImage, encodeImage } from '../test/helpers/images.ts';

const args = process.argv.slice(2);
const option = (name: string, fallback: string) =>
  args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1] : fallback;
const count = Number(option('images', '1000'));
const size = Number(option('size', '160'));
const source = Number(option('source', '320'));

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tlx-decode-'));
const samples = [];
for (let i = 0; i < count; i++) {
  const image = classImage(i % 2, i, source);
  const file = path.join(dir, `${i}.jpg`);
  fs.writeFileSync(file, await encodeImage(image, 'jpg'));
  image.dispose();
  samples.push({ file, label: i % 2 });
}
const baseline = args.includes('--baseline');

/** The former decode: int32 pixels cast to float, resized, rounded, clipped, cast back; one thread. */
function decodeAsBefore(file: string): Uint8Array {
  const rounded = tf.tidy(() =>
    tf.image
      .resizeBilinear(
        (tf.node.decodeImage(fs.readFileSync(file), 3, 'int32', false) as tf.Tensor3D).toFloat(),
        [size, size],
        false,
        true,
      )
      .round()
      .clipByValue(0, 255)
      .toInt(),
  );
  const bytes = new Uint8Array(rounded.dataSync() as Int32Array);
  rounded.dispose();
  return bytes;
}

const runs: number[] = [];
for (let r = 0; r < 3; r++) {
  const started = performance.now();
  if (baseline) {
    for (const sample of samples) decodeAsBefore(sample.file);
  } else {
    const { split, bad } = ImageSplit.load(samples, [size, size], 'memory');
    if (bad.length || split.length !== count) throw new Error('decode failed');
  }
  runs.push(count / ((performance.now() - started) / 1000));
}
fs.rmSync(dir, { recursive: true, force: true });
runs.sort((a, b) => a - b);
process.stdout.write(
  `${JSON.stringify({ tool: 'tlx', images: count, source: `${source}x${source} JPEG`, size, pipeline: baseline ? 'baseline (one thread, former op chain)' : `decode threads: ${process.env.TLX_DECODE_THREADS ?? 'default'}`, images_per_second: runs[1], runs })}\n`,
);
