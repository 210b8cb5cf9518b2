import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Tensor } from '@tensorflow/tfjs-node';
import { hardSigmoid, hardSilu, multiply, relu6, silu, spatialMean } from '../../src/models/activations.ts';
import { runOp, tlxOpsAvailable } from '../../src/tfjs/native-ops.ts';
import { tf } from '../../src/tfjs/tf.ts';
import { nativeOpsOf } from '../helpers/native-ops.ts';

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

/** Name, ours, the plain expression, and whether the outputs are equal to the last bit (swish's sigmoid is Eigen's in tlx's kernel, TensorFlow's in the plain ops). */
const cases: [string, (x: Tensor) => Tensor, (x: Tensor) => Tensor, boolean][] = [
  ['relu6', relu6, (x) => tf.relu6(x), true],
  ['hard sigmoid', hardSigmoid, (x) => tf.relu6(x.add(3)).mul(1 / 6), true],
  ['hard-swish', hardSilu, (x) => x.mul(tf.relu6(x.add(3))).mul(1 / 6), true],
  ['swish', silu, (x) => x.mul(tf.sigmoid(x)), false],
];

for (const [name, ours, plain, exact] of cases) {
  test(`${name}: the same output as its plain ops${exact ? ' to the last bit' : ''}, and their gradient`, () => {
    const { x, dy } = inputs();
    const [oursValue, plainValue] = [ours(x), plain(x)];
    if (exact) assert.deepEqual(oursValue.dataSync(), plainValue.dataSync(), 'output');
    else {
      const difference = largestRelativeDifference(oursValue, plainValue);
      assert.ok(difference < 1e-6, `output differs by ${difference} of its largest entry`);
    }
    const oursGradient = tf.grad(ours)(x, dy);
    const plainGradient = tf.grad(plain)(x, dy);
    const difference = largestRelativeDifference(oursGradient, plainGradient);
    assert.ok(difference < 1e-6, `gradient differs by ${difference} of its largest entry`);
    assert.ok(plainGradient.abs().max().dataSync()[0] > 0.1, 'a gradient worth comparing');
    tf.dispose([x, dy, oursValue, plainValue, oursGradient, plainGradient]);
  });
}

test("tlx's kernels (native/build/tlx_ops.so) are built, load, and run hard-swish and swish one kernel each way", () => {
  assert.ok(tlxOpsAvailable(), 'scripts/setup.mjs builds native/build/tlx_ops.so');
  // Several of the kernels' blocks of 4096 values, the last one partial.
  const x = tf.randomNormal([3, 37, 41, 17], 0, 4, 'float32', 8);
  const dy = tf.randomNormal(x.shape, 0, 1, 'float32', 9);
  for (const [activation, forward, backward] of [
    [hardSilu, 'TlxHardSwish', 'TlxHardSwishGrad'],
    [silu, 'TlxSwish', 'TlxSwishGrad'],
  ] as const) {
    const ops = nativeOpsOf(() => tf.dispose(tf.grad(activation)(x, dy)));
    assert.deepEqual(ops.sort(), [forward, backward].sort(), `${forward}: one kernel each way`);
  }
  // Hard-swish's gradient equal to the last bit to the ops it replaces: g * relu6(x + 3) + x * Relu6Grad(g, x + 3).
  const float = [{ name: 'T', kind: 'type', value: 'float32' }] as const;
  const plain = tf.tidy(() => {
    const g = dy.mul(1 / 6);
    const shifted = x.add(3);
    return g.mul(tf.relu6(shifted)).add(x.mul(runOp('Relu6Grad', float, [g, shifted])));
  });
  const ours = tf.grad(hardSilu)(x, dy);
  assert.deepEqual(ours.dataSync(), plain.dataSync(), 'hard-swish gradient');
  // Swish: SigmoidGrad(s, dy * x) + dy * s within a few units in the last place.
  const plainSwish = tf.tidy(() => {
    const s = tf.sigmoid(x);
    return dy.mul(s).add(runOp('SigmoidGrad', float, [s, dy.mul(x)]));
  });
  const oursSwish = tf.grad(silu)(x, dy);
  const difference = largestRelativeDifference(oursSwish, plainSwish);
  assert.ok(difference < 1e-6, `swish gradient differs by ${difference} of its largest entry`);
  tf.dispose([x, dy, plain, ours, plainSwish, oursSwish]);
});

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

test("squeeze-excite's product on tlx's kernels: one op each way, the product bit-equal, either order of operands", () => {
  // 32 images of 14x14x37: the kernels' threads split images and rows.
  const activation = tf.randomNormal([32, 14, 14, 37], 0, 1, 'float32', 13);
  const gate = tf.randomUniform([32, 1, 1, 37], 0, 1, 'float32', 14);
  const dy = tf.randomNormal([32, 14, 14, 37], 0, 1, 'float32', 15);
  for (const order of ['activation, gate', 'gate, activation']) {
    const run = (a: Tensor, b: Tensor) => (order === 'activation, gate' ? multiply(a, b) : multiply(b, a));
    let value: Tensor | undefined;
    assert.deepEqual(
      nativeOpsOf(() => (value = run(activation, gate))),
      ['TlxScaleChannels'],
      order,
    );
    assert.deepEqual(Array.from(value!.dataSync()), Array.from(activation.mul(gate).dataSync()), `${order}: product`);
    let gradients: Tensor[] = [];
    const ops = nativeOpsOf(() => (gradients = tf.grads(run)([activation, gate], dy)));
    assert.ok(ops.includes('TlxScaleChannelsGrad') && !ops.includes('Sum'), `${order}: ${ops.join(', ')}`);
    const plain = tf.grads((a: Tensor, b: Tensor) => a.mul(b))([activation, gate], dy);
    assert.deepEqual(Array.from(gradients[0].dataSync()), Array.from(plain[0].dataSync()), `${order}: dx bit-equal`);
    const difference = largestRelativeDifference(gradients[1], plain[1]);
    assert.ok(difference < 1e-6, `${order}: the gate's gradient differs by ${difference} of its largest entry`);
    tf.dispose([value!, ...gradients, ...plain]);
  }
  tf.dispose([activation, gate, dy]);
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
