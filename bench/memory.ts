/**
 * The memory estimate against the measured peak: `tlx run` on the quickstart's images (a
 * seeded 60 per class and split), one epoch per phase, no export, for each base x image size
 * x batch size, one run at a time. Each run's summary.json holds the estimate tlx made before
 * its first batch and the process's peak RSS (getrusage's ru_maxrss).
 *
 *   npx tsx bench/memory.ts [--bases mobilenet_v2,mobilenet_v3_small,mobilenet_v3_large,efficientnet_b0] [--sizes 128,224] [--batches 16,64]
 *
 * Prints one row per run (RSS before training, estimate, peak RSS, their ratio, and the growth
 * over the RSS before training, estimated and measured) and the largest deviation.
 */
import { execa } from 'execa';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const tlx = path.join(root, 'bin', 'tlx.mjs');
const { values: options } = parseArgs({
  options: {
    bases: { type: 'string', default: 'mobilenet_v2,mobilenet_v3_small,mobilenet_v3_large,efficientnet_b0' },
    sizes: { type: 'string', default: '128,224' },
    batches: { type: 'string', default: '16,64' },
  },
});

interface MemoryRecord {
  resident_mb: number;
  estimated_peak_mb: number;
  peak_rss_mb: number;
}

function experiment(base: string, size: number, batch: number): string {
  return [
    `name: memory-${base}-${size}-${batch}`,
    'seed: 1',
    'dataset:',
    `  path: ${path.join(root, 'data', 'quickstart', 'fashion5')}`,
    '  train_dir: train',
    '  validation_dir: validation',
    '  test_fraction_of_validation: 0.2',
    '  max_images_per_class: 60',
    `  image_size: [${size}, ${size}]`,
    `  batch_size: ${batch}`,
    'augmentation:',
    '  - random_flip: horizontal',
    'model:',
    `  base: ${base}`,
    '  weights: none',
    'train:',
    '  feature_extraction: { epochs: 1 }',
    '  fine_tune: { epochs: 1 }',
    '',
  ].join('\n');
}

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'tlx-bench-memory-'));
const rows: { base: string; size: number; batch: number; resident: number; estimate: number; peak: number }[] = [];
for (const base of options.bases.split(',')) {
  for (const size of options.sizes.split(',').map(Number)) {
    for (const batch of options.batches.split(',').map(Number)) {
      const file = path.join(work, `${base}-${size}-${batch}.yaml`);
      fs.writeFileSync(file, experiment(base, size, batch));
      const runsDir = path.join(work, `runs-${base}-${size}-${batch}`);
      const result = await execa(process.execPath, [tlx, '--runs-dir', runsDir, 'run', file], { reject: false });
      if (result.exitCode !== 0)
        throw new Error(
          `${base} ${size} px batch ${batch}: exit ${result.exitCode}\n${String(result.stderr).slice(-2000)}`,
        );
      const runDir = path.join(
        runsDir,
        fs.readdirSync(runsDir).find((name) => name.includes('memory-'))!,
      );
      const memory = (
        JSON.parse(fs.readFileSync(path.join(runDir, 'summary.json'), 'utf8')) as { memory: MemoryRecord }
      ).memory;
      const row = {
        base,
        size,
        batch,
        resident: memory.resident_mb,
        estimate: memory.estimated_peak_mb,
        peak: memory.peak_rss_mb,
      };
      rows.push(row);
      // The growth over what the process held before training is what the model of the phase predicts.
      const growth = `growth estimated ${String(row.estimate - row.resident).padStart(5)} / measured ${String(row.peak - row.resident).padStart(5)} MiB`;
      console.log(
        `${base.padEnd(20)} ${String(size).padStart(4)} px  batch ${String(batch).padStart(3)}  resident ${String(row.resident).padStart(5)}  estimate ${String(row.estimate).padStart(5)}  peak RSS ${String(row.peak).padStart(5)} MiB  estimate/peak ${(row.estimate / row.peak).toFixed(2)}  ${growth}`,
      );
    }
  }
}
const deviations = rows.map((row) => Math.abs(row.estimate / row.peak - 1));
console.log(
  `largest deviation: ${(100 * Math.max(...deviations)).toFixed(1)}% over ${rows.length} runs (goal: within 25%)`,
);
fs.rmSync(work, { recursive: true, force: true });
