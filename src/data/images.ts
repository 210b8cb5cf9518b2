import fs from 'node:fs';
import type { Tensor1D, Tensor3D, Tensor4D } from '@tensorflow/tfjs-node';
import { imageSize } from 'image-size';
import { decodeJpegUint8 } from '../tfjs/native-ops.ts';
import { tf } from '../tfjs/tf.ts';
import { openUnlinkedFile, writingTo } from '../core/files.ts';
import { DecodePool, type PendingDecode } from './decode-pool.ts';
import type { Sample } from './plan.ts';
import type { SkippedFile } from './scan.ts';

export type ImageSize = [height: number, width: number];

/** Forty megapixels: the default largest image tlx decodes (dataset.max_image_pixels). */
export const defaultMaxImagePixels = 40_000_000;

/** An image whose header announces more pixels than allowed: refused before decoding. */
class ImageTooLargeError extends Error {
  override name = 'ImageTooLargeError';
}

/** An image file that cannot be used, with a reason a person understands (truncated, not an image, another format). */
export class UnusableImageError extends Error {
  override name = 'UnusableImageError';
}

type DecodableFormat = 'JPEG' | 'PNG' | 'GIF' | 'BMP';

/** The format TensorFlow's decoder will see, by the file's signature (its extension does not count). */
function formatOf(bytes: Uint8Array): DecodableFormat | undefined {
  const starts = (...signature: number[]) =>
    bytes.length >= signature.length && signature.every((byte, i) => bytes[i] === byte);
  if (starts(0xff, 0xd8, 0xff)) return 'JPEG';
  if (starts(0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a)) return 'PNG';
  if (starts(0x47, 0x49, 0x46, 0x38)) return 'GIF';
  if (starts(0x42, 0x4d)) return 'BMP';
  return undefined;
}

/** Whether `marker` occurs in the file's last `window` bytes (where a whole JPEG's end-of-image or a PNG's IEND is). */
function endsWithin(bytes: Uint8Array, marker: number[], window: number): boolean {
  const tail = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).subarray(
    Math.max(0, bytes.byteLength - window),
  );
  return tail.includes(Buffer.from(marker));
}

/**
 * Refuses, before the decoder sees it, a file that is no image or is cut short: libjpeg
 * would print its own complaint on stderr and answer only "Invalid TF_Status: 3".
 */
function checkWhole(bytes: Uint8Array): DecodableFormat {
  const format = formatOf(bytes);
  if (!format) {
    let other: string | undefined;
    try {
      other = imageSize(bytes).type;
    } catch {
      // not an image format image-size knows either
    }
    throw new UnusableImageError(
      other
        ? `unsupported format (${other}); expected JPEG, PNG, GIF or BMP`
        : 'not an image (no JPEG, PNG, GIF or BMP signature at its start)',
    );
  }
  if (format === 'JPEG' && !endsWithin(bytes, [0xff, 0xd9], 65_536))
    throw new UnusableImageError('truncated JPEG (no end-of-image marker: the file is cut short)');
  if (format === 'PNG' && !endsWithin(bytes, [0x49, 0x45, 0x4e, 0x44], 4096))
    throw new UnusableImageError('truncated PNG (no IEND chunk: the file is cut short)');
  return format;
}

/**
 * Width and height from the file's header (PNG, JPEG, GIF, BMP), before anything is decoded:
 * a 100 KB PNG can announce 23000x23000 pixels and take 14 GB to decode. A file that is no
 * image, or is cut short, is refused here with its reason.
 */
export function checkImageHeader(bytes: Uint8Array, maxPixels: number): { width: number; height: number } {
  const format = checkWhole(bytes);
  let dims: { width?: number; height?: number };
  try {
    dims = imageSize(bytes);
  } catch (error) {
    throw new UnusableImageError(
      `damaged ${format} header (${error instanceof Error ? error.message : String(error)})`,
    );
  }
  const width = dims.width ?? 0;
  const height = dims.height ?? 0;
  if (width * height > maxPixels)
    throw new ImageTooLargeError(`${width}x${height} pixels, over dataset.max_image_pixels (${maxPixels})`);
  return { width, height };
}

