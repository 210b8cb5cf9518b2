import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Scalar, Tensor, Tensor4D, Variable } from '@tensorflow/tfjs-node';
import { applyDense, applyPointwiseConv, isMatrixDense, isPointwiseConv } from '../../src/engine/pointwise.ts';
import { tf } from '../../src/tfjs/tf.ts';
import { nativeOpsOf } from '../helpers/native-ops.ts';

/** A squeeze-excite's 1x1 convs (EfficientNet's carry swish and sigmoid) as matrix products, off the tape and on it. */

const maxDiff = (a: Tensor, b: Tensor) => tf.tidy(() => tf.max(tf.abs(a.sub(b))).dataSync()[0]);

for (const activation of ['linear', 'relu', 'sigmoid', 'swish'] as const) {
  test(`a 1x1 conv with ${activation}: one fused matrix product off the tape, the layer's ops on it, both equal to the layer`, () => {
    const layer = tf.layers.conv2d({ filters: 12, kernelSize: 1, activation, useBias: true });
    const x = tf.randomNormal([5, 1, 1, 40], 0, 2, 'float32', 41) as Tensor4D;
    const reference = layer.apply(x) as Tensor;
    layer.setWeights([layer.getWeights()[0], tf.randomNormal([12], 0, 1, 'float32', 42)]);
    const expected = layer.apply(x) as Tensor;
    assert.ok(isPointwiseConv(layer));
    let offTape: Tensor | undefined;
    const ops = nativeOpsOf(() => (offTape = applyPointwiseConv(layer, x, false)));
    assert.ok(ops.includes('_FusedMatMul') && !ops.includes('Conv2D') && !ops.includes('BiasAdd'), ops.join(', '));
    const onTape = applyPointwiseConv(layer, x, true);
    // The layer's Conv2D sums in another order than a matrix product: within float rounding.
    assert.ok(maxDiff(offTape!, expected) <= 1e-6, `off the tape: ${maxDiff(offTape!, expected)}`);
    assert.ok(maxDiff(onTape, expected) <= 1e-6, `on the tape: ${maxDiff(onTape, expected)}`);
    assert.ok(maxDiff(expected, reference) > 0.01, 'the bias counts');
    tf.dispose([x, reference, expected, offTape!, onTape]);
    layer.dispose();
  });
}

test('a 1x1 conv with another activation (tanh) is no matrix product', () => {
  const layer = tf.layers.conv2d({ filters: 4, kernelSize: 1, activation: 'tanh' });
  layer.build([null, 1, 1, 8]);
  assert.equal(isPointwiseConv(layer), false);
});

test("a Dense layer on [batch, features] (the classifier's head): MatMul, not BatchMatMulV2; off the tape one fused product; output and gradients the layer's", () => {
  const layer = tf.layers.dense({ units: 3, activation: 'linear', biasInitializer: 'ones' });
  const x = tf.randomNormal([6, 20], 0, 2, 'float32', 43);
  const expected = layer.apply(x) as Tensor;
  assert.ok(isMatrixDense(layer, x) && !isMatrixDense(layer, x.reshape([6, 4, 5])));
  let offTape: Tensor | undefined;
  const offOps = nativeOpsOf(() => (offTape = applyDense(layer, x, false)));
  assert.deepEqual(offOps, ['_FusedMatMul']);
  const variables = layer.trainableWeights.map((weight) => weight.read() as Variable);
  const loss = (y: Tensor) => y.square().sum() as Scalar;
  const reference = tf.variableGrads(() => loss(layer.apply(x) as Tensor), variables);
  let ours: ReturnType<typeof tf.variableGrads> | undefined;
  const tapedOps = nativeOpsOf(() => (ours = tf.variableGrads(() => loss(applyDense(layer, x, true)), variables)));
  assert.ok(tapedOps.includes('MatMul') && !tapedOps.includes('BatchMatMulV2'), tapedOps.join(', '));
  assert.ok(maxDiff(offTape!, expected) <= 1e-5, `off the tape: ${maxDiff(offTape!, expected)}`);
  assert.ok(
    Math.abs(ours!.value.dataSync()[0] - reference.value.dataSync()[0]) <= 1e-4 * reference.value.dataSync()[0],
  );
  for (const variable of variables) {
    const difference = maxDiff(ours!.grads[variable.name], reference.grads[variable.name]);
    assert.ok(difference <= 1e-4, `${variable.name}: ${difference}`);
  }
  tf.dispose([x, expected, offTape!, ours!.value, reference.value, ...Object.values(ours!.grads)]);
  tf.dispose(Object.values(reference.grads));
  layer.dispose();
});
