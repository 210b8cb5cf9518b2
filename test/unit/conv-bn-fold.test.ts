import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Tensor, Tensor1D, Tensor4D } from '@tensorflow/tfjs-node';
import { convBnClamp, foldConvBn, type ConvBnChain, type ConvBnWeights } from '../../src/engine/taped-conv-bn.ts';
import { tlxOpsAvailable } from '../../src/tfjs/native-ops.ts';
import { tf } from '../../src/tfjs/tf.ts';
import { nativeOpsOf } from '../helpers/native-ops.ts';

/**
 * BatchNorm folded into its conv by tlx's kernels (TlxFoldConvBn, TlxUnfoldConvBnGrad) against
 * the fold written as tfjs ops: the folded filter and bias to the last bit, and the chain's
 * gradients for the kernel, gamma and beta against tfjs's own autodiff of conv + BatchNorm.
 */

const cases: {
  name: string;
  chain: ConvBnChain;
  kernel: [number, number, number, number];
  input: [number, number, number, number];
}[] = [
  {
    name: '3x3 conv, stride 2',
    chain: { depthwise: false, pointwise: false, options: { strides: [2, 2], padding: 'SAME', activation: 'Relu6' } },
    kernel: [3, 3, 8, 24],
    input: [2, 9, 9, 8],
  },
  {
    name: '1x1 conv (a matrix product)',
    chain: { depthwise: false, pointwise: true, options: { strides: [1, 1], padding: 'SAME' } },
    kernel: [1, 1, 40, 19],
    input: [3, 5, 5, 40],
  },
  {
    name: '5x5 depthwise',
    chain: { depthwise: true, pointwise: false, options: { strides: [1, 1], padding: 'SAME', activation: 'Relu' } },
    kernel: [5, 5, 37, 1],
    input: [2, 7, 6, 37],
  },
];

function randomWeights(kernelShape: [number, number, number, number], seed: number, depthwise = false): ConvBnWeights {
  const channels = depthwise ? kernelShape[2] : kernelShape[3];
  return {
    kernel: tf.randomNormal(kernelShape, 0, 0.3, 'float32', seed) as Tensor4D,
    gamma: tf.randomUniform([channels], 0.5, 1.5, 'float32', seed + 1) as Tensor1D,
    beta: tf.randomNormal([channels], 0, 0.2, 'float32', seed + 2) as Tensor1D,
    inverseStd: tf.randomUniform([channels], 0.5, 2, 'float32', seed + 3) as Tensor1D,
    mean: tf.randomNormal([channels], 0, 0.5, 'float32', seed + 4) as Tensor1D,
  };
}

/** The fold as tfjs ops (what the kernel replaces). */
function foldByOps(depthwise: boolean, w: ConvBnWeights): { filter: Tensor; bias: Tensor } {
  const scale = w.gamma.mul(w.inverseStd);
  const filter = w.kernel.mul(depthwise ? scale.reshape([1, 1, -1, 1]) : scale);
  return { filter, bias: w.beta.sub(w.mean.mul(scale)) };
}

function largestRelativeDifference(a: Tensor, b: Tensor): number {
  return tf.tidy(() => a.sub(b).abs().max().dataSync()[0] / Math.max(1e-12, b.abs().max().dataSync()[0]));
}

for (const { name, chain, kernel, input } of cases) {
  test(`${name}: the folded filter and bias are the ops' to the last bit, from one kernel`, () => {
    assert.ok(tlxOpsAvailable(), 'scripts/setup.mjs builds native/build/tlx_ops.so');
    const weights = randomWeights(kernel, 3, chain.depthwise);
    let folded: ReturnType<typeof foldConvBn> | undefined;
    assert.deepEqual(
      nativeOpsOf(() => (folded = foldConvBn(chain.depthwise, weights))),
      ['TlxFoldConvBn'],
    );
    const reference = foldByOps(chain.depthwise, weights);
    assert.deepEqual(folded!.filter.shape, kernel);
    assert.deepEqual(Array.from(folded!.filter.dataSync()), Array.from(reference.filter.dataSync()), 'filter');
    assert.deepEqual(Array.from(folded!.bias.dataSync()), Array.from(reference.bias.dataSync()), 'bias');
    tf.dispose([...Object.values(weights), ...Object.values(folded!), ...Object.values(reference)]);
  });

  test(`${name}: the gradients for kernel, gamma and beta are tfjs autodiff's of conv + BatchNorm`, () => {
    const weights = randomWeights(kernel, 11, chain.depthwise);
    const x = tf.randomNormal(input, 0, 1, 'float32', 5) as Tensor4D;
    const outputWeights = tf.tidy(() => {
      const probe = convBnClamp(chain, x, weights, false);
      return tf.randomNormal(probe.shape, 0, 1, 'float32', 6);
    });
    const trained = [weights.kernel, weights.gamma, weights.beta];
    const ours = (k: Tensor, g: Tensor, b: Tensor) =>
      convBnClamp(chain, x, { ...weights, kernel: k as Tensor4D, gamma: g as Tensor1D, beta: b as Tensor1D }, false)
        .mul(outputWeights)
        .sum();
    const byOps = (k: Tensor, g: Tensor, b: Tensor) => {
      const { filter, bias } = foldByOps(chain.depthwise, {
        ...weights,
        kernel: k as Tensor4D,
        gamma: g as Tensor1D,
        beta: b as Tensor1D,
      });
      const { strides, padding, activation } = chain.options;
      const conv = chain.depthwise
        ? tf.depthwiseConv2d(x, filter as Tensor4D, strides, padding === 'SAME' ? 'same' : 'valid')
        : tf.conv2d(x, filter as Tensor4D, strides, padding === 'SAME' ? 'same' : 'valid');
      const z = conv.add(bias);
      const y = activation === 'Relu6' ? tf.relu6(z) : activation === 'Relu' ? tf.relu(z) : z;
      return y.mul(outputWeights).sum();
    };
    let oursGradients: Tensor[] = [];
    const backwardOps = nativeOpsOf(() => (oursGradients = tf.grads(ours)(trained)));
    assert.ok(backwardOps.includes('TlxUnfoldConvBnGrad'), `ops: ${backwardOps.join(', ')}`);
    const referenceGradients = tf.grads(byOps)(trained);
    ['kernel', 'gamma', 'beta'].forEach((what, i) => {
      assert.deepEqual(oursGradients[i].shape, referenceGradients[i].shape, what);
      const difference = largestRelativeDifference(oursGradients[i], referenceGradients[i]);
      assert.ok(difference < 1e-5, `${what}: differs by ${difference} of its largest entry`);
    });
    tf.dispose([...Object.values(weights), x, outputWeights, ...oursGradients, ...referenceGradients]);
  });
}

test('a per-channel vector of another length is an error naming the input and both shapes', () => {
  const weights = randomWeights([3, 3, 4, 8], 1);
  const wrong = { ...weights, gamma: tf.ones([7]) as Tensor1D };
  assert.throws(() => foldConvBn(false, wrong), /TlxFoldConvBn: input 2 has shape \[8\], expected \[7\]/);
  tf.dispose([...Object.values(weights), wrong.gamma]);
});
