import fs from 'node:fs';
import type { Tensor } from '@tensorflow/tfjs-node';
import { openUnlinkedFile, writingTo } from '../core/files.ts';
import { tf } from '../tfjs/tf.ts';

/**
 * The rows of a cache of the frozen layers' outputs, one tensor per column ([rows, ...shape]
 * each): held as tensors in memory, or, when too large for memory, written once to a file
 * and read back per batch (tf.data's `cache(filename)`). A file lives in the OS's page
 * cache while memory is free and is never part of the process's resident memory; it is
 * unlinked as soon as it is open, so the OS frees it when tlx exits, however it exits.
 * Both give the same float32 values, bit for bit.
 */
export interface CachedRows {
  readonly count: number;
  /** The rows `rows`, in that order, one new tensor per column (the caller disposes them). */
  gather(rows: readonly number[]): Tensor[];
  dispose(): void;
}

export type RowsPlace = 'memory' | 'disk';

/** Where a cache's rows go: memory, or files under `dir`. */
export type RowsTarget = { place: 'memory' } | { place: 'disk'; dir: string };

/** Collects rows batch by batch (in row order) into memory or into files under `dir`. */
export class RowsBuilder {
  private readonly parts: Tensor[][] = [];
  private readonly files: ColumnFile[] = [];
  private count = 0;

  constructor(
    private readonly columns: number,
    private readonly target: RowsTarget,
  ) {}

  /** The next rows, one tensor per column (taken over: disposed here or kept). */
  append(batch: Tensor[]): void {
    if (this.target.place === 'memory') {
      this.parts.push(batch);
    } else {
      const dir = this.target.dir;
      if (this.files.length === 0)
        this.files.push(...batch.map((column) => new ColumnFile(dir, column.shape.slice(1))));
      batch.forEach((column, k) => this.files[k].append(column));
      tf.dispose(batch);
    }
    this.count += batch[0].shape[0];
  }

  finish(): CachedRows {
    if (this.target.place === 'disk') return new FileRows(this.files, this.count);
    const joined = Array.from({ length: this.columns }, (_, k) => {
      const column = this.parts.map((part) => part[k]);
      const tensor = column.length === 1 ? column[0] : tf.concat(column);
      if (column.length > 1) tf.dispose(column);
      return tensor;
    });
    return new TensorRows(joined, this.count);
  }

  /** Frees what was collected when the rows are never finished (an error midway). */
  abandon(): void {
    for (const part of this.parts) tf.dispose(part);
    for (const file of this.files) file.close();
  }
}

class TensorRows implements CachedRows {
  constructor(
    private readonly columns: Tensor[],
    readonly count: number,
  ) {}

  gather(rows: readonly number[]): Tensor[] {
    return tf.tidy(() => {
      const index = tf.tensor1d(rows as number[], 'int32');
      return this.columns.map((column) => tf.gather(column, index));
    });
  }

  dispose(): void {
    tf.dispose(this.columns);
  }
}

class FileRows implements CachedRows {
  constructor(
    private readonly files: ColumnFile[],
    readonly count: number,
  ) {}

  gather(rows: readonly number[]): Tensor[] {
    return this.files.map((file) => file.read(rows));
  }

  dispose(): void {
    for (const file of this.files) file.close();
  }
}

/** One column's float32 rows in an unlinked file, row r at r * rowBytes. */
class ColumnFile {
  private readonly fd: number;
  private readonly rowValues: number;
  private written = 0;
  private closed = false;

  constructor(
    private readonly dir: string,
    private readonly rowShape: number[],
  ) {
    this.fd = openUnlinkedFile(dir, 'frozen-outputs');
    this.rowValues = rowShape.reduce((a, b) => a * b, 1);
  }

  private get rowBytes(): number {
    return 4 * this.rowValues;
  }

  append(column: Tensor): void {
    if (column.dtype !== 'float32') throw new Error(`cached rows must be float32, not ${column.dtype}`);
    const values = column.dataSync() as Float32Array;
    const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    writingTo(this.dir, "the frozen layers' outputs (a cache too large for memory)", () =>
      writeAll(this.fd, bytes, this.written),
    );
    this.written += bytes.byteLength;
  }

  /** The rows, read in runs of consecutive rows (one read per run). */
  read(rows: readonly number[]): Tensor {
    const values = new Float32Array(rows.length * this.rowValues);
    const bytes = new Uint8Array(values.buffer);
    let start = 0;
    while (start < rows.length) {
      let end = start + 1;
      while (end < rows.length && rows[end] === rows[end - 1] + 1) end++;
      readAll(this.fd, bytes.subarray(start * this.rowBytes, end * this.rowBytes), rows[start] * this.rowBytes);
      start = end;
    }
    return tf.tensor(values, [rows.length, ...this.rowShape], 'float32');
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    fs.closeSync(this.fd);
  }
}

/** pwrite until every byte is written (a write may be short). */
function writeAll(fd: number, bytes: Uint8Array, position: number): void {
  for (let done = 0; done < bytes.byteLength;)
    done += fs.writeSync(fd, bytes, done, bytes.byteLength - done, position + done);
}

/** pread until every byte is read; the file ending first is a bug (rows never written). */
function readAll(fd: number, bytes: Uint8Array, position: number): void {
  for (let done = 0; done < bytes.byteLength;) {
    const read = fs.readSync(fd, bytes, done, bytes.byteLength - done, position + done);
    if (read === 0) throw new Error(`cached rows: the file ends at byte ${position + done}, before the rows asked for`);
    done += read;
  }
}
