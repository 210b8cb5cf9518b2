import { createHash } from 'node:crypto';
import type { Tensor, Tensor1D, Tensor4D } from '@tensorflow/tfjs-node';
import { Random } from '../core/random.ts';
import type { ImageVariants } from '../data/augment.ts';
import type { ImageSplit } from '../data/images.ts';
import { frozenOutputBytesPerSample, type GraphSplit, type StagedModel } from './graph.ts';
import { tf } from '../tfjs/tf.ts';

/**
 * What the trainable stage reads: the frozen stage's outputs (the frozen layers' outputs) per batch,
 * computed from (augmented) pixels every epoch, or cached once per phase. A cache holds
 * every sample under every variant of the augmentation (none: one; a random flip: two),
 * and each epoch picks the variant each image would have been given. In a sweep, the
 * outputs of the frozen layers every trial shares (below the smallest fine_tune_at) are
 * computed once, kept in a FrozenPrefixStore, and each trial runs only its own frozen
 * layers above them.
 */

/** A batch as the trainable stage sees it: the frozen stage's outputs for some samples. */
interface FrozenOutputsBatch {
  frozenOutputs: Tensor[];
  labels: Tensor1D;
  indices: number[];
}

/** A split seen through the frozen stage: computed batch by batch, or cached once. */
export interface FrozenOutputsSource {
  length: number;
  labels: Int32Array;
  batches(batchSize: number, order: readonly number[] | undefined, epoch: number): Generator<FrozenOutputsBatch>;
}

export function computedFrozenOutputs(
  staged: StagedModel,
  split: ImageSplit,
  augment?: (images: Tensor4D, epoch: number, batchIndex: number) => Tensor4D,
): FrozenOutputsSource {
  return {
    length: split.length,
    labels: split.labels,
    *batches(batchSize, order, epoch) {
      let batchIndex = 0;
      for (const batch of split.batches(batchSize, order)) {
        const frozenOutputs = tf.tidy(() =>
          staged.frozen(augment ? augment(batch.images as Tensor4D, epoch, batchIndex) : batch.images),
        );
        batch.images.dispose();
        batchIndex++;
        yield { frozenOutputs, labels: batch.labels, indices: batch.indices };
      }
    },
  };
}

/** One tensor per column from per-batch lists of columns (the parts are disposed). */
function joinColumns(parts: Tensor[][], columns: number): Tensor[] {
  return Array.from({ length: columns }, (_, k) => {
    const column = parts.map((part) => part[k]);
    const joined = column.length === 1 ? column[0] : tf.concat(column);
    if (column.length > 1) tf.dispose(column);
    return joined;
  });
}

/**
 * `run` on every sample of a split under variants 0..count-1, as rows [variant * n + i]: in split
 * order, in batches of batchSize, one variant after another (the batches an uncached pass
 * over the split would see).
 */
function rowsOf(
  split: ImageSplit,
  batchSize: number,
  variants: ImageVariants,
  count: number,
  columns: number,
  run: (images: Tensor) => Tensor[],
): Tensor[] {
  const parts: Tensor[][] = [];
  for (let variant = 0; variant < count; variant++) {
    for (const batch of split.batches(batchSize)) {
      const images = variant === 0 ? batch.images : variants.render(batch.images as Tensor4D, variant);
      parts.push(run(images));
      tf.dispose([batch.images, batch.labels, images]);
    }
  }
  return joinColumns(parts, columns);
}

/** A model's own frozen layers' outputs rows from a prefix's rows, through its frozen layers above the prefix, in the same batches. */
function rowsAfterPrefix(
  staged: StagedModel,
  prefix: GraphSplit,
  prefixRows: Tensor[],
  length: number,
  batchSize: number,
): Tensor[] {
  const total = prefixRows[0].shape[0];
  const parts: Tensor[][] = [];
  for (let first = 0; first < total; first += length) {
    for (let start = 0; start < length; start += batchSize) {
      const rows = Array.from({ length: Math.min(batchSize, length - start) }, (_, i) => first + start + i);
      parts.push(
        tf.tidy(() => {
          const index = tf.tensor1d(rows, 'int32');
          return staged.frozenAfterPrefix(
            prefix,
            prefixRows.map((tensor) => tf.gather(tensor, index)),
          );
        }),
      );
    }
  }
  return joinColumns(parts, staged.split.frozenOutputs.length);
}

/** Batches gathered from cached rows; `pick` gives each image's variant (without it, rows are the samples themselves). */
function rowsSource(
  rows: Tensor[],
  split: { length: number; labels: Int32Array },
  pick?: (epoch: number, batchIndex: number, size: number) => number[],
): FrozenOutputsSource {
  return {
    length: split.length,
    labels: split.labels,
    *batches(size, order, epoch) {
      const sequence = order ?? Array.from({ length: split.length }, (_, i) => i);
      let batchIndex = 0;
      for (let start = 0; start < sequence.length; start += size) {
        const indices = sequence.slice(start, start + size);
        const variants = pick?.(epoch, batchIndex++, indices.length);
        const frozenOutputs = tf.tidy(() => {
          const index = tf.tensor1d(
            variants ? indices.map((i, k) => variants[k] * split.length + i) : indices,
            'int32',
          );
          return rows.map((tensor) => tf.gather(tensor, index));
        });
        yield {
          frozenOutputs,
          labels: tf.tensor1d(
            indices.map((i) => split.labels[i]),
            'int32',
          ),
          indices,
        };
      }
    },
  };
}

/** A prefix's rows for the training split (every variant) and the validation split. */
interface PrefixRows {
  train: Tensor[];
  validation: Tensor[];
}

/**
 * Outputs of the frozen layers that the trials of a sweep share, kept from one trial to
 * the next. One entry at a time: another dataset, augmentation or prefix replaces it.
 */
