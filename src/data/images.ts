import fs from 'node:fs';
import type { Tensor1D, Tensor3D, Tensor4D } from '@tensorflow/tfjs-node';
import { imageSize } from 'image-size';
import { tf } from '../tfjs/tf.ts';
import type { Sample } from './plan.ts';
import type { SkippedFile } from './scan.ts';

export type ImageSize = [height: number, width: number];

/** Forty megapixels: the default largest image tlx decodes (dataset.max_image_pixels). */
export const defaultMaxImagePixels = 40_000_000;

/** An image whose header announces more pixels than allowed: refused before decoding. */
export class ImageTooLargeError extends Error {
  override name = 'ImageTooLargeError';
}

/**
 * Width and height from the file's header (PNG, JPEG, GIF, BMP), before anything is decoded:
 * a 100 KB PNG can announce 23000x23000 pixels and take 14 GB to decode.
 */
export function checkImageHeader(bytes: Uint8Array, maxPixels: number): { width: number; height: number } {
  let dims: { width?: number; height?: number };
  try {
    dims = imageSize(bytes);
  } catch (error) {
    throw new Error(`unreadable image header (${error instanceof Error ? error.message : String(error)})`);
  }
  const width = dims.width ?? 0;
  const height = dims.height ?? 0;
  if (width * height > maxPixels) throw new ImageTooLargeError(`${width}x${height} pixels, over dataset.max_image_pixels (${maxPixels})`);
  return { width, height };
}

/**
 * Decodes JPEG, PNG, GIF (first frame) or BMP natively, as RGB (grayscale and RGBA are
 * converted), resizes it bilinearly with half-pixel centres, as tf.image.resize and Keras's
 * image_dataset_from_directory do, and rounds to uint8. Every image tlx trains on, evaluates
 * or exports goes through this one function, in memory and streamed alike.
 */
export function decodeToBytes(bytes: Uint8Array, [height, width]: ImageSize, maxPixels = defaultMaxImagePixels): Uint8Array {
  checkImageHeader(bytes, maxPixels);
  const rounded = tf.tidy(() => {
    const decoded = tf.node.decodeImage(bytes, 3, 'int32', false) as Tensor3D;
    if (decoded.shape[0] === height && decoded.shape[1] === width) return decoded;
    return tf.image.resizeBilinear(decoded.toFloat(), [height, width], false, true).round().clipByValue(0, 255).toInt();
  });
  // Int32Array -> Uint8Array copy in native code; a per-value JS callback is ~25x slower.
  const result = new Uint8Array(rounded.dataSync() as Int32Array);
  rounded.dispose();
  return result;
}

/** A batch as the model takes it: float32 pixels in [0, 255] and integer labels. */
export interface Batch {
  images: Tensor4D;
  labels: Tensor1D;
  /** Positions of the batch's samples in the split. */
  indices: number[];
}

/** Where a split's decoded pixels live: in memory (decoded once) or re-read from disk per batch. */
export type StorageMode = 'memory' | 'stream';

/**
 * One split's images at the training size, as uint8 (H x W x 3 bytes each). In memory mode
 * every image is decoded once and kept; in stream mode batches are decoded from disk when
 * asked for, for datasets larger than the memory budget. Both give the same bytes.
 */
export class ImageSplit {
  readonly labels: Int32Array;
  private pixels?: Uint8Array;

  private constructor(
    readonly samples: Sample[],
    readonly size: ImageSize,
    readonly mode: StorageMode,
    private readonly maxPixels: number,
  ) {
    this.labels = Int32Array.from(samples.map((s) => s.label));
  }

  get length(): number {
    return this.samples.length;
  }

  get bytesPerImage(): number {
    return this.size[0] * this.size[1] * 3;
  }

  /**
   * Checks (and in memory mode keeps) every image. Files that cannot be decoded or are too
   * large are dropped from the split and returned, so the caller can record or refuse them.
   */
  static load(samples: Sample[], size: ImageSize, mode: StorageMode, maxPixels = defaultMaxImagePixels): { split: ImageSplit; bad: SkippedFile[] } {
    const bad: SkippedFile[] = [];
    const good: Sample[] = [];
    const perImage = size[0] * size[1] * 3;
    // One buffer for the whole split, written in place: no second copy at the end.
    const pixels = mode === 'memory' ? new Uint8Array(samples.length * perImage) : undefined;
    for (const sample of samples) {
      try {
        const bytes = fs.readFileSync(sample.file);
        if (pixels) pixels.set(decodeToBytes(bytes, size, maxPixels), good.length * perImage);
        else checkImageHeader(bytes, maxPixels);
        good.push(sample);
      } catch (error) {
        const reason = error instanceof Error ? error.message.split('\n')[0] : String(error);
        bad.push({ file: sample.file, reason: error instanceof ImageTooLargeError ? `too large: ${reason}` : `cannot decode: ${reason}` });
      }
    }
    const split = new ImageSplit(good, size, mode, maxPixels);
    split.pixels = pixels && bad.length > 0 ? pixels.slice(0, good.length * perImage) : pixels;
    return { split, bad };
  }

  /** Uint8 pixels of one image (for pictures and calibration data). */
  imageBytes(index: number): Uint8Array {
    if (this.pixels) return this.pixels.subarray(index * this.bytesPerImage, (index + 1) * this.bytesPerImage);
    return decodeToBytes(fs.readFileSync(this.samples[index].file), this.size, this.maxPixels);
  }

  /** Float32 pixels of some images, [n, H, W, 3] in [0, 255]. */
  images(indices: readonly number[]): Tensor4D {
    const [height, width] = this.size;
    const perImage = this.bytesPerImage;
    const values = new Float32Array(indices.length * perImage);
    indices.forEach((index, i) => values.set(this.imageBytes(index), i * perImage));
    return tf.tensor4d(values, [indices.length, height, width, 3], 'float32');
  }

  /**
   * The split in batches. Pass an order (e.g. a seeded permutation per epoch) to shuffle;
   * the caller disposes each batch's tensors.
   */
  *batches(batchSize: number, order?: readonly number[]): Generator<Batch> {
    const sequence = order ?? Array.from({ length: this.length }, (_, i) => i);
    for (let start = 0; start < sequence.length; start += batchSize) {
      const indices = sequence.slice(start, start + batchSize);
      yield { images: this.images(indices), labels: tf.tensor1d(indices.map((i) => this.labels[i]), 'int32'), indices };
    }
  }
}
