/**
 * tlx's side of the step benchmarks: a base at 224x224, batch 32, the same cases as
 * bench/keras_steps.py. Prints one JSON line: seconds per step, per case, each case's counted
 * FLOPs and achieved GFLOP/s, and the peak of a large matrix product through the same build.
 *
 *   npx tsx bench/steps.ts [--base mobilenet_v2] [--fine-tune-at 100] [--steps 3] [--size 224] [--batch 32] [--cases a,b] [--profile]
 */
import { parseArgs } from 'node:util';
import type { LayersModel, Optimizer, SymbolicTensor, Tensor1D, Tensor4D } from '@tensorflow/tfjs-node';
import { isBaseName } from '../src/config/bases.ts';
import { buildClassifier, setPhaseTrainable } from '../src/models/classifier.ts';
import { FoldedInference, StagedModel } from '../src/engine/graph.ts';
import { nativeBackend } from '../src/tfjs/internals.ts';
import { runOp, type OpAttr } from '../src/tfjs/native-ops.ts';
import { tf } from '../src/tfjs/tf.ts';
import { trainStep } from '../src/train/engine.ts';
import type { Objective } from '../src/train/objective.ts';
import { createOptimizer } from '../src/train/optimizers.ts';

const { values: options } = parseArgs({
  options: {
    base: { type: 'string', default: 'mobilenet_v2' },
    'fine-tune-at': { type: 'string', default: '100' },
    steps: { type: 'string', default: '3' },
    size: { type: 'string', default: '224' },
    batch: { type: 'string', default: '32' },
    cases: { type: 'string', default: 'whole_model_trainable,fine_tune_at,frozen_base,predict' },
    /** Also time each TensorFlow op of one more step per case and print the top ones (stderr). */
    profile: { type: 'boolean', default: false },
  },
});
if (!isBaseName(options.base)) throw new Error(`unknown base ${options.base}`);
const steps = Number(options.steps);
const size = Number(options.size);
const batch = Number(options.batch);
const fineTuneAt = Number(options['fine-tune-at']);

const classifier = buildClassifier({
  base: options.base,
  alpha: 1.0,
  imageSize: [size, size],
  classCount: 2,
  dropout: 0.2,
  seed: 1,
});
const images = tf.randomUniform([batch, size, size, 3], 0, 255, 'float32', 1);
const labels = tf.tensor1d(
  Array.from({ length: batch }, (_, i) => i % 2),
  'int32',
);
const objective = { head: classifier.head, classCount: 2, labelSmoothing: 0 };

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

function time(run: () => void): number {
  run(); // warm-up: kernels, allocations
  const seconds: number[] = [];
  for (let i = 0; i < steps; i++) {
    const started = performance.now();
    run();
    seconds.push((performance.now() - started) / 1000);
  }
  return median(seconds);
}

/** One optimizer step on one batch, as an epoch does it: the frozen layers' pass, then the taped step. */
function oneStep(
  staged: StagedModel,
  objective: Objective,
  images: Tensor4D,
  labels: Tensor1D,
  optimizer: Optimizer,
): number {
  const frozenOutputs = staged.frozen(images);
  const { loss, predicted } = trainStep(staged, objective, frozenOutputs, labels, optimizer, 1);
  const value = loss.dataSync()[0];
  tf.dispose([loss, predicted, ...frozenOutputs]);
  return value;
}

/**
 * Multiply-accumulates of one image per base layer: convolutions, depthwise convolutions and
 * dense layers, counted as python/tlx_export.py's macs_per_image counts them (elementwise ops,
 * BatchNorm and pooling left out: they move memory more than they compute).
 */
function macsPerLayer(base: LayersModel): number[] {
  return base.layers.map((layer) => {
    const kind = layer.getClassName();
    if (kind !== 'Conv2D' && kind !== 'DepthwiseConv2D' && kind !== 'Dense') return 0;
    const out = layer.outputShape as number[];
    const input = (layer.input as SymbolicTensor).shape;
    const units = out.slice(1).reduce((a, b) => a * b, 1);
    if (kind === 'Dense') return (input[input.length - 1] ?? 0) * units;
    const [kh, kw] = (layer.getConfig().kernelSize as number[] | number[][]).flat() as number[];
    return kind === 'DepthwiseConv2D' ? units * kh * kw : units * kh * kw * (input[3] ?? 0);
  });
}

/**
 * FLOPs of one step per case, by the usual convention: a forward pass is 2 FLOPs per MAC, a
 * backward pass twice its forward (the input's gradient and the weights'), done only for the
 * layers that train. The head (one dense layer on 1280 features) is noise beside the base.
 */
function stepFlops(perLayer: number[], fineTuneAt: number): Record<string, number> {
  const forward = 2 * batch * perLayer.reduce((a, b) => a + b, 0);
  const trained = (from: number) => 2 * 2 * batch * perLayer.slice(from).reduce((a, b) => a + b, 0);
  return {
    whole_model_trainable: forward + trained(0),
    fine_tune_at: forward + trained(fineTuneAt),
    frozen_base: forward,
    predict: forward,
  };
}

