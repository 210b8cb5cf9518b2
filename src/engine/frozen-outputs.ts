import { createHash } from 'node:crypto';
import type { Tensor, Tensor1D, Tensor4D } from '@tensorflow/tfjs-node';
import { Random } from '../core/random.ts';
import type { ImageVariants } from '../data/augment.ts';
import type { ImageSplit } from '../data/images.ts';
import { RowsBuilder, type CachedRows, type RowsPlace, type RowsTarget } from './cached-rows.ts';
import {
  elementsPerSample,
  frozenOutputBytesPerSample,
  type CompiledGraph,
  type GraphSplit,
  type StagedModel,
  type Step,
} from './graph.ts';
import { recomputesCheaply } from './recompute.ts';
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

/** One set of rows a pass fills: its columns, and where they go. */
type RowSet = { columns: number; target: RowsTarget };

/** Several sets of rows from the same batches: `fill` appends each batch's columns of every set, in row order. */
function collectRowSets(sets: RowSet[], fill: (append: (batches: Tensor[][]) => void) => void): CachedRows[] {
  const builders = sets.map(({ columns, target }) => new RowsBuilder(columns, target));
  try {
    fill((batches) => batches.forEach((batch, k) => builders[k].append(batch)));
  } catch (error) {
    for (const builder of builders) builder.abandon();
    throw error;
  }
  return builders.map((builder) => builder.finish());
}

function collectRows(
  columns: number,
  target: RowsTarget,
  fill: (append: (batch: Tensor[]) => void) => void,
): CachedRows {
  return collectRowSets([{ columns, target }], (append) => fill((batch) => append([batch])))[0];
}

/**
 * `run` on every sample of a split under variants 0..count-1, as rows [variant * n + i]: in split
 * order, in batches of batchSize, one variant after another (the batches an uncached pass
 * over the split would see). `run` gives one batch per set of rows.
 */
function rowSetsOf(
  split: ImageSplit,
  batchSize: number,
  variants: ImageVariants,
  count: number,
  sets: RowSet[],
  run: (images: Tensor) => Tensor[][],
): CachedRows[] {
  return collectRowSets(sets, (append) => {
    for (let variant = 0; variant < count; variant++) {
      for (const batch of split.batches(batchSize)) {
        const images = variant === 0 ? batch.images : variants.render(batch.images as Tensor4D, variant);
        append(run(images));
        tf.dispose([batch.images, batch.labels, images]);
      }
    }
  });
}

function rowsOf(
  split: ImageSplit,
  batchSize: number,
  variants: ImageVariants,
  count: number,
  columns: number,
  target: RowsTarget,
  run: (images: Tensor) => Tensor[],
): CachedRows {
  return rowSetsOf(split, batchSize, variants, count, [{ columns, target }], (images) => [run(images)])[0];
}

/** A model's own frozen layers' outputs rows from a prefix's rows, through its frozen layers above the prefix, in the same batches. */
function rowsAfterPrefix(
  staged: StagedModel,
  prefix: GraphSplit,
  prefixRows: CachedRows,
  length: number,
  batchSize: number,
  target: RowsTarget,
): CachedRows {
  return collectRows(staged.split.frozenOutputs.length, target, (append) => {
    for (let first = 0; first < prefixRows.count; first += length) {
      for (let start = 0; start < length; start += batchSize) {
        const rows = Array.from({ length: Math.min(batchSize, length - start) }, (_, i) => first + start + i);
        append(tf.tidy(() => staged.frozenAfterPrefix(prefix, prefixRows.gather(rows))));
      }
    }
  });
}

/**
 * Batches gathered from cached rows; `pick` gives each image's variant (without it, rows are
 * the samples themselves); `through` turns the gathered rows into the phase's frozen outputs
 * (a prefix's rows through the frozen steps above it).
 */