/** TensorFlow's decoder; its refusal ("Invalid TF_Status: 3") named as damaged data of the format. */
function decodeWithReason(bytes: Uint8Array): Tensor3D {
  const format = formatOf(bytes);
  try {
    return (format === 'JPEG' ? decodeJpegUint8(bytes) : tf.node.decodeImage(bytes, 3, 'int32', false)) as Tensor3D;
  } catch (error) {
    if (/TF_Status/.test(error instanceof Error ? error.message : String(error)))
      throw new UnusableImageError(`damaged ${format ?? 'image'} data (the decoder refused it)`);
    throw error;
  }
}

/**
 * Decodes JPEG, PNG, GIF (first frame) or BMP natively, as RGB (grayscale and RGBA are
 * converted), resizes it bilinearly with half-pixel centres, as tf.image.resize and Keras's
 * image_dataset_from_directory do, and rounds to uint8. Every image tlx trains on, evaluates
 * or exports goes through this one function, in memory and streamed alike.
 */
export function decodeToBytes(
  bytes: Uint8Array,
  [height, width]: ImageSize,
  maxPixels = defaultMaxImagePixels,
): Uint8Array {
  checkImageHeader(bytes, maxPixels);
  const rounded = tf.tidy(() => {
    // JPEG, the common case, goes to the resize as TensorFlow's uint8 (tfjs would copy it to int32 first).
    const decoded = decodeWithReason(bytes);
    if (decoded.shape[0] === height && decoded.shape[1] === width) return decoded.toInt();
    // ResizeBilinear takes the integers as they are (it computes in float32); its weights are
    // convex, so the rounded result stays within 0..255 and needs no clip. The cast to int32
    // pays for itself: V8 converts Int32Array to Uint8Array ~8x faster than Float32Array
    // (33 against 265 us for a 160x160 image).
    return tf.image.resizeBilinear(decoded, [height, width], false, true).round().toInt();
  });
  // Whole numbers in 0..255 convert exactly in one native typed-array copy; a per-value JS
  // callback is ~25x slower.
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

/**
 * Where a split's decoded pixels live: in memory, or streamed from disk (decoded once into a
 * pixel file when there is room for it, as tf.data's `cache(filename)`; else decoded again
 * per batch). Either way every image is decoded once at load, so bad files are known up front.
 */
export type StorageMode = 'memory' | 'stream';

/** Images per decode job when a split is loaded into memory. */
const LOAD_CHUNK = 64;

/** Below this many images a split is decoded on the calling thread only. */
const POOL_MIN_IMAGES = 256;

/** Why an image is left out of its split, for the record of skipped files. */
function skippedReason(error: unknown): string {
  const reason = error instanceof Error ? error.message.split('\n')[0] : String(error);
  return error instanceof ImageTooLargeError ? `too large: ${reason}` : `cannot decode: ${reason}`;
}

/** Stream mode without a pixel file: only each file's header is checked now; batches decode later. */
function checkHeaders(samples: Sample[], maxPixels: number): { good: Sample[]; bad: SkippedFile[] } {
  const good: Sample[] = [];
  const bad: SkippedFile[] = [];
  for (const sample of samples) {
    try {
      checkImageHeader(fs.readFileSync(sample.file), maxPixels);
      good.push(sample);
    } catch (error) {
      bad.push({ file: sample.file, reason: skippedReason(error) });
    }
  }
  return { good, bad };
}

/**
 * Decodes every sample, in chunks on the decode threads (two chunks in flight: the threads
 * decode the next while this thread copies one), and hands each good image's pixels to
 * `keep` with its index among the good ones. A file a thread could not decode is tried once
 * more here, so its error is this process's own.
 */
function decodeAll(
  samples: Sample[],
  size: ImageSize,
  maxPixels: number,
  keep: (bytes: Uint8Array, at: number) => void,
): { good: Sample[]; bad: SkippedFile[] } {
  const good: Sample[] = [];
  const bad: SkippedFile[] = [];
  const perImage = size[0] * size[1] * 3;
  const decodeHere = (file: string) => decodeToBytes(fs.readFileSync(file), size, maxPixels);
  // Threads pay for their start-up (each loads TensorFlow) only on larger splits.
  const pool = samples.length >= POOL_MIN_IMAGES ? DecodePool.shared() : undefined;
  const chunks: Sample[][] = [];
  for (let start = 0; start < samples.length; start += LOAD_CHUNK)
    chunks.push(samples.slice(start, start + LOAD_CHUNK));
  const submit = (chunk: Sample[]) =>
    (pool ?? DecodePool.none).submit(
      chunk.map((s) => s.file),
      size,
      maxPixels,
    );
  let ahead = chunks.length > 0 ? submit(chunks[0]) : undefined;
  chunks.forEach((chunk, c) => {
    const current = ahead!;
    ahead = c + 1 < chunks.length ? submit(chunks[c + 1]) : undefined;
    const decoded = current.wait(decodeHere);
    chunk.forEach((sample, i) => {
      if (decoded.failed.includes(i)) {
        try {
          decodeHere(sample.file);
        } catch (error) {
          bad.push({ file: sample.file, reason: skippedReason(error) });
          return;
        }
      }
      keep(decoded.pixels.subarray(i * perImage, (i + 1) * perImage), good.length);
      good.push(sample);
    });
  });
  return { good, bad };
}

/**
 * One split's images at the training size, as uint8 (H x W x 3 bytes each). In memory mode
 * every image is decoded once and kept; in stream mode batches are decoded from disk when
 * asked for, for datasets larger than the memory budget. Both give the same bytes.
 */
export class ImageSplit {
  readonly labels: Int32Array;
  private pixels?: Uint8Array;
  /** Stream mode with a pixel file: its descriptor (the file itself is already unlinked). */
  private pixelFile?: number;

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
   * Checks every image and keeps its pixels: in memory, or in stream mode in a pixel file
   * under `pixelDir` when given (else batches are decoded again when asked for). Files that
   * cannot be decoded or are too large are dropped from the split and returned, so the
   * caller can record or refuse them.
   */
  static load(
    samples: Sample[],
    size: ImageSize,
    mode: StorageMode,
    maxPixels = defaultMaxImagePixels,
    pixelDir?: string,
  ): { split: ImageSplit; bad: SkippedFile[] } {
    if (mode === 'stream' && !pixelDir) {
      const { good, bad } = checkHeaders(samples, maxPixels);
      return { split: new ImageSplit(good, size, mode, maxPixels), bad };
    }
    const perImage = size[0] * size[1] * 3;
    // Memory: one buffer for the whole split, written in place. Stream: a file unlinked as
    // soon as it is open, so the OS frees it when tlx exits, however it exits.
    const pixels = mode === 'memory' ? new Uint8Array(samples.length * perImage) : undefined;
    const pixelFile = pixelDir ? openUnlinkedFile(pixelDir, 'pixels') : undefined;
    const keep = (bytes: Uint8Array, at: number) =>
      pixels
        ? pixels.set(bytes, at * perImage)
        : writingTo(pixelDir!, 'decoded pixels (dataset.storage: stream)', () =>
            fs.writeSync(pixelFile!, bytes, 0, perImage, at * perImage),
          );
    const { good, bad } = decodeAll(samples, size, maxPixels, keep);
    const split = new ImageSplit(good, size, mode, maxPixels);
    if (pixels) split.pixels = bad.length > 0 ? pixels.slice(0, good.length * perImage) : pixels;
    if (pixelFile !== undefined) {
      split.pixelFile = pixelFile;
      pixelFiles.register(split, pixelFile);
    }
    return { split, bad };
  }

  /** Uint8 pixels of one image (for pictures and calibration data). */
  imageBytes(index: number): Uint8Array {
    if (this.pixels) return this.pixels.subarray(index * this.bytesPerImage, (index + 1) * this.bytesPerImage);
    if (this.pixelFile !== undefined) {
      const bytes = new Uint8Array(this.bytesPerImage);
      fs.readSync(this.pixelFile, bytes, 0, bytes.length, index * bytes.length);
      return bytes;
    }
    return decodeToBytes(fs.readFileSync(this.samples[index].file), this.size, this.maxPixels);
  }

  /** Float32 pixels of some images, [n, H, W, 3] in [0, 255]. */
  images(indices: readonly number[]): Tensor4D {
    if (this.pixels || this.pixelFile !== undefined)
      return this.tensorOf(
        indices.map((index) => this.imageBytes(index)),
        indices.length,
      );
    return this.tensorOf([this.collect(this.decodeAhead(indices))], indices.length);
  }

  /**
   * The split in batches. Pass an order (e.g. a seeded permutation per epoch) to shuffle;
   * the caller disposes each batch's tensors. Streamed, each batch is decoded on the decode
   * threads while the one before it is in use.
   */
  *batches(batchSize: number, order?: readonly number[]): Generator<Batch> {
    const sequence = order ?? Array.from({ length: this.length }, (_, i) => i);
    const streamed = !this.pixels && this.pixelFile === undefined;
    let ahead = streamed && sequence.length > 0 ? this.decodeAhead(sequence.slice(0, batchSize)) : undefined;
    for (let start = 0; start < sequence.length; start += batchSize) {
      const indices = sequence.slice(start, start + batchSize);
      let images: Tensor4D;
      if (ahead) {
        const current = ahead;
        const next = sequence.slice(start + batchSize, start + 2 * batchSize);
        ahead = next.length > 0 ? this.decodeAhead(next) : undefined;
        images = this.tensorOf([this.collect(current)], indices.length);
      } else {
        images = this.images(indices);
      }
      yield {
        images,
        labels: tf.tensor1d(
          indices.map((i) => this.labels[i]),
          'int32',
        ),
        indices,
      };
    }
  }

  /** A decoded batch's pixels; an image that failed is decoded again here, to throw its own error. */
  private collect(pending: PendingDecode): Uint8Array {
    const { pixels, failed } = pending.wait((file) => this.decodeFile(file));
    for (const index of failed) pixels.set(this.decodeFile(pending.job.files[index]), index * this.bytesPerImage);
    return pixels;
  }

  private decodeFile(file: string): Uint8Array {
    return decodeToBytes(fs.readFileSync(file), this.size, this.maxPixels);
  }

  private decodeAhead(indices: readonly number[]): PendingDecode {
    return DecodePool.shared().submit(
      indices.map((index) => this.samples[index].file),
      this.size,
      this.maxPixels,
    );
  }

  /** Float32 [n, H, W, 3] from uint8 pixels, given as consecutive chunks. */
  private tensorOf(chunks: Uint8Array[], count: number): Tensor4D {
    const [height, width] = this.size;
    const values = new Float32Array(count * this.bytesPerImage);
    let offset = 0;
    for (const chunk of chunks) {
      values.set(chunk, offset);
      offset += chunk.length;
    }
    return tf.tensor4d(values, [count, height, width, 3], 'float32');
  }
}

/**
 * Closes a split's pixel file once the split is unreachable, which frees its disk space: a
 * sweep that moves on to other data (another image_size) need not wait for tlx to exit.
 */
const pixelFiles = new FinalizationRegistry<number>((fd) => fs.close(fd, () => undefined));
