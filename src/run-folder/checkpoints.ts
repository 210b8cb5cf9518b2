import fs from 'node:fs';
import path from 'node:path';
import type { LayersModel, Optimizer, Tensor } from '@tensorflow/tfjs-node';
import type { WeightsManifestEntry } from '../tfjs/internals.ts';
import { killPoint } from '../core/faults.ts';
import { CorruptFileError, findInstalled, installFolder, readJsonFile, tempPathFor, writingTo } from '../core/files.ts';
import { namedVariables } from '../models/variables.ts';
import { tf } from '../tfjs/tf.ts';
import { CheckpointMeta } from './records.ts';

/**
 * A checkpoint folder: every model variable by key (weights.bin, float32 in manifest
 * order), the phase optimizer's state (optimizer.bin) and checkpoint.json. It is written
 * complete into a temp folder, flushed, and installed so that one complete checkpoint of
 * that name exists at every instant (core/files.ts installFolder).
 */

type NamedTensor = { name: string; tensor: Tensor };
type ManifestEntry = WeightsManifestEntry;

async function encode(tensors: NamedTensor[]): Promise<{ data: Uint8Array; specs: ManifestEntry[] }> {
  const { data, specs } = await tf.io.encodeWeights(tensors);
  return { data: new Uint8Array(data as ArrayBuffer), specs };
}

export type CheckpointInfo = Omit<CheckpointMeta, 'weights' | 'optimizer' | 'phase_complete' | 'callbacks'> &
  Partial<Pick<CheckpointMeta, 'phase_complete' | 'callbacks'>>;

export async function writeCheckpoint(
  target: string,
  model: LayersModel,
  optimizer: Optimizer | undefined,
  info: CheckpointInfo,
): Promise<void> {
  const weights = await encode(namedVariables(model).map(([name, variable]) => ({ name, tensor: variable.read() })));
  const optimizerWeights = optimizer ? await optimizer.getWeights() : [];
  const optimizerState = await encode(optimizerWeights);
  // getWeights() returns the optimizer's variables and a new scalar (its iteration count): release the latter.
  tf.dispose(optimizerWeights.map((w) => w.tensor).filter((tensor) => !(tensor instanceof tf.Variable)));
  const meta: CheckpointMeta = {
    phase_complete: false,
    callbacks: {},
    ...info,
    weights: weights.specs as CheckpointMeta['weights'],
    optimizer: optimizerState.specs as CheckpointMeta['optimizer'],
  };
  const temp = tempPathFor(target);
  fs.mkdirSync(temp, { recursive: true });
  try {
    const what = `the checkpoint ${path.basename(target)} (epoch ${info.epoch})`;
    writingTo(target, what, () => fs.writeFileSync(path.join(temp, 'weights.bin'), weights.data));
    writingTo(target, what, () => fs.writeFileSync(path.join(temp, 'optimizer.bin'), optimizerState.data));
    writingTo(target, what, () =>
      fs.writeFileSync(path.join(temp, 'checkpoint.json'), `${JSON.stringify(meta, null, 2)}\n`),
    );
    killPoint('checkpoint.written');
    installFolder(temp, target, 'checkpoint');
  } catch (error) {
    fs.rmSync(temp, { recursive: true, force: true });
    throw error;
  }
}

function isComplete(dir: string): boolean {
  return ['checkpoint.json', 'weights.bin', 'optimizer.bin'].every((name) => fs.existsSync(path.join(dir, name)));
}

/** The complete checkpoint installed at `target` (or left in `<target>.previous` by a crash). */
export function findCheckpoint(target: string): string | undefined {
  return findInstalled(target, isComplete);
}

export function readCheckpointMeta(dir: string): CheckpointMeta {
  const file = path.join(dir, 'checkpoint.json');
  const parsed = CheckpointMeta.safeParse(readJsonFile(file, 'a tlx checkpoint description'));
  if (!parsed.success)
    throw new CorruptFileError(
      `${file}: not a tlx checkpoint: ${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message}`,
    );
  return parsed.data;
}

function expectedBytes(specs: ManifestEntry[]): number {
  return specs.reduce((sum, spec) => sum + 4 * spec.shape.reduce((a: number, b: number) => a * b, 1), 0);
}

/** The checkpoint's description, once its files are whole (each .bin the size its manifest says); a CorruptFileError naming the file otherwise. */
export function readIntactCheckpoint(dir: string): CheckpointMeta {
  const meta = readCheckpointMeta(dir);
  for (const [name, specs] of [
    ['weights.bin', meta.weights],
    ['optimizer.bin', meta.optimizer],
  ] as const) {
    const file = path.join(dir, name);
    const bytes = fs.statSync(file).size;
    if (bytes !== expectedBytes(specs as ManifestEntry[]))
      throw new CorruptFileError(
        `${file}: ${bytes} bytes, expected ${expectedBytes(specs as ManifestEntry[])} for the variables its checkpoint.json lists`,
      );
  }
  return meta;
}

function decode(file: string, specs: ManifestEntry[]): Record<string, Tensor> {
  const bytes = fs.readFileSync(file);
  const expected = expectedBytes(specs);
  if (bytes.byteLength !== expected)
    throw new CorruptFileError(
      `${file}: ${bytes.byteLength} bytes, expected ${expected} for the variables its checkpoint.json lists`,
    );
  return tf.io.decodeWeights(
    bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength),
    specs,
  ) as Record<string, Tensor>;
}

/** Restores every model variable by key; returns the checkpoint's description. */
export function loadCheckpointWeights(dir: string, model: LayersModel): CheckpointMeta {
  const meta = readCheckpointMeta(dir);
  const weights = decode(path.join(dir, 'weights.bin'), meta.weights as ManifestEntry[]);
  try {
    for (const [name, variable] of namedVariables(model)) {
      const value = weights[name];
      if (!value) throw new CorruptFileError(`checkpoint ${dir} has no weight ${name}`);
      variable.write(value);
    }
  } finally {
    tf.dispose(Object.values(weights));
  }
  return meta;
}

/** Restores the optimizer's state (moments, iteration count) saved with the checkpoint. */
export async function loadOptimizerState(dir: string, optimizer: Optimizer): Promise<void> {
  const meta = readCheckpointMeta(dir);
  if (meta.optimizer.length === 0) return;
  const state = decode(path.join(dir, 'optimizer.bin'), meta.optimizer as ManifestEntry[]);
  await optimizer.setWeights(meta.optimizer.map((spec) => ({ name: spec.name, tensor: state[spec.name] })));
}

/** Copies a checkpoint folder (a sweep trial starting from a shared phase). */
export function copyCheckpoint(from: string, target: string): void {
  const temp = tempPathFor(target);
  fs.cpSync(from, temp, { recursive: true });
  installFolder(temp, target);
}
