import fs from 'node:fs';
import path from 'node:path';
import type { LayersModel, Tensor } from '@tensorflow/tfjs-node';
import { execa } from 'execa';
import type { BaseModelName } from '../../src/config/bases.ts';
import { projectRoot } from '../../src/core/project.ts';
import { venvPython } from '../../src/core/project.ts';
import { FoldedInference } from '../../src/engine/graph.ts';
import { writeCheckpoint } from '../../src/run-folder/checkpoints.ts';
import { tf } from '../../src/tfjs/tf.ts';

/** python/keras_reference.py: facts and outputs from Keras itself. */
export async function kerasReference(args: string[]): Promise<string> {
  const result = await execa(venvPython(), [path.join(projectRoot, 'python', 'keras_reference.py'), ...args], {
    env: { TF_CPP_MIN_LOG_LEVEL: '3', PYTHONPATH: path.join(projectRoot, 'python') },
    reject: false,
    timeout: 600_000,
  });
  if (result.exitCode !== 0) throw new Error(String(result.stderr).split('\n').slice(-10).join('\n'));
  return String(result.stdout);
}

export interface BaseVariant {
  base: BaseModelName;
  alpha: number;
  minimalistic: boolean;
}

/** The arguments keras_reference.py takes for a base: BASE ALPHA HEIGHT WIDTH MINIMALISTIC. */
export function baseArgs(variant: BaseVariant, height: number, width = height): string[] {
  return [variant.base, String(variant.alpha), String(height), String(width), variant.minimalistic ? '1' : '0'];
}

export interface KerasLayer {
  index: number;
  name: string;
  class: string;
  weights: [string, number[]][];
  output: number[];
  params: number;
}

export interface Parity {
  /** Max abs difference over tlx's two paths: layer by layer, and BatchNorm folded into fused kernels. */
  maxDiff: number;
  /** Max abs value of Keras's output (a check that the comparison is not between near-zeros). */
  maxAbs: number;
}

/** Several keras_reference.py commands in one Python process (TensorFlow starts once); what each printed. */
export async function kerasBatch(jobs: [command: string, args: string[]][]): Promise<string[]> {
  const result = await execa(venvPython(), [path.join(projectRoot, 'python', 'keras_reference.py'), 'batch'], {
    env: { TF_CPP_MIN_LOG_LEVEL: '3', PYTHONPATH: path.join(projectRoot, 'python') },
    input: JSON.stringify(jobs),
    reject: false,
    timeout: 1_200_000,
  });
  if (result.exitCode !== 0) throw new Error(String(result.stderr).split('\n').slice(-10).join('\n'));
  return JSON.parse(String(result.stdout)) as string[];
}

/** Inputs for a base, written where Keras reads them: [-1, 1] for MobileNetV2, else raw [0, 255]. */
export function writeParityInput(file: string, variant: BaseVariant, height: number, width = height): Tensor {
  const [low, high] = variant.base === 'mobilenet_v2' ? [-1, 1] : [0, 255];
  const x = tf.randomUniform([2, height, width, 3], low, high, 'float32', 5);
  fs.writeFileSync(file, Buffer.from((x.dataSync() as Float32Array).buffer));
  return x;
}

/** A tlx base's outputs on x against Keras's (a float32 file), over both of tlx's paths. */
export function compareWithKeras(base: LayersModel, x: Tensor, kerasOutput: string): Parity {
  const theirs = new Float32Array(fs.readFileSync(kerasOutput).buffer.slice(0));
  const layered = base.predict(x) as Tensor;
  const inference = new FoldedInference(base);
  const folded = inference.logits(x);
  inference.dispose();
  let maxDiff = 0;
  for (const ours of [layered, folded]) {
    const values = ours.dataSync();
    if (values.length !== theirs.length) throw new Error(`tlx gives ${values.length} values, Keras ${theirs.length}`);
    for (let i = 0; i < values.length; i++) maxDiff = Math.max(maxDiff, Math.abs(values[i] - theirs[i]));
  }
  tf.dispose([layered, folded]);
  return { maxDiff, maxAbs: theirs.reduce((m, v) => Math.max(m, Math.abs(v)), 0) };
}

/**
 * Keras's base and a tlx base on the same weights and inputs, as a job for kerasBatch and
 * the comparison to make with what it printed. Without a legacy .h5 (`weights`), Keras takes
 * the tlx base's weights by name from a tlx checkpoint written here.
 */
export async function parityJob(
  base: LayersModel,
  variant: BaseVariant,
  work: string,
  weights?: string,
): Promise<{ job: [string, string[]]; compare: () => Parity }> {
  const [height, width] = base.inputs[0].shape.slice(1, 3) as number[];
  const dir = fs.mkdtempSync(path.join(work, 'parity-'));
  if (!weights) {
    weights = path.join(dir, 'weights');
    await writeCheckpoint(weights, base, undefined, { epoch: 0, phase: 'test' });
  }
  const x = writeParityInput(path.join(dir, 'x.f32'), variant, height, width);
  return {
    job: ['features', [weights, ...baseArgs(variant, height, width), path.join(dir, 'x.f32'), path.join(dir, 'y.f32')]],
    compare: () => {
      const parity = compareWithKeras(base, x, path.join(dir, 'y.f32'));
      x.dispose();
      return parity;
    },
  };
}
