import type { Tensor, Tensor4D } from '@tensorflow/tfjs-node';
import type { AugmentationOp, FillMode, Interpolation } from '../config/resolved.ts';
import { runOp } from '../tfjs/native-ops.ts';
import type { Random } from '../core/random.ts';
import { tf } from '../tfjs/tf.ts';

/**
 * Augmentation with the semantics of Keras 3's preprocessing layers (RandomFlip,
 * RandomRotation, RandomZoom, RandomTranslation, RandomContrast, RandomBrightness):
 * the same parameter meanings, the same affine matrices, and the same TensorFlow kernel
 * (ImageProjectiveTransformV3) for the geometric ones. Random draws come from tlx's
 * seeded Random, so the same seed, epoch and batch give the same images.
 */

/** Row-major 3x3 affine matrix without its last row, as ImageProjectiveTransformV3 takes it. */
export type ProjectiveTransform = [number, number, number, number, number, number, number, number];

const f32 = Math.fround;

/**
 * Keras's rotation matrix about the image centre; `turns` is a fraction of 360°. Computed
 * step by step in float32, as Keras computes it with TensorFlow ops, so that bilinear
 * sampling lands on the same sub-pixel positions.
 */
export function rotationTransform(turns: number, height: number, width: number): ProjectiveTransform {
  const angle = f32(f32(f32(turns * 360) * f32(Math.PI / 180)));
  const cos = f32(Math.cos(angle));
  const sin = f32(Math.sin(angle));
  const cx = f32(0.5 * f32(width - 1));
  const cy = f32(0.5 * f32(height - 1));
  const [a0, a1, b0, b1] = [cos, f32(-sin), sin, cos];
  const a2 = f32(f32(cx - f32(cx * a0)) - f32(cy * a1));
  const b2 = f32(f32(cy - f32(cx * b0)) - f32(cy * b1));
  return [a0, a1, a2, b0, b1, b2, 0, 0];
}

export function zoomTransform(zoomX: number, zoomY: number, height: number, width: number): ProjectiveTransform {
  const [zx, zy] = [f32(zoomX), f32(zoomY)];
  return [zx, 0, f32(f32(f32(width - 1) / 2) * f32(1 - zx)), 0, zy, f32(f32(f32(height - 1) / 2) * f32(1 - zy)), 0, 0];
}

export function translationTransform(dx: number, dy: number): ProjectiveTransform {
  return [1, 0, -dx, 0, 1, -dy, 0, 0];
}

/** Applies one projective transform per image with TensorFlow's own kernel. */
export function projectiveTransform(
  images: Tensor4D,
  transforms: ProjectiveTransform[],
  fillMode: FillMode = 'reflect',
  interpolation: Interpolation = 'bilinear',
): Tensor4D {
  return tf.tidy(() => {
    const [, height, width] = images.shape;
    const matrix = tf.tensor2d(transforms, [transforms.length, 8], 'float32');
    const outputShape = tf.tensor1d([height, width], 'int32');
    const fillValue = tf.scalar(0, 'float32');
    return runOp(
      'ImageProjectiveTransformV3',
      [
        { name: 'dtype', kind: 'type', value: 'float32' },
        { name: 'interpolation', kind: 'string', value: interpolation.toUpperCase() },
        { name: 'fill_mode', kind: 'string', value: fillMode.toUpperCase() },
      ],
      [images, matrix, outputShape, fillValue],
    ) as Tensor4D;
  });
}

/** Flips the images whose flag is set, along width (horizontal) or height (vertical). */
function flipWhere(images: Tensor4D, flags: boolean[], axis: 1 | 2): Tensor4D {
  return tf.tidy(() => {
    const mask = tf
      .tensor4d(
        flags.map((f) => (f ? 1 : 0)),
        [flags.length, 1, 1, 1],
      )
      .cast('bool');
    return tf.where(mask.broadcastTo(images.shape), tf.reverse(images, axis), images) as Tensor4D;
  });
}

/** One draw per image; horizontal_and_vertical flips both axes on it, as Keras 3 does. */
function flipDraws(batch: number, random: Random): boolean[] {
  return Array.from({ length: batch }, () => random.next() <= 0.5);
}

/** Every image flipped: what flipWhere gives where every flag is set. */
function flipAll(images: Tensor4D, mode: NonNullable<AugmentationOp['random_flip']>): Tensor4D {
  const axes = mode === 'horizontal' ? [2] : mode === 'vertical' ? [1] : [2, 1];
  return tf.reverse(images, axes);
}

function clip255(images: Tensor): Tensor4D {
  return tf.clipByValue(images, 0, 255) as Tensor4D;
}

function rangeOf(factor: number): [number, number] {
  return [-Math.abs(factor), Math.abs(factor)];
}

