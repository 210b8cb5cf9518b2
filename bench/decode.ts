/**
 * Decode + resize throughput of the data pipeline on JPEGs (issue: data), in images/s.
 *
 *   npx tsx bench/decode.ts [--images 1000] [--size 160] [--source 320]
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ImageSplit } from '../src/data/images.ts';
import { classImage, encodeImage } from '../test/helpers/images.ts';

const args = process.argv.slice(2);
const option = (name: string, fallback: string) => (args.includes(`--${name}`) ? args[args.indexOf(`--${name}`) + 1] : fallback);
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
const runs: number[] = [];
for (let r = 0; r < 3; r++) {
  const started = performance.now();
  const { split, bad } = ImageSplit.load(samples, [size, size], 'memory');
  const seconds = (performance.now() - started) / 1000;
  if (bad.length || split.length !== count) throw new Error('decode failed');
  runs.push(count / seconds);
}
fs.rmSync(dir, { recursive: true, force: true });
runs.sort((a, b) => a - b);
process.stdout.write(`${JSON.stringify({ tool: 'tlx', images: count, source: `${source}x${source} JPEG`, size, images_per_second: runs[1], runs })}\n`);
