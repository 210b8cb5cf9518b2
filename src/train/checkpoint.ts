import fs from 'node:fs';
import path from 'node:path';
import type { LayersModel, Optimizer as TfOptimizer, Tensor } from '@tensorflow/tfjs-node';
import { namedVariables } from '../models/variables.ts';
import type { WeightsManifestEntry } from '@tensorflow/tfjs-core/dist/io/types.js';
import { tf } from '../tf.ts';
import type { EpochRecord } from './engine.ts';

/**
 * A checkpoint: every model weight by name and the phase optimizer's state, with the
 * epoch it closes. Written into a temp folder and renamed into place, so `last` is
 * always a complete checkpoint; a resume continues from exactly this state.
 */

export interface CheckpointMeta {
  epoch: number;
  phase: string;
  record?: EpochRecord;
  weights: WeightsManifestEntry[];
  optimizer: WeightsManifestEntry[];
}

type NamedTensor = { name: string; tensor: Tensor };

async function encode(tensors: NamedTensor[]): Promise<{ data: Uint8Array; specs: WeightsManifestEntry[] }> {
  const { data, specs } = await tf.io.encodeWeights(tensors);
  return { data: new Uint8Array(data as ArrayBuffer), specs: specs as WeightsManifestEntry[] };
}

export async function saveCheckpoint(dir: string, model: LayersModel, optimizer: TfOptimizer | undefined, meta: { epoch: number; phase: string; record?: EpochRecord }): Promise<void> {
  const weights = await encode(namedVariables(model).map(([name, variable]) => ({ name, tensor: variable.read() })));
  const optimizerWeights = optimizer ? await optimizer.getWeights() : [];
  const optimizerState = await encode(optimizerWeights);
  const temp = `${dir}.tmp-${process.pid}`;
  fs.rmSync(temp, { recursive: true, force: true });
  fs.mkdirSync(temp, { recursive: true });
  fs.writeFileSync(path.join(temp, 'weights.bin'), weights.data);
  fs.writeFileSync(path.join(temp, 'optimizer.bin'), optimizerState.data);
  const full: CheckpointMeta = { ...meta, weights: weights.specs, optimizer: optimizerState.specs };
  fs.writeFileSync(path.join(temp, 'checkpoint.json'), `${JSON.stringify(full, null, 2)}\n`);
  const previous = `${dir}.previous`;
  fs.rmSync(previous, { recursive: true, force: true });
  if (fs.existsSync(dir)) fs.renameSync(dir, previous);
  fs.renameSync(temp, dir);
  fs.rmSync(previous, { recursive: true, force: true });
}

/** The checkpoint in `dir`, or the one a crash mid-replacement left in `dir.previous`. */
export function findCheckpoint(dir: string): string | undefined {
  for (const candidate of [dir, `${dir}.previous`]) if (fs.existsSync(path.join(candidate, 'checkpoint.json'))) return candidate;
  return undefined;
}

export function readCheckpointMeta(dir: string): CheckpointMeta {
  return JSON.parse(fs.readFileSync(path.join(dir, 'checkpoint.json'), 'utf8')) as CheckpointMeta;
}

function decode(file: string, specs: WeightsManifestEntry[]): Record<string, Tensor> {
  const bytes = fs.readFileSync(file);
  return tf.io.decodeWeights(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength), specs) as Record<string, Tensor>;
}

/** Restores model weights (by name) and, when given, the optimizer's state. */
export async function loadCheckpoint(dir: string, model: LayersModel, optimizer?: TfOptimizer): Promise<CheckpointMeta> {
  const meta = readCheckpointMeta(dir);
  const weights = decode(path.join(dir, 'weights.bin'), meta.weights);
  for (const [name, variable] of namedVariables(model)) {
    const value = weights[name];
    if (!value) throw new Error(`checkpoint ${dir} has no weight ${name}`);
    variable.write(value);
  }
  tf.dispose(Object.values(weights));
  if (optimizer) await loadOptimizerState(dir, optimizer);
  return meta;
}

/** Restores only the optimizer's state (moments, iteration count) saved with the checkpoint. */
export async function loadOptimizerState(dir: string, optimizer: TfOptimizer): Promise<void> {
  const meta = readCheckpointMeta(dir);
  if (meta.optimizer.length === 0) return;
  const state = decode(path.join(dir, 'optimizer.bin'), meta.optimizer);
  await optimizer.setWeights(meta.optimizer.map((spec) => ({ name: spec.name, tensor: state[spec.name] })));
}
