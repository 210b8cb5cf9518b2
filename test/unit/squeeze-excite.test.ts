import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Scalar, SymbolicTensor, Tensor } from '@tensorflow/tfjs-node';
import { compileGraph, FoldedInference, StagedModel } from '../../src/engine/graph.ts';
import { Activation, GlobalAveragePooling2D, HardSigmoid, ReLU } from '../../src/models/layers.ts';
import { runOp, tlxOpsAvailable } from '../../src/tfjs/native-ops.ts';
import { tf } from '../../src/tfjs/tf.ts';
import { nativeOpsOf } from '../helpers/native-ops.ts';

/**
 * A squeeze-excite after its pooling (reduce conv, expand conv, gate activation, product) is
 * one step; off the tape one TlxSqueezeExcite, on the tape its layers.
 */

const maxDiff = (a: Tensor, b: Tensor) => tf.tidy(() => tf.max(tf.abs(a.sub(b))).dataSync()[0]);

test('TlxSqueezeExcite: the reduce and expand products, their activations and the product with the gate, as the separate ops compute them', () => {
  assert.ok(tlxOpsAvailable(), "tlx's kernels are built (node scripts/setup.mjs)");
  const [batch, channels, reduced] = [3, 40, 12];
  const x = tf.randomNormal([batch, 5, 7, channels], 0, 2, 'float32', 61);
  const pooled = tf.mean(x, [1, 2]);
  const reduceKernel = tf.randomNormal([1, 1, channels, reduced], 0, 0.6, 'float32', 62);
  const reduceBias = tf.randomNormal([reduced], 0, 0.5, 'float32', 63);
  const expandKernel = tf.randomNormal([1, 1, reduced, channels], 0, 0.6, 'float32', 64);
  const expandBias = tf.randomNormal([channels], 0, 0.5, 'float32', 65);
  const hidden = tf.matMul(pooled, reduceKernel.reshape([channels, reduced])).add(reduceBias);
  const reduceActivations: Record<string, Tensor> = {
    Linear: hidden,
    Relu: tf.relu(hidden),
    Swish: hidden.mul(tf.sigmoid(hidden)),
  };
  for (const [reduceActivation, h] of Object.entries(reduceActivations)) {
    const z = tf.matMul(h, expandKernel.reshape([reduced, channels])).add(expandBias);
    const gates: Record<string, Tensor> = {
      Sigmoid: tf.sigmoid(z),
      HardSigmoid: tf.clipByValue(z.add(3), 0, 6).mul(1 / 6),
    };
    for (const [gateActivation, gate] of Object.entries(gates)) {
      const reference = x.mul(gate.reshape([batch, 1, 1, channels]));
      // The pooled means as a Reshape hands them ([b, c]) and as a keepdims pooling does ([b, 1, 1, c]).
      for (const means of [pooled, pooled.reshape([batch, 1, 1, channels])]) {
        const y = runOp(
          'TlxSqueezeExcite',
          [
            { name: 'reduce_activation', kind: 'string', value: reduceActivation },
            { name: 'gate_activation', kind: 'string', value: gateActivation },
          ],
          [x, means, reduceKernel, reduceBias, expandKernel, expandBias],
        );
        const label = `${reduceActivation} then ${gateActivation}, pooled ${means.shape.join('x')}`;
        assert.deepEqual(y.shape, x.shape, label);
        assert.ok(maxDiff(y, reference) < 1e-5, `${label}: differs by ${maxDiff(y, reference)}`);
        y.dispose();
      }
    }
  }
  const spread = tf.tidy(() => tf.moments(gatesOf(x, reduceKernel)).variance.dataSync()[0]);
  assert.ok(spread > 0, 'the test gates vary');
  tf.dispose([x, pooled, reduceKernel, reduceBias, expandKernel, expandBias, hidden]);
});

/** Anything not constant from the inputs (a guard that the test data is not degenerate). */
function gatesOf(x: Tensor, kernel: Tensor): Tensor {
  return tf.matMul(tf.mean(x, [1, 2]), kernel.reshape([kernel.shape[2]!, kernel.shape[3]!]));
}

