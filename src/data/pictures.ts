import type { Tensor3D } from '@tensorflow/tfjs-node';
import type { TopLevelSpec } from 'vega-lite';
import type { AugmentationOp } from '../config/resolved.ts';
import { chartPng } from '../plots/render.ts';
import { Random } from '../core/random.ts';
import { tf } from '../tfjs/tf.ts';
import { augmentBatch } from './augment.ts';
import type { ImageSplit } from './images.ts';

interface Tile {
  caption: string;
  url: string;
}

async function pngDataUrl(pixels: Uint8Array | Float32Array, height: number, width: number): Promise<string> {
  const image = tf.tidy(
    () => tf.tensor3d(pixels, [height, width, 3], 'float32').round().clipByValue(0, 255).cast('int32') as Tensor3D,
  );
  const png = await tf.node.encodePng(image);
  image.dispose();
  return `data:image/png;base64,${Buffer.from(png).toString('base64')}`;
}

/** A 3x3 grid of tiles with captions, as Vega-Lite image marks in a faceted view. */
function gridSpec(tiles: Tile[], title: string, tileSize: number): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: title, fontSize: 16 },
    data: { values: tiles.map((tile, order) => ({ ...tile, order, key: `${order + 1}. ${tile.caption}` })) },
    facet: {
      field: 'key',
      type: 'ordinal',
      sort: { field: 'order' },
      header: { title: null, labelFontSize: 13, labelOrient: 'bottom' },
    },
    columns: 3,
    spacing: 8,
    spec: {
      width: tileSize,
      height: tileSize,
      view: { stroke: null },
      mark: { type: 'image', width: tileSize, height: tileSize, align: 'left', baseline: 'top' },
      encoding: { url: { field: 'url', type: 'nominal' }, x: { value: 0 }, y: { value: 0 } },
    },
  } as TopLevelSpec;
}

function tileSizeFor(height: number, width: number): number {
  return Math.max(96, Math.min(200, Math.max(height, width)));
}

/** The tutorial's first figure: nine training images with their class names. */
export async function sampleGridPng(split: ImageSplit, classNames: string[], seed: number): Promise<Buffer> {
  const [height, width] = split.size;
  const picks = new Random(seed, 'sample_grid').permutation(split.length).slice(0, 9);
  const tiles: Tile[] = [];
  for (const index of picks)
    tiles.push({
      caption: classNames[split.labels[index]],
      url: await pngDataUrl(split.imageBytes(index), height, width),
    });
  return chartPng(gridSpec(tiles, 'Training images', tileSizeFor(height, width)));
}

/** The tutorial's augmentation figure: one training image, nine augmented versions. */
export async function augmentationPreviewPng(
  split: ImageSplit,
  ops: readonly AugmentationOp[],
  seed: number,
): Promise<Buffer> {
  const [height, width] = split.size;
  const index = new Random(seed, 'augmentation_preview').permutation(split.length)[0];
  const original = split.images([index]);
  const batch = tf.tidy(() => tf.tile(original, [9, 1, 1, 1]));
  const augmented = augmentBatch(batch as typeof original, ops, new Random(seed, 'augmentation_preview_draws'));
  const pixels = augmented.dataSync() as Float32Array;
  tf.dispose([original, batch, augmented]);
  const per = height * width * 3;
  const tiles: Tile[] = [];
  for (let i = 0; i < 9; i++)
    tiles.push({
      caption: ops.length ? 'augmented' : 'no augmentation',
      url: await pngDataUrl(pixels.subarray(i * per, (i + 1) * per), height, width),
    });
  const title = ops.length ? `Augmentation: ${ops.map((op) => Object.keys(op)[0]).join(', ')}` : 'Augmentation: none';
  return chartPng(gridSpec(tiles, title, tileSizeFor(height, width)));
}
