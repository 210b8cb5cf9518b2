import fs from 'node:fs';
import type { Tensor1D, Tensor3D, Tensor4D } from '@tensorflow/tfjs-node';
import { tf } from '../tf.ts';
import type { Sample } from './plan.ts';
import type { SkippedFile } from './scan.ts';

export type ImageSize = [height: number, width: number];

/**
 * Decodes JPEG, PNG, GIF (first frame) or BMP natively, as RGB (grayscale and RGBA are
 * converted), and resizes it bilinearly with half-pixel centres, as tf.image.resize and
 * Keras's image_dataset_from_directory do. Returns float32 pixels in [0, 255].
 */
export function decodeResized(bytes: Uint8Array, [height, width]: ImageSize): Tensor3D {
  return tf.tidy(() => {
    const decoded = tf.node.decodeImage(bytes, 3, 'int32', false) as Tensor3D;
    if (decoded.shape[0] === height && decoded.shape[1] === width) return decoded.toFloat();
    return tf.image.resizeBilinear(decoded.toFloat(), [height, width], false, true);
  });
}

/** Pixels rounded to uint8 (0..255) for keeping in memory: 1 byte per value instead of 4. */
export function toBytes(image: Tensor3D): Uint8Array {
  const rounded = tf.tidy(() => image.round().clipByValue(0, 255).toInt());
  // Int32Array -> Uint8Array copy in native code; a per-value JS callback is ~25x slower.
  const bytes = new Uint8Array(rounded.dataSync() as Int32Array);
  rounded.dispose();
  return bytes;
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
 * One split's images at the training size. In memory mode every image is decoded and
 * resized once and kept as uint8 (H x W x 3 bytes each); in stream mode batches are
 * decoded from disk when asked for, for datasets larger than the memory budget.
 */
export class ImageSplit {
  readonly labels: Int32Array;
  private pixels?: Uint8Array;

  private constructor(
    readonly samples: Sample[],
    readonly size: ImageSize,
    readonly mode: StorageMode,
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
   * Checks (and in memory mode keeps) every image. Files that cannot be decoded are
   * dropped from the split and returned, so the caller can record or refuse them.
   */
  static load(samples: Sample[], size: ImageSize, mode: StorageMode): { split: ImageSplit; bad: SkippedFile[] } {
    const bad: SkippedFile[] = [];
    const good: Sample[] = [];
    const perImage = size[0] * size[1] * 3;
    // One buffer for the whole split, written in place: no second copy at the end.
    const pixels = mode === 'memory' ? new Uint8Array(samples.length * perImage) : undefined;
    for (const sample of samples) {
      let image: Tensor3D | undefined;
      try {
        image = decodeResized(fs.readFileSync(sample.file), size);
        pixels?.set(toBytes(image), good.length * perImage);
        good.push(sample);
      } catch (error) {
        bad.push({ file: sample.file, reason: `cannot decode: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}` });
      } finally {
        image?.dispose();
      }
    }
    const split = new ImageSplit(good, size, mode);
    split.pixels = pixels && bad.length > 0 ? pixels.slice(0, good.length * perImage) : pixels;
    return { split, bad };
  }

  /** Float32 pixels of some images, [n, H, W, 3] in [0, 255]. */
  images(indices: readonly number[]): Tensor4D {
    const [height, width] = this.size;
    const perImage = this.bytesPerImage;
    const values = new Float32Array(indices.length * perImage);
    if (this.pixels) {
      indices.forEach((index, i) => values.set(this.pixels!.subarray(index * perImage, (index + 1) * perImage), i * perImage));
    } else {
      indices.forEach((index, i) => {
        const image = decodeResized(fs.readFileSync(this.samples[index].file), this.size);
        values.set(image.dataSync(), i * perImage);
        image.dispose();
      });
    }
    return tf.tensor4d(values, [indices.length, height, width, 3], 'float32');
  }

  /** Uint8 pixels of one image (for pictures and calibration data). */
  imageBytes(index: number): Uint8Array {
    if (this.pixels) return this.pixels.slice(index * this.bytesPerImage, (index + 1) * this.bytesPerImage);
    const image = decodeResized(fs.readFileSync(this.samples[index].file), this.size);
    const bytes = toBytes(image);
    image.dispose();
    return bytes;
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

  batchCount(batchSize: number): number {
    return Math.ceil(this.length / batchSize);
  }
}
