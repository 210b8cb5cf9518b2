import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { SymbolicTensor, Tensor } from '@tensorflow/tfjs-node';
import { compileGraph, FoldedInference } from '../../src/engine/graph.ts';
import { Activation, GlobalAveragePooling2D, InferenceBatchNormalization } from '../../src/models/layers.ts';
import { runOp, runOpMulti, tlxOpsAvailable } from '../../src/tfjs/native-ops.ts';
import { tf } from '../../src/tfjs/tf.ts';
import { nativeOpsOf } from '../helpers/native-ops.ts';

/**
 * EfficientNet's squeeze-excite pools the swish output of each block's depthwise chain; tlx's
 * TlxSwishMean takes those means in the same pass as swish.
 */

const maxDiff = (a: Tensor, b: Tensor) => tf.tidy(() => tf.max(tf.abs(a.sub(b))).dataSync()[0]);

test('TlxSwishMean: the swish of TlxSwish to the last bit, and each image channel mean of it within float rounding', () => {
  assert.ok(tlxOpsAvailable(), "tlx's kernels are built (node scripts/setup.mjs)");
  // 40 channels: blocks of 102 pixels, so the 9x11 images end inside a block; 3 images on the threads.
  const x = tf.randomNormal([3, 9, 11, 40], 0, 3, 'float32', 31);
  const [y, mean] = runOpMulti('TlxSwishMean', [], [x], 2);
  const swish = runOp('TlxSwish', [], [x]);
  assert.deepEqual(y.shape, [3, 9, 11, 40]);
  assert.deepEqual(mean.shape, [3, 40]);
  assert.deepEqual(Array.from(y.dataSync()), Array.from(swish.dataSync()));
  const reference = tf.mean(swish, [1, 2]);
  assert.ok(maxDiff(mean, reference) < 1e-6, `mean differs by ${maxDiff(mean, reference)}`);
  assert.ok(tf.max(tf.abs(reference)).dataSync()[0] > 0.5, 'the means are not near zero');
  tf.dispose([x, y, mean, swish, reference]);
});

test("a depthwise chain ending in swish and read by a squeeze-excite's pooling: the folded path pools in the swish kernel, as the layers compute it", () => {
  const input = tf.input({ shape: [13, 10, 24] });
  const depthwise = tf.layers.depthwiseConv2d({ kernelSize: 3, padding: 'same', useBias: false, name: 'dwconv' });
  const batchNorm = new InferenceBatchNormalization({ name: 'bn' });
  let x = batchNorm.apply(depthwise.apply(input)) as SymbolicTensor;
  x = new Activation({ activation: 'silu', name: 'activation' }).apply(x) as SymbolicTensor;
  const squeezed = new GlobalAveragePooling2D({ keepdims: true, name: 'se_squeeze' }).apply(x) as SymbolicTensor;
  const gate = tf.layers.activation({ activation: 'sigmoid' }).apply(squeezed) as SymbolicTensor;
  const output = tf.layers.multiply().apply([x, gate]) as SymbolicTensor;
  const model = tf.model({ inputs: input, outputs: output });
  batchNorm.setWeights([
    tf.randomUniform([24], 0.5, 1.5, 'float32', 32),
    tf.randomUniform([24], -1, 1, 'float32', 33),
    tf.randomUniform([24], -0.5, 0.5, 'float32', 34),
    tf.randomUniform([24], 0.5, 2, 'float32', 35),
  ]);

  const chain = compileGraph(model).steps.find((step) => step.kind === 'conv_bn');
  assert.ok(chain?.kind === 'conv_bn' && chain.squeeze?.layers[0].name === 'se_squeeze', 'the chain knows its pooling');
  const images = tf.randomNormal([4, 13, 10, 24], 0, 2, 'float32', 36);
  const layered = model.predict(images) as Tensor;
  const inference = new FoldedInference(model);
  let folded: Tensor | undefined;
  const ops = nativeOpsOf(() => (folded = inference.logits(images)));
  assert.ok(ops.includes('TlxSwishMean') && !ops.includes('Mean'), ops.join(', '));
  assert.ok(maxDiff(folded!, layered) < 1e-5, `folded differs by ${maxDiff(folded!, layered)}`);
  inference.dispose();
  tf.dispose([images, layered, folded!]);
  model.dispose();
});