/** One op on a batch of float32 pixels in [0, 255]. */
export function applyOp(images: Tensor4D, op: AugmentationOp, random: Random): Tensor4D {
  const [batch, height, width] = images.shape;
  const each = <T>(draw: () => T): T[] => Array.from({ length: batch }, draw);
  if (op.random_flip !== undefined) {
    const flags = flipDraws(batch, random);
    let result = images;
    if (op.random_flip !== 'vertical') result = flipWhere(result, flags, 2);
    if (op.random_flip !== 'horizontal') {
      const flipped = flipWhere(result, flags, 1);
      if (result !== images) result.dispose();
      result = flipped;
    }
    return result;
  }
  if (op.random_rotation !== undefined) {
    const spec = typeof op.random_rotation === 'number' ? { factor: op.random_rotation } : op.random_rotation;
    const [low, high] = rangeOf(spec.factor);
    const transforms = each(() => rotationTransform(random.uniform(low, high), height, width));
    return projectiveTransform(images, transforms, spec.fill_mode, spec.interpolation);
  }
  if (op.random_zoom !== undefined) {
    const spec = typeof op.random_zoom === 'number' ? { height_factor: op.random_zoom } : op.random_zoom;
    const [hLow, hHigh] = rangeOf(spec.height_factor);
    const transforms = each(() => {
      const zoomY = 1 + random.uniform(hLow, hHigh);
      const zoomX = spec.width_factor === undefined ? zoomY : 1 + random.uniform(...rangeOf(spec.width_factor));
      return zoomTransform(zoomX, zoomY, height, width);
    });
    return projectiveTransform(images, transforms, spec.fill_mode, spec.interpolation);
  }
  if (op.random_translation !== undefined) {
    const spec = op.random_translation;
    const transforms = each(() => {
      const dy = random.uniform(...rangeOf(spec.height_factor)) * height;
      const dx = random.uniform(...rangeOf(spec.width_factor)) * width;
      return translationTransform(dx, dy);
    });
    return projectiveTransform(images, transforms, spec.fill_mode, spec.interpolation);
  }
  if (op.random_contrast !== undefined) {
    // Keras 3 bounds a single contrast factor to (0, 1) from below: the draw is in [1, 1 + factor].
    const factor = op.random_contrast;
    const factors = each(() => random.uniform(1, 1 + factor));
    return tf.tidy(() => {
      const mean = images.mean([1, 2], true);
      return clip255(
        images
          .sub(mean)
          .mul(tf.tensor4d(factors, [batch, 1, 1, 1]))
          .add(mean),
      );
    });
  }
  if (op.random_brightness !== undefined) {
    const factor = op.random_brightness;
    const deltas = each(() => random.uniform(-factor, factor) * 255);
    return tf.tidy(() => clip255(images.add(tf.tensor4d(deltas, [batch, 1, 1, 1]))));
  }
  throw new Error(`unknown augmentation op ${JSON.stringify(op)}`);
}

/** All ops in order; the input batch is left for the caller to dispose. */
export function augmentBatch(images: Tensor4D, ops: readonly AugmentationOp[], random: Random): Tensor4D {
  let current = images;
  for (const op of ops) {
    const next = applyOp(current, op, random);
    if (current !== images && current !== next) current.dispose();
    current = next;
  }
  return current === images ? images.clone() : current;
}

/**
 * Augmentation that turns each image into one of a few fixed variants (none: the image
 * itself; a random flip: the image or its mirror). The frozen stage's outputs can then be
 * computed once per variant and picked per image in every epoch, with the draws
 * augmentBatch would make, instead of recomputed from augmented pixels.
 */
export interface ImageVariants {
  /** Names the variants (a cache of outputs for one augmentation is not another's). */
  key: string;
  count: number;
  /** Every image of a batch as variant `variant` (1..count-1), as a new tensor. */
  render(images: Tensor4D, variant: number): Tensor4D;
  /** The variant augmentBatch gives each image of a batch, from the same random draws. */
  draw(batch: number, random: Random): number[];
}

/** The augmentation as fixed variants, when it is one: no ops, or a single random_flip. */
export function imageVariants(ops: readonly AugmentationOp[]): ImageVariants | undefined {
  if (ops.length === 0)
    return {
      key: 'none',
      count: 1,
      render: (images) => images.clone(),
      draw: (batch) => new Array<number>(batch).fill(0),
    };
  const mode = ops.length === 1 ? ops[0].random_flip : undefined;
  if (mode === undefined) return undefined;
  return {
    key: `random_flip:${mode}`,
    count: 2,
    render: (images) => flipAll(images, mode),
    draw: (batch, random) => flipDraws(batch, random).map((flipped) => (flipped ? 1 : 0)),
  };
}
