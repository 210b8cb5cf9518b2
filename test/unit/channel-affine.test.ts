import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Scalar, SymbolicTensor, Tensor } from '@tensorflow/tfjs-node';
import { compileGraph, FoldedInference, StagedModel } from '../../src/engine/graph.ts';
import { ChannelRescaling, Normalization } from '../../src/models/layers.ts';
import { tf } from '../../src/tfjs/tf.ts';
import { nativeOpsOf } from '../helpers/native-ops.ts';

/**
 * EfficientNet's input layers on tlx's TlxChannelAffine kernel: Keras's Normalization and a
 * per-channel Rescaling, each one pass, bit-equal to TensorFlow's broadcasting ops.
 */

// 6 images of 37x41 pixels: the kernel's threads split the rows.
const images = () => tf.randomUniform([6, 37, 41, 3], -2, 2, 'float32', 21);

function applied(layer: { apply: (x: Tensor) => unknown }, x: Tensor): { value: Tensor; ops: string[] } {
  let value: Tensor | undefined;
  const ops = nativeOpsOf(() => (value = layer.apply(x) as Tensor));
  return { value: value!, ops };
}

test('Normalization: (x - mean) / max(sqrt(variance), 1e-7) per channel, bit-equal, in one kernel', () => {
  const layer = new Normalization({});
  layer.build([null, 37, 41, 3]);
  const [mean, variance, count] = [tf.tensor1d([0.485, -0.456, 0.406]), tf.tensor1d([0.229, 0.224, 0]), tf.scalar(5)];
  layer.setWeights([mean, variance, count]);
  const x = images();
  const { value, ops } = applied(layer, x);
  assert.ok(ops.includes('TlxChannelAffine') && !ops.includes('RealDiv') && !ops.includes('Sub'), ops.join(', '));
  const reference = x.sub(mean).div(tf.maximum(tf.sqrt(variance), 1e-7));
  assert.deepEqual(Array.from(value.dataSync()), Array.from(reference.dataSync()));
  assert.ok(reference.abs().max().dataSync()[0] > 1e6, 'a zero variance divides by 1e-7, as Keras does');
  tf.dispose([mean, variance, count, x, value, reference]);
});

test('a per-channel Rescaling: x * scale[c], bit-equal, in one kernel', () => {
  const scale = [1 / Math.sqrt(0.229), 1 / Math.sqrt(0.224), 1 / Math.sqrt(0.225)];
  const layer = new ChannelRescaling({ scale });
  const x = images();
  const { value, ops } = applied(layer, x);
  assert.ok(ops.includes('TlxChannelAffine') && !ops.includes('Mul'), ops.join(', '));
  const reference = x.mul(tf.tensor1d(scale));
  assert.deepEqual(Array.from(value.dataSync()), Array.from(reference.dataSync()));
  tf.dispose([x, value, reference]);
});

/** input -> the given layers in a row -> output, and its compiled graph's steps. */
function chainModel(layers: InstanceType<typeof tf.layers.Layer>[]) {
  const input = tf.input({ shape: [37, 41, 3] });
  const output = layers.reduce((x, layer) => layer.apply(x) as SymbolicTensor, input);
  const model = tf.model({ inputs: input, outputs: output });
  return { model, steps: compileGraph(model).steps };
}

function normalization(): Normalization {
  const layer = new Normalization({});
  layer.build([null, 37, 41, 3]);
  layer.setWeights([tf.tensor1d([0.485, -0.456, 0.406]), tf.tensor1d([0.229, 0.224, 0.225]), tf.scalar(5)]);
  return layer;
}

test("EfficientNet's preprocessing (Rescaling, Normalization, per-channel Rescaling) runs as one kernel pass, bit-equal to the three layers", () => {
  const { model, steps } = chainModel([
    tf.layers.rescaling({ scale: 1 / 255 }),
    normalization(),
    new ChannelRescaling({ scale: [1 / Math.sqrt(0.229), 1 / Math.sqrt(0.224), 1 / Math.sqrt(0.225)] }),
  ]);
  assert.deepEqual(
    steps.map((step) => [step.kind, step.layers.length]),
    [['affine', 3]],
  );
  const x = tf.randomUniform([6, 37, 41, 3], 0, 255, 'float32', 22);
  const layered = model.predict(x) as Tensor;
  const inference = new FoldedInference(model);
  let folded: Tensor | undefined;
  const ops = nativeOpsOf(() => (folded = inference.logits(x)));
  assert.deepEqual(
    ops.filter((op) => op === 'TlxChannelAffine' || op === 'Mul' || op === 'Add' || op === 'AddV2'),
    ['TlxChannelAffine'],
  );
  assert.deepEqual(Array.from(folded!.dataSync()), Array.from(layered.dataSync()));
  inference.dispose();
  tf.dispose([x, layered, folded!]);
  model.dispose();
});

test("MobileNet's Rescaling (x / 127.5 - 1) runs as one kernel pass, bit-equal to tfjs's Mul and Add; a Rescaling after a Normalization stays a step of its own", () => {
  const single = chainModel([tf.layers.rescaling({ scale: 1 / 127.5, offset: -1 })]);
  const x = tf.randomUniform([6, 37, 41, 3], 0, 255, 'float32', 23);
  const inference = new FoldedInference(single.model);
  const folded = inference.logits(x);
  const layered = single.model.predict(x) as Tensor;
  assert.deepEqual(Array.from(folded.dataSync()), Array.from(layered.dataSync()));
  inference.dispose();
  tf.dispose([x, folded, layered]);
  single.model.dispose();

  const reversed = chainModel([normalization(), tf.layers.rescaling({ scale: 2 })]);
  assert.deepEqual(
    reversed.steps.map((step) => [step.kind, step.layers.length]),
    [
      ['affine', 1],
      ['affine', 1],
    ],
  );
  reversed.model.dispose();
});

test('a Rescaling after a trainable layer runs as its layer on the tape, so the gradient flows through it', () => {
  const input = tf.input({ shape: [4] });
  const dense = tf.layers.dense({ units: 3, name: 'dense' });
  const output = tf.layers.rescaling({ scale: 2, offset: 1 }).apply(dense.apply(input)) as SymbolicTensor;
  const model = tf.model({ inputs: input, outputs: output });
  const staged = new StagedModel(model);
  const x = tf.randomNormal([5, 4], 0, 1, 'float32', 24);
  const frozen = staged.frozen(x);
  const ours = tf.variableGrads(() => staged.trainable(frozen, true).square().sum() as Scalar, staged.variables);
  const theirs = tf.variableGrads(() => (model.apply(x) as Tensor).square().sum() as Scalar, staged.variables);
  for (const name of Object.keys(theirs.grads)) {
    const difference = tf.max(tf.abs(ours.grads[name].sub(theirs.grads[name]))).dataSync()[0];
    assert.ok(difference < 1e-5, `${name}: ${difference}`);
    assert.ok(tf.max(tf.abs(theirs.grads[name])).dataSync()[0] > 0.1, `${name}: a gradient to compare`);
  }
  tf.dispose([x, ...frozen, ours.value, theirs.value, ...Object.values(ours.grads), ...Object.values(theirs.grads)]);
  staged.dispose();
  model.dispose();
});