/** The machine's reachable peak through this TensorFlow build: a 4096 x 4096 MatMul op, median of 5. */
function matmulPeakGflops(): number {
  const n = 4096;
  const a = tf.randomUniform([n, n], -1, 1, 'float32', 2);
  const b = tf.randomUniform([n, n], -1, 1, 'float32', 3);
  const attrs: OpAttr[] = [
    { name: 'T', kind: 'type', value: 'float32' },
    { name: 'transpose_a', kind: 'bool', value: false },
    { name: 'transpose_b', kind: 'bool', value: false },
  ];
  const seconds: number[] = [];
  for (let i = 0; i < 6; i++) {
    const started = performance.now();
    // Not inside tf.tidy: it would walk the returned 16M-element array looking for tensors.
    const product = runOp('MatMul', attrs, [a, b]);
    product.dataSync();
    product.dispose();
    if (i > 0) seconds.push((performance.now() - started) / 1000);
  }
  tf.dispose([a, b]);
  return (2 * n ** 3) / median(seconds) / 1e9;
}

/**
 * Milliseconds per TensorFlow op over one call of `run`: every op tlx runs goes through the
 * native backend's two execute methods, and CPU eager execution returns when the kernel has
 * run, so timing the calls times the kernels (plus the binding's small overhead).
 */
function profileOps(run: () => void): { op: string; ms: number; calls: number }[] {
  type Execute = (name: string, ...rest: unknown[]) => unknown;
  const backend = nativeBackend() as unknown as Record<'executeSingleOutput' | 'executeMultipleOutputs', Execute>;
  const totals = new Map<string, { ms: number; calls: number }>();
  const originals = { single: backend.executeSingleOutput, multiple: backend.executeMultipleOutputs };
  const timed =
    (original: Execute): Execute =>
    (name, ...rest) => {
      const started = performance.now();
      try {
        return original.call(backend, name, ...rest);
      } finally {
        const total = totals.get(name) ?? { ms: 0, calls: 0 };
        totals.set(name, { ms: total.ms + performance.now() - started, calls: total.calls + 1 });
      }
    };
  backend.executeSingleOutput = timed(originals.single);
  backend.executeMultipleOutputs = timed(originals.multiple);
  try {
    run();
  } finally {
    backend.executeSingleOutput = originals.single;
    backend.executeMultipleOutputs = originals.multiple;
  }
  return [...totals].map(([op, t]) => ({ op, ...t })).sort((a, b) => b.ms - a.ms);
}

function printProfile(name: string, run: () => void): void {
  const ops = profileOps(run);
  const total = ops.reduce((sum, o) => sum + o.ms, 0);
  process.stderr.write(`${options.base} ${name}: ${total.toFixed(0)} ms in ${ops.length} kinds of op\n`);
  for (const o of ops.slice(0, 8))
    process.stderr.write(
      `  ${o.op.padEnd(44)} ${o.ms.toFixed(1).padStart(8)} ms ${((100 * o.ms) / total).toFixed(1).padStart(5)}%  ${o.calls} calls\n`,
    );
}

const flops = stepFlops(macsPerLayer(classifier.base), fineTuneAt);
const result: Record<string, number> = {};
for (const name of options.cases.split(',')) {
  if (name === 'predict') {
    // As tlx evaluates and predicts: BatchNorm folded into the convs, fused kernels.
    const folded = new FoldedInference(classifier.model);
    const predict = () => tf.tidy(() => void folded.logits(images).dataSync());
    result[name] = time(predict);
    if (options.profile) printProfile(name, predict);
    folded.dispose();
    continue;
  }
  const phase = name === 'frozen_base' ? 'feature_extraction' : 'fine_tune';
  setPhaseTrainable(classifier, phase, name === 'whole_model_trainable' ? 0 : fineTuneAt);
  const optimizer = createOptimizer({ name: 'rmsprop', learning_rate: 1e-5 });
  // As tlx trains: the layers below the lowest trainable one folded and off the tape, the rest taped.
  const staged = new StagedModel(classifier.model);
  const step = () => void oneStep(staged, objective, images as never, labels as never, optimizer);
  result[name] = time(step);
  if (options.profile) printProfile(name, step);
  staged.dispose();
  optimizer.dispose();
}
const peakGflops = matmulPeakGflops();
const gflops = Object.fromEntries(Object.entries(result).map(([name, seconds]) => [name, flops[name] / seconds / 1e9]));
process.stdout.write(
  `${JSON.stringify({ tool: 'tlx', base: options.base, size, batch, steps, seconds: result, flops, gflops, peak_gflops: peakGflops, numTensors: tf.memory().numTensors })}\n`,
);
