import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Scalar, SymbolicTensor, Tensor, Tensor1D, Tensor4D } from '@tensorflow/tfjs-node';
import { compileGraph, FoldedInference, StagedModel } from '../../src/engine/graph.ts';
import { fusedConv2d } from '../../src/engine/fused-kernels.ts';
import { InferenceBatchNormalization, ReLU6 } from '../../src/models/layers.ts';
import { tf } from '../../src/tfjs/tf.ts';
import { nativeOpsOf } from '../helpers/native-ops.ts';

/**
 * A residual connection's Add joins the linear conv chain before it: folded, oneDNN's conv
 * adds the shortcut as it writes its output; on the tape the Add runs as its layer.
 */

const maxDiff = (a: Tensor, b: Tensor) => tf.tidy(() => tf.max(tf.abs(a.sub(b))).dataSync()[0]);

test('fusedConv2d with a residual: the conv, its bias and the shortcut added, the shortcut left as it was', () => {
  const x = tf.randomNormal([3, 6, 7, 16], 0, 1, 'float32', 71) as Tensor4D;
  const filter = tf.randomNormal([1, 1, 16, 8], 0, 0.3, 'float32', 72) as Tensor4D;
  const bias = tf.randomNormal([8], 0, 0.5, 'float32', 73) as Tensor1D;
  const shortcut = tf.randomNormal([3, 6, 7, 8], 0, 1, 'float32', 74) as Tensor4D;
  const before = shortcut.clone();
  const options = { strides: [1, 1] as [number, number], padding: 'SAME' as const };
  let fused: Tensor | undefined;
  const ops = nativeOpsOf(() => (fused = fusedConv2d(x, filter, bias, options, shortcut)));
  const reference = tf.conv2d(x, filter, 1, 'same').add(bias).add(shortcut);
  assert.ok(maxDiff(fused!, reference) < 1e-5, `differs by ${maxDiff(fused!, reference)}`);
  assert.ok(!ops.includes('Add') && !ops.includes('AddV2'), ops.join(', '));
  assert.equal(maxDiff(shortcut, before), 0, 'the shortcut is not overwritten');
  assert.throws(() => fusedConv2d(x, filter, bias, { ...options, activation: 'Relu' }, shortcut), /linear conv only/);
  tf.dispose([x, filter, bias, shortcut, before, fused!, reference]);
});

test('an inverted-residual block: the Add is part of the project chain, folded and on the tape, as the layers compute it', () => {
  const input = tf.input({ shape: [9, 11, 8] });
  const batchNorms: InferenceBatchNormalization[] = [];
  const chain = (x: SymbolicTensor, filters: number, name: string, relu: boolean): SymbolicTensor => {
    const conv = tf.layers.conv2d({ filters, kernelSize: 1, useBias: false, name });
    const batchNorm = new InferenceBatchNormalization({ name: `${name}_bn` });
    batchNorms.push(batchNorm);
    const y = batchNorm.apply(conv.apply(x)) as SymbolicTensor;
    return relu ? (new ReLU6({ name: `${name}_relu` }).apply(y) as SymbolicTensor) : y;
  };
  const expanded = chain(input, 24, 'expand', true);
  const projected = chain(expanded, 8, 'project', false);
  const added = tf.layers.add({ name: 'add' }).apply([input, projected]) as SymbolicTensor;
  const output = tf.layers.globalAveragePooling2d({}).apply(added) as SymbolicTensor;
  const model = tf.model({ inputs: input, outputs: output });
  batchNorms.forEach((batchNorm, i) =>
    batchNorm.setWeights([
      tf.randomUniform(batchNorm.weights[0].shape as number[], 0.5, 1.5, 'float32', 80 + i),
      tf.randomUniform(batchNorm.weights[0].shape as number[], -1, 1, 'float32', 90 + i),
      tf.randomUniform(batchNorm.weights[0].shape as number[], -0.5, 0.5, 'float32', 100 + i),
      tf.randomUniform(batchNorm.weights[0].shape as number[], 0.5, 2, 'float32', 110 + i),
    ]),
  );

  const project = compileGraph(model).steps.find((step) => step.kind === 'conv_bn' && step.conv.name === 'project');
  assert.ok(project?.kind === 'conv_bn' && project.residual?.add.name === 'add', 'the Add joins the project chain');
  assert.equal(project.residual.shortcutFirst, true);

  const images = tf.randomNormal([4, 9, 11, 8], 0, 1, 'float32', 75);
  const labels = tf
    .oneHot(tf.tensor1d([0, 1, 1, 0, 2, 3, 4, 7], 'int32'), 8)
    .reshape([4, 2, 8])
    .sum(1);
  const layered = model.predict(images) as Tensor;
  const inference = new FoldedInference(model);
  let folded: Tensor | undefined;
  const ops = nativeOpsOf(() => (folded = inference.logits(images)));
  assert.ok(!ops.includes('Add') && !ops.includes('AddV2'), ops.join(', '));
  assert.ok(maxDiff(folded!, layered) < 1e-5, `folded differs by ${maxDiff(folded!, layered)}`);
  inference.dispose();

  const loss = (features: Tensor) => features.mul(labels).sum().square() as Scalar;
  const staged = new StagedModel(model);
  const frozen = staged.frozen(images);
  const ours = tf.variableGrads(() => loss(staged.trainable(frozen, true)), staged.variables);
  const reference = tf.variableGrads(() => loss(model.apply(images, { training: true }) as Tensor), staged.variables);
  const names = Object.keys(reference.grads);
  assert.ok(
    names.some((name) => name.startsWith('project')) && names.some((name) => name.startsWith('expand')),
    names.join(),
  );
  for (const name of names) {
    const scale = tf.max(tf.abs(reference.grads[name])).dataSync()[0];
    assert.ok(scale > 1e-6, `${name}: the gradient is not zero`);
    const difference = maxDiff(ours.grads[name], reference.grads[name]);
    assert.ok(difference <= 1e-4 * scale, `${name}: gradient differs by ${difference} of ${scale}`);
  }
  staged.dispose();
  tf.dispose([images, layered, folded!, labels, ...frozen, ours.value, reference.value]);
  tf.dispose([...Object.values(ours.grads), ...Object.values(reference.grads)]);
  model.dispose();
});