export class FrozenPrefixStore {
  private entry?: { key: string; rows: PrefixRows };

  /** The rows under `key`, computed by `compute` unless already here; `reused` says which. */
  rows(key: string, compute: () => PrefixRows): { rows: PrefixRows; reused: boolean } {
    if (this.entry?.key === key) return { rows: this.entry.rows, reused: true };
    this.dispose();
    this.entry = { key, rows: compute() };
    return { rows: this.entry.rows, reused: false };
  }

  dispose(): void {
    if (this.entry) tf.dispose([...this.entry.rows.train, ...this.entry.rows.validation]);
    this.entry = undefined;
  }
}

const splitIds = new WeakMap<ImageSplit, number>();
let nextSplitId = 1;

/** The same split object (a sweep's decoded dataset) has the same id for the life of the process. */
function splitId(split: ImageSplit): number {
  let id = splitIds.get(split);
  if (id === undefined) splitIds.set(split, (id = nextSplitId++));
  return id;
}

/** What the prefix's outputs depend on: the data, the augmentation's variants, the batches, the prefix's layers and their weights. */
function prefixKey(staged: StagedModel, prefix: GraphSplit, inputs: FrozenOutputsCacheInputs): string {
  const hash = createHash('sha256');
  for (const step of prefix.frozen) {
    for (const layer of step.layers) {
      hash.update(layer.name);
      for (const weight of layer.weights)
        hash.update(new Uint8Array((weight.read().dataSync() as Float32Array).buffer));
    }
  }
  hash.update(JSON.stringify(prefix.frozenOutputs.map((id) => staged.graph.shapes.get(id))));
  return [
    splitId(inputs.train),
    splitId(inputs.validation),
    inputs.variants.key,
    inputs.batchSize,
    hash.digest('hex'),
  ].join('|');
}

export interface FrozenOutputsCacheInputs {
  train: ImageSplit;
  validation: ImageSplit;
  batchSize: number;
  seed: number;
  variants: ImageVariants;
  /** A prefix of the frozen stage whose outputs are kept in `store` for other trials. */
  prefix?: { split: GraphSplit; store: FrozenPrefixStore };
}

export interface FrozenOutputsCache {
  train: FrozenOutputsSource;
  validation: FrozenOutputsSource;
  /** The shared prefix's outputs came from an earlier trial. */
  reusedPrefix: boolean;
  dispose(): void;
}

/** The prefix's outputs are exactly the phase's frozen layers' outputs (the same tensors, in order). */
function coversFrozenStage(model: Pick<StagedModel, 'split'>, prefix: GraphSplit): boolean {
  const own = model.split.frozenOutputs;
  return own.length === prefix.frozenOutputs.length && own.every((id, i) => prefix.frozenOutputs[i] === id);
}

/** Bytes a phase's cache holds: its own rows, and a prefix's rows when it keeps them too (once, when they are the same rows). */
export function frozenOutputsCacheBytes(
  model: Pick<StagedModel, 'graph' | 'split'>,
  inputs: {
    train: { length: number };
    validation: { length: number };
    variants: { count: number };
    prefix?: { split: GraphSplit };
  },
): number {
  const samples = inputs.variants.count * inputs.train.length + inputs.validation.length;
  const prefix = inputs.prefix;
  const prefixBytes =
    prefix && !coversFrozenStage(model, prefix.split) ? frozenOutputBytesPerSample(model.graph, prefix.split) : 0;
  return samples * (frozenOutputBytesPerSample(model.graph, model.split) + prefixBytes);
}

/** The training and validation splits' frozen layers' outputs, computed once for the phase (inference: nothing in the frozen stage trains). */
export function cacheFrozenOutputs(staged: StagedModel, inputs: FrozenOutputsCacheInputs): FrozenOutputsCache {
  const { train, validation, batchSize, variants, prefix } = inputs;
  const columns = staged.split.frozenOutputs.length;
  let trainRows: Tensor[];
  let validationRows: Tensor[];
  let reusedPrefix = false;
  let ownsRows = true;
  if (prefix) {
    const prefixColumns = prefix.split.frozenOutputs.length;
    const shared = prefix.store.rows(prefixKey(staged, prefix.split, inputs), () => ({
      train: rowsOf(train, batchSize, variants, variants.count, prefixColumns, (images) =>
        staged.frozenPrefix(prefix.split, images),
      ),
      validation: rowsOf(validation, batchSize, variants, 1, prefixColumns, (images) =>
        staged.frozenPrefix(prefix.split, images),
      ),
    }));
    reusedPrefix = shared.reused;
    if (coversFrozenStage(staged, prefix.split)) {
      // The prefix is this phase's whole frozen stage: its rows are the phase's rows (the store keeps and frees them).
      [trainRows, validationRows, ownsRows] = [shared.rows.train, shared.rows.validation, false];
    } else {
      trainRows = rowsAfterPrefix(staged, prefix.split, shared.rows.train, train.length, batchSize);
      validationRows = rowsAfterPrefix(staged, prefix.split, shared.rows.validation, validation.length, batchSize);
    }
  } else {
    trainRows = rowsOf(train, batchSize, variants, variants.count, columns, (images) => staged.frozen(images));
    validationRows = rowsOf(validation, batchSize, variants, 1, columns, (images) => staged.frozen(images));
  }
  return {
    train: rowsSource(
      trainRows,
      train,
      variants.count > 1
        ? (epoch, batchIndex, size) => variants.draw(size, new Random(inputs.seed, 'augment', epoch, batchIndex))
        : undefined,
    ),
    validation: rowsSource(validationRows, validation),
    reusedPrefix,
    dispose: () => (ownsRows ? tf.dispose([...trainRows, ...validationRows]) : undefined),
  };
}