function rowsSource(
  rows: CachedRows,
  split: { length: number; labels: Int32Array },
  pick?: (epoch: number, batchIndex: number, size: number) => number[],
  through?: (rows: Tensor[]) => Tensor[],
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
        const gathered = rows.gather(variants ? indices.map((i, k) => variants[k] * split.length + i) : indices);
        const frozenOutputs = through ? through(gathered) : gathered;
        if (through) tf.dispose(gathered);
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

/** At most this many bytes in the widest tensor of a caching pass's batch, and at most this many samples. */
const cachePassBytes = 64 * 1024 * 1024;
const cachePassMaxBatch = 64;

/**
 * Samples per batch of the pass that fills a cache (inference: no tape, each row's outputs
 * do not depend on the batch it was computed in). Small images leave TensorFlow's kernels
 * short of work at a training batch: MobileNetV2 at 96 px infers ~20% faster per image at
 * 64 than at 32 (bench/steps.ts predict). Never below the training batch; at most 64 samples
 * and 64 MiB in the pass's widest tensor (224 px keeps 32).
 */
export function cachePassBatch(graph: CompiledGraph, steps: readonly Step[], batchSize: number): number {
  const widest = Math.max(1, ...steps.map((step) => 4 * elementsPerSample(graph, step.output)));
  return Math.max(batchSize, Math.min(cachePassMaxBatch, Math.floor(cachePassBytes / widest)));
}

/** A prefix's rows for the training split (every variant) and the validation split. */
interface PrefixRows {
  train: CachedRows;
  validation: CachedRows;
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
    this.entry?.rows.train.dispose();
    this.entry?.rows.validation.dispose();
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

/**
 * Whether and where a phase keeps its frozen layers' outputs. `cache`: computed once for the
 * phase, each part (the shared prefix's rows, the phase's own rows) in memory when it fits
 * what is left of the memory allowance, else in a file; `recompute`: every epoch (the
 * augmentation has no fixed variants, or too few epochs are left to pay for every
 * variant); `no room`: neither memory nor the disk holds them.
 */
export type FrozenOutputsCachePlan =
  | { choice: 'recompute' }
  | { choice: 'no room'; bytes: number }
  | {
      choice: 'cache';
      /** The shared prefix whose rows are kept (in its store), and where. */
      prefix?: { split: GraphSplit; place: RowsPlace };
      /**
       * The phase's own rows: kept (in memory or on disk); the prefix's rows themselves
       * ('prefix'); or computed every step from the prefix's rows through the few frozen steps
       * above them ('per step': recompute.ts).
       */
      own: RowsPlace | 'prefix' | 'per step';
      bytes: number;
      memoryBytes: number;
      diskBytes: number;
    };

/**
 * The plan for a phase's cache (pure: the allowances are given). A shared prefix that the
 * room cannot hold is not shared: the phase alone may still fit.
 */
export function planFrozenOutputsCache(
  model: Pick<StagedModel, 'graph' | 'split'>,
  inputs: {
    train: { length: number };
    validation: { length: number };
    variants: { count: number } | undefined;
    prefix?: GraphSplit;
    remainingEpochs: number;
  },
  room: { memory: number; disk: number },
): FrozenOutputsCachePlan {
  const { variants, prefix } = inputs;
  if (!variants) return { choice: 'recompute' };
  if (!prefix && inputs.remainingEpochs < variants.count) return { choice: 'recompute' };
  const samples = variants.count * inputs.train.length + inputs.validation.length;
  const fromPrefix =
    prefix === undefined
      ? undefined
      : coversFrozenStage(model, prefix)
        ? 'prefix'
        : recomputesCheaply(model.graph, model.split, prefix)
          ? 'per step'
          : undefined;
  const ownBytes = fromPrefix ? 0 : samples * frozenOutputBytesPerSample(model.graph, model.split);
  const prefixBytes = prefix ? samples * frozenOutputBytesPerSample(model.graph, prefix) : 0;
  // The rows read every step first: the phase's own, else the prefix's.
  let memoryLeft = room.memory;
  const place = (bytes: number): RowsPlace => {
    if (bytes > memoryLeft) return 'disk';
    memoryLeft -= bytes;
    return 'memory';
  };
  const ownPlace = fromPrefix ? undefined : place(ownBytes);
  const prefixPlace = prefix ? place(prefixBytes) : undefined;
  const bytes = ownBytes + prefixBytes;
  const diskBytes = (ownPlace === 'disk' ? ownBytes : 0) + (prefixPlace === 'disk' ? prefixBytes : 0);
  if (diskBytes > room.disk)
    return prefix
      ? planFrozenOutputsCache(model, { ...inputs, prefix: undefined }, room)
      : { choice: 'no room', bytes };
  return {
    choice: 'cache',
    prefix: prefix && prefixPlace ? { split: prefix, place: prefixPlace } : undefined,
    own: fromPrefix ?? ownPlace!,
    bytes,
    memoryBytes: bytes - diskBytes,
    diskBytes,
  };
}

/** A phase's rows for both splits, whether it owns them (else a store does), and whether a stored prefix was reused. */
interface PhaseRows {
  train: CachedRows;
  validation: CachedRows;
  owned: boolean;
  reusedPrefix: boolean;
}

/**
 * The rows through a shared prefix: the prefix's from the store, or computed and stored;
 * the phase's own from the same batches while the prefix's are in memory (one pass, nothing
 * read back), or, when the prefix was stored earlier, from its rows.
 */
function rowsWithPrefix(
  staged: StagedModel,
  inputs: FrozenOutputsCacheInputs,
  batchSize: number,
  prefix: { split: GraphSplit; target: RowsTarget },
  ownTarget: RowsTarget | undefined,
  store: FrozenPrefixStore,
): PhaseRows {
  const { train, validation, variants } = inputs;
  const sets = [{ columns: prefix.split.frozenOutputs.length, target: prefix.target }];
  const columns = staged.split.frozenOutputs.length;
  let ownFromPass: { train: CachedRows; validation: CachedRows } | undefined;
  const shared = store.rows(prefixKey(staged, prefix.split, inputs), () => {
    const pass = (split: ImageSplit, count: number) =>
      ownTarget
        ? rowSetsOf(split, batchSize, variants, count, [...sets, { columns, target: ownTarget }], (images) => {
            const prefixRows = staged.frozenPrefix(prefix.split, images);
            return [prefixRows, staged.frozenAfterPrefix(prefix.split, prefixRows)];
          })
        : rowSetsOf(split, batchSize, variants, count, sets, (images) => [staged.frozenPrefix(prefix.split, images)]);
    const [trainPrefix, trainOwn] = pass(train, variants.count);
    const [validationPrefix, validationOwn] = pass(validation, 1);
    if (trainOwn && validationOwn) ownFromPass = { train: trainOwn, validation: validationOwn };
    return { train: trainPrefix, validation: validationPrefix };
  });
  const reusedPrefix = shared.reused;
  // The prefix is this phase's whole frozen stage: its rows are the phase's rows (the store keeps and frees them).
  if (!ownTarget) return { ...shared.rows, owned: false, reusedPrefix };
  if (ownFromPass) return { ...ownFromPass, owned: true, reusedPrefix };
  const after = (rows: CachedRows, length: number) =>
    rowsAfterPrefix(staged, prefix.split, rows, length, batchSize, ownTarget);
  return {
    train: after(shared.rows.train, train.length),
    validation: after(shared.rows.validation, validation.length),
    owned: true,
    reusedPrefix,
  };
}

/**
 * The training and validation splits' frozen layers' outputs, computed once for the phase
 * (inference: nothing in the frozen stage trains), as `plan` says; files go under `dir`.
 */
export function cacheFrozenOutputs(
  staged: StagedModel,
  inputs: FrozenOutputsCacheInputs,
  plan: Extract<FrozenOutputsCachePlan, { choice: 'cache' }>,
  storage: { dir?: string; store?: FrozenPrefixStore },
): FrozenOutputsCache {
  const { train, validation, variants } = inputs;
  const batchSize = cachePassBatch(staged.graph, staged.split.frozen, inputs.batchSize);
  const target = (place: RowsPlace): RowsTarget => {
    if (place === 'memory') return { place };
    if (!storage.dir) throw new Error('a cache planned on disk needs a folder');
    return { place, dir: storage.dir };
  };
  const keptOwn = plan.own === 'prefix' || plan.own === 'per step' ? undefined : plan.own;
  let rows: PhaseRows;
  if (plan.prefix) {
    if (!storage.store) throw new Error('a shared prefix needs its store');
    const prefix = { split: plan.prefix.split, target: target(plan.prefix.place) };
    rows = rowsWithPrefix(staged, inputs, batchSize, prefix, keptOwn ? target(keptOwn) : undefined, storage.store);
  } else {
    if (!keptOwn) throw new Error(`a cache without a shared prefix keeps its own rows (planned: ${plan.own})`);
    const ownTarget = target(keptOwn);
    const columns = staged.split.frozenOutputs.length;
    const frozen = (images: Tensor) => staged.frozen(images);
    rows = {
      train: rowsOf(train, batchSize, variants, variants.count, columns, ownTarget, frozen),
      validation: rowsOf(validation, batchSize, variants, 1, columns, ownTarget, frozen),
      owned: true,
      reusedPrefix: false,
    };
  }
  const sharedSplit = plan.prefix?.split;
  const perStep =
    plan.own === 'per step' && sharedSplit
      ? (prefixRows: Tensor[]) => staged.frozenAfterPrefix(sharedSplit, prefixRows)
      : undefined;
  return {
    train: rowsSource(
      rows.train,
      train,
      variants.count > 1
        ? (epoch, batchIndex, size) => variants.draw(size, new Random(inputs.seed, 'augment', epoch, batchIndex))
        : undefined,
      perStep,
    ),
    validation: rowsSource(rows.validation, validation, undefined, perStep),
    reusedPrefix: rows.reusedPrefix,
    dispose: () => {
      if (!rows.owned) return;
      rows.train.dispose();
      rows.validation.dispose();
    },
  };
}
