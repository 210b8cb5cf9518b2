/**
 * tlx's side of the step benchmarks: a base at 224x224, batch 32, the same cases as
 * bench/keras_steps.py. Prints one JSON line: seconds per step, per case, each case's counted
 * FLOPs and achieved GFLOP/s, and the peak of a large matrix product through the same build.
 *
 *   npx tsx bench/steps.ts [--base mobilenet_v2] [--fine-tune-at 100] [--steps 3] [--size 224] [--batch 32] [--cases a,b]
 */
import { parseArgs } from 'node:util';
import type { LayersModel, Optimizer, SymbolicTensor, Tensor1D, Tensor4D } from '@tensorflow/tfjs-node';
import { isBaseName } from '../src/config/bases.ts';
import { buildClassifier, setPhaseTrainable } from '../src/models/classifier.ts';
import { FoldedInference, StagedModel } from '../src/engine/graph.ts';
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

/** The machine's reachable peak through this TensorFlow build: a 4096 x 4096 matrix product, median of 5. */
function matmulPeakGflops(): number {
  const n = 4096;
  const a = tf.randomUniform([n, n], -1, 1, 'float32', 2);
  const b = tf.randomUniform([n, n], -1, 1, 'float32', 3);
  const seconds: number[] = [];
  for (let i = 0; i < 6; i++) {
    const started = performance.now();
    tf.tidy(() => tf.matMul(a, b).dataSync());
    if (i > 0) seconds.push((performance.now() - started) / 1000);
  }
  tf.dispose([a, b]);
  return (2 * n ** 3) / median(seconds) / 1e9;
}

const flops = stepFlops(macsPerLayer(classifier.base), fineTuneAt);
const result: Record<string, number> = {};
for (const name of options.cases.split(',')) {
  if (name === 'predict') {
    // As tlx evaluates and predicts: BatchNorm folded into the convs, fused kernels.
    const folded = new FoldedInference(classifier.model);
    result[name] = time(() => tf.tidy(() => folded.logits(images).dataSync()));
    folded.dispose();
    continue;
  }
  const phase = name === 'frozen_base' ? 'feature_extraction' : 'fine_tune';
  setPhaseTrainable(classifier, phase, name === 'whole_model_trainable' ? 0 : fineTuneAt);
  const optimizer = createOptimizer({ name: 'rmsprop', learning_rate: 1e-5 });
  // As tlx trains: the layers below the lowest trainable one folded and off the tape, the rest taped.
  const staged = new StagedModel(classifier.model);
  result[name] = time(() => oneStep(staged, objective, images as never, labels as never, optimizer));
  staged.dispose();
  optimizer.dispose();
}
const peakGflops = matmulPeakGflops();
const gflops = Object.fromEntries(Object.entries(result).map(([name, seconds]) => [name, flops[name] / seconds / 1e9]));
process.stdout.write(
  `${JSON.stringify({ tool: 'tlx', base: options.base, size, batch, steps, seconds: result, flops, gflops, peak_gflops: peakGflops, numTensors: tf.memory().numTensors })}\n`,
);