const blocks = {
  /** EfficientNet: pooling without keepdims, a Reshape, swish and sigmoid in the convs. */
  efficientnet: (x: SymbolicTensor): SymbolicTensor => {
    let se = new GlobalAveragePooling2D({ keepdims: false, name: 'se_squeeze' }).apply(x) as SymbolicTensor;
    se = tf.layers.reshape({ targetShape: [1, 1, 24], name: 'se_reshape' }).apply(se) as SymbolicTensor;
    se = tf.layers
      .conv2d({ filters: 6, kernelSize: 1, activation: 'swish', name: 'se_reduce', kernelInitializer: 'heNormal' })
      .apply(se) as SymbolicTensor;
    se = tf.layers
      .conv2d({ filters: 24, kernelSize: 1, activation: 'sigmoid', name: 'se_expand', biasInitializer: 'ones' })
      .apply(se) as SymbolicTensor;
    return tf.layers.multiply({ name: 'se_excite' }).apply([x, se]) as SymbolicTensor;
  },
  /** MobileNetV3: keepdims pooling, ReLU and hard-sigmoid as layers of their own, the gate first in the product. */
  mobilenet_v3: (x: SymbolicTensor): SymbolicTensor => {
    let se = new GlobalAveragePooling2D({ keepdims: true, name: 'se_pool' }).apply(x) as SymbolicTensor;
    se = tf.layers
      .conv2d({ filters: 8, kernelSize: 1, name: 'se_conv', kernelInitializer: 'heNormal' })
      .apply(se) as SymbolicTensor;
    se = new ReLU({ name: 'se_relu' }).apply(se) as SymbolicTensor;
    se = tf.layers.conv2d({ filters: 24, kernelSize: 1, name: 'se_conv_1' }).apply(se) as SymbolicTensor;
    se = new HardSigmoid({ name: 'se_hard_sigmoid' }).apply(se) as SymbolicTensor;
    return tf.layers.multiply({ name: 'se_mul' }).apply([se, x]) as SymbolicTensor;
  },
};

for (const [base, block] of Object.entries(blocks)) {
  test(`a squeeze-excite as ${base} builds it: one step, one op off the tape, the layers' output; on the tape the layers' gradients`, () => {
    const input = tf.input({ shape: [9, 11, 3] });
    const stem = tf.layers.conv2d({ filters: 24, kernelSize: 3, padding: 'same', name: 'stem' });
    const activated = new Activation({ activation: 'silu', name: 'stem_activation' }).apply(
      stem.apply(input),
    ) as SymbolicTensor;
    const excited = block(activated);
    const pooled = new GlobalAveragePooling2D({ keepdims: false, name: 'top_pool' }).apply(excited) as SymbolicTensor;
    const output = tf.layers.dense({ units: 2, name: 'head' }).apply(pooled) as SymbolicTensor;
    const model = tf.model({ inputs: input, outputs: output });

    const excite = compileGraph(model).steps.find((step) => step.kind === 'excite');
    assert.ok(excite?.kind === 'excite', 'the squeeze-excite is one step');
    assert.equal(excite.reduceActivation, base === 'efficientnet' ? 'Swish' : 'Relu');
    assert.equal(excite.gateActivation, base === 'efficientnet' ? 'Sigmoid' : 'HardSigmoid');
    assert.equal(excite.gateFirst, base !== 'efficientnet');

    const images = tf.randomNormal([4, 9, 11, 3], 0, 1, 'float32', 66);
    const layered = model.predict(images) as Tensor;
    const inference = new FoldedInference(model);
    let folded: Tensor | undefined;
    const ops = nativeOpsOf(() => (folded = inference.logits(images)));
    assert.equal(ops.filter((op) => op === 'TlxSqueezeExcite').length, 1, ops.join(', '));
    assert.ok(
      ops.filter((op) => op === '_FusedMatMul').length <= 1,
      `only the head's dense is a matrix product: ${ops.join(', ')}`,
    );
    assert.ok(maxDiff(folded!, layered) < 1e-5, `folded differs by ${maxDiff(folded!, layered)}`);
    inference.dispose();

    // On the tape (everything trains): the squeeze-excite's convs get the layers' gradients.
    const labels = tf.tensor1d([0, 1, 1, 0], 'int32');
    const loss = (logits: Tensor) => tf.losses.softmaxCrossEntropy(tf.oneHot(labels, 2), logits) as Scalar;
    const staged = new StagedModel(model);
    const frozen = staged.frozen(images);
    const ours = tf.variableGrads(() => loss(staged.trainable(frozen, true)), staged.variables);
    const reference = tf.variableGrads(() => loss(model.apply(images, { training: true }) as Tensor), staged.variables);
    const names = Object.keys(reference.grads).filter((name) => /se_(reduce|expand|conv)/.test(name));
    assert.equal(names.length, 4, Object.keys(reference.grads).join(', '));
    for (const name of names) {
      const [a, b] = [ours.grads[name], reference.grads[name]];
      const scale = tf.max(tf.abs(b)).dataSync()[0];
      assert.ok(scale > 1e-6, `${name}: the gradient is not zero`);
      assert.ok(maxDiff(a, b) <= 1e-4 * scale, `${name}: gradient differs by ${maxDiff(a, b)} of ${scale}`);
    }
    tf.dispose(frozen);
    staged.dispose();
    tf.dispose([images, layered, folded!, labels, ours.value, reference.value]);
    tf.dispose([...Object.values(ours.grads), ...Object.values(reference.grads)]);
    model.dispose();
  });
}
