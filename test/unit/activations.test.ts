import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Tensor } from '@tensorflow/tfjs-node';
import { hardSigmoid, hardSilu, multiply, relu6, silu, spatialMean } from '../../src/models/activations.ts';
import { tf } from '../../src/tfjs/tf.ts';

/**
 * Each activation against tfjs's autodiff of the same expression in plain ops (Keras's
 * expressions). Inputs cover every piece of the piecewise ones (below -3, between, above 3
 * and 6) but no exact corner: there tfjs's relu6 gradient (x <= 6) and TensorFlow's
 * Relu6Grad (x < 6), which Keras uses, differ.
 */
function inputs(): { x: Tensor; dy: Tensor } {
  return tf.tidy(() => ({
    x: tf.randomNormal([2, 5, 5, 8], 0, 4, 'float32', 1),
    dy: tf.randomNormal([2, 5, 5, 8], 0, 1, 'float32', 2),
  }));
}

function largestRelativeDifference(a: Tensor, b: Tensor): number {
  return tf.tidy(() => a.sub(b).abs().max().dataSync()[0] / Math.max(1e-12, b.abs().max().dataSync()[0]));
}

const cases: [string, (x: Tensor) => Tensor, (x: Tensor) => Tensor][] = [
  ['relu6', relu6, (x) => tf.relu6(x)],
  ['hard sigmoid', hardSigmoid, (x) => tf.relu6(x.add(3)).mul(1 / 6)],
  ['hard-swish', hardSilu, (x) => x.mul(tf.relu6(x.add(3))).mul(1 / 6)],
  ['swish', silu, (x) => x.mul(tf.sigmoid(x))],
];

for (const [name, ours, plain] of cases) {
  test(`${name}: the same output as its plain ops to the last bit, and their gradient`, () => {
    const { x, dy } = inputs();
    const [oursValue, plainValue] = [ours(x), plain(x)];
    assert.deepEqual(oursValue.dataSync(), plainValue.dataSync(), 'output');
    const oursGradient = tf.grad(ours)(x, dy);
    const plainGradient = tf.grad(plain)(x, dy);
    const difference = largestRelativeDifference(oursGradient, plainGradient);
    assert.ok(difference < 1e-6, `gradient differs by ${difference} of its largest entry`);
    assert.ok(plainGradient.abs().max().dataSync()[0] > 0.1, 'a gradient worth comparing');
    tf.dispose([x, dy, oursValue, plainValue, oursGradient, plainGradient]);
  });
}

test("a squeeze-excite gate's product: both operands' gradients, the gate's summed over the pixels", () => {
  const before = tf.memory().numTensors;
  const activation = tf.randomNormal([2, 4, 4, 6], 0, 1, 'float32', 3);
  const gate = tf.randomUniform([2, 1, 1, 6], 0, 1, 'float32', 4);
  const dy = tf.randomNormal([2, 4, 4, 6], 0, 1, 'float32', 5);
  const ours = tf.grads((a: Tensor, b: Tensor) => multiply(a, b))([activation, gate], dy);
  const plain = tf.grads((a: Tensor, b: Tensor) => a.mul(b))([activation, gate], dy);
  assert.deepEqual(
    ours.map((gradient) => gradient.shape),
    [
      [2, 4, 4, 6],
      [2, 1, 1, 6],
    ],
  );
  ours.forEach((gradient, i) => {
    const difference = largestRelativeDifference(gradient, plain[i]);
    assert.ok(difference < 1e-6, `operand ${i}: gradient differs by ${difference} of its largest entry`);
  });
  // Either order of operands, and one of lower rank.
  const channels = tf.randomUniform([6], 0, 1, 'float32', 6);
  const [ofActivation, ofChannels] = tf.grads((a: Tensor, b: Tensor) => multiply(b, a))([activation, channels], dy);
  const [plainOfActivation, plainOfChannels] = tf.grads((a: Tensor, b: Tensor) => b.mul(a))([activation, channels], dy);
  assert.deepEqual(ofChannels.shape, [6]);
  assert.ok(largestRelativeDifference(ofChannels, plainOfChannels) < 1e-6, 'a [channels] operand');
  tf.dispose([
    activation,
    gate,
    dy,
    channels,
    ofActivation,
    ofChannels,
    plainOfActivation,
    plainOfChannels,
    ...ours,
    ...plain,
  ]);
  assert.equal(tf.memory().numTensors, before, 'no tensor left');
});

for (const keepdims of [true, false]) {
  test(`the mean over the pixels (keepdims ${keepdims}): tf.mean's output and gradient, to the last bit`, () => {
    const { x } = inputs();
    const dy = tf.randomNormal(keepdims ? [2, 1, 1, 8] : [2, 8], 0, 1, 'float32', 7);
    const [ours, plain] = [spatialMean(x, keepdims), tf.mean(x, [1, 2], keepdims)];
    assert.deepEqual(ours.dataSync(), plain.dataSync(), 'output');
    const oursGradient = tf.grad((input: Tensor) => spatialMean(input, keepdims))(x, dy);
    const plainGradient = tf.grad((input: Tensor) => tf.mean(input, [1, 2], keepdims))(x, dy);
    assert.deepEqual(oursGradient.shape, x.shape);
    assert.deepEqual(oursGradient.dataSync(), plainGradient.dataSync(), 'gradient');
    tf.dispose([x, dy, ours, plain, oursGradient, plainGradient]);
  });
}
