import os from 'node:os';
import { Worker } from 'node:worker_threads';
import type { ImageSize } from './images.ts';

/**
 * Decoding on worker threads for streamed splits, with the same decoder (decodeToBytes):
 * the next batch is decoded while the current one trains. The training loop stays
 * synchronous: when it needs a batch, the calling thread claims whatever images no thread
 * has started and decodes them itself, then waits (Atomics.wait) only for images in
 * progress. So a batch is never slower than decoding it on the calling thread, and a
 * thread that never starts cannot hang training.
 */

/** One batch to decode; the control words and pixels are shared by every thread. */
export interface DecodeJob {
  files: string[];
  size: ImageSize;
  maxPixels: number;
  /** Int32: [next image to claim, images finished, then per image 0 pending / 1 decoded / 2 failed]. */
  control: SharedArrayBuffer;
  pixels: SharedArrayBuffer;
}

const NEXT = 0;
const FINISHED = 1;
const STATUS = 2;

/** The next unclaimed image of a job, or -1 when every image is claimed. */
export function claimNext(job: DecodeJob): number {
  const control = new Int32Array(job.control);
  const index = Atomics.add(control, NEXT, 1);
  return index < job.files.length ? index : -1;
}

export function finish(job: DecodeJob, index: number, ok: boolean): void {
  const control = new Int32Array(job.control);
  Atomics.store(control, STATUS + index, ok ? 1 : 2);
  Atomics.add(control, FINISHED, 1);
  Atomics.notify(control, FINISHED);
}

export interface Decoded {
  /** Every image's pixels, in order (a failed image's bytes are zero). */
  pixels: Uint8Array;
  /** Positions of the images that could not be decoded. */
  failed: number[];
  /** How many the waiting thread decoded itself (the rest came from the decode threads). */
  decodedHere: number;
}

export class PendingDecode {
  constructor(readonly job: DecodeJob) {}

  /**
   * Decodes what is still unclaimed on this thread (with `decodeHere`), waits for the
   * images other threads are decoding, and returns the pixels.
   */
  wait(decodeHere: (file: string) => Uint8Array): Decoded {
    const { job } = this;
    const perImage = job.size[0] * job.size[1] * 3;
    const pixels = new Uint8Array(job.pixels);
    let decodedHere = 0;
    for (let index = claimNext(job); index >= 0; index = claimNext(job)) {
      decodedHere++;
      let ok = true;
      try {
        pixels.set(decodeHere(job.files[index]), index * perImage);
      } catch {
        ok = false;
      }
      finish(job, index, ok);
    }
    const control = new Int32Array(job.control);
    for (
      let finished = Atomics.load(control, FINISHED);
      finished < job.files.length;
      finished = Atomics.load(control, FINISHED)
    ) {
      Atomics.wait(control, FINISHED, finished, 1000);
    }
    const failed = job.files.map((_, index) => index).filter((index) => Atomics.load(control, STATUS + index) === 2);
    return { pixels, failed, decodedHere };
  }
}

export class DecodePool {
  private static instance?: DecodePool;
  /** No threads: every image is decoded by the thread that waits for it. */
  static readonly none = new DecodePool(0);
  private readonly workers: Worker[];
  private readonly started: Promise<unknown>[] = [];

  private constructor(threads: number) {
    this.workers = Array.from({ length: threads }, () => {
      const worker = new Worker(new URL('./decode-thread.mjs', import.meta.url), {
        env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: process.env.TF_CPP_MIN_LOG_LEVEL ?? '2' },
      });
      // Idle threads never keep the process alive; an error there only means this thread decodes more.
      worker.unref();
      worker.on('error', () => undefined);
      this.started.push(new Promise((resolve) => worker.once('message', resolve)));
      return worker;
    });
  }

  /**
   * Threads: $TLX_DECODE_THREADS, else one per core but one: the calling thread decodes too,
   * and one more decoder than cores was measured slower (bench/compare.ts decode).
   */
  static shared(): DecodePool {
    const configured = process.env.TLX_DECODE_THREADS?.trim() ? Number(process.env.TLX_DECODE_THREADS) : NaN;
    return (DecodePool.instance ??= new DecodePool(
      Number.isInteger(configured) && configured >= 0 ? configured : Math.max(1, os.availableParallelism() - 1),
    ));
  }

  static async closeShared(): Promise<void> {
    const pool = DecodePool.instance;
    DecodePool.instance = undefined;
    await Promise.all(pool?.workers.map((w) => w.terminate()) ?? []);
  }

  get threads(): number {
    return this.workers.length;
  }

  /** Resolves when every thread has loaded TensorFlow and waits for work (for tests and benchmarks). */
  async ready(): Promise<void> {
    await Promise.all(this.started);
  }

  submit(files: string[], size: ImageSize, maxPixels: number): PendingDecode {
    const job: DecodeJob = {
      files,
      size,
      maxPixels,
      control: new SharedArrayBuffer((STATUS + files.length) * 4),
      pixels: new SharedArrayBuffer(files.length * size[0] * size[1] * 3),
    };
    for (const worker of this.workers) worker.postMessage(job);
    return new PendingDecode(job);
  }
}
