import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Tensor1D, Tensor4D } from '@tensorflow/tfjs-node';
import {
  eigenFusedConv2d,
  fusedConv2d,
  fusedDepthwiseConv2d,
  unfusedDepthwise,
  type FusedActivation,
} from '../../src/engine/fused-kernels.ts';
import { PreferredKernel, runOp } from '../../src/tfjs/native-ops.ts';
import { tf } from '../../src/tfjs/tf.ts';

test('the native TensorFlow backend is what runs', () => {
  assert.equal(tf.getBackend(), 'tensorflow');
});

test('a small op runs natively and gives the right numbers', () => {
  const product = tf.tidy(() =>
    tf
      .matMul(
        tf.tensor2d([
          [1, 2],
          [3, 4],
        ]),
        tf.tensor2d([[5], [6]]),
      )
      .dataSync(),
  );
  assert.deepEqual(Array.from(product), [17, 39]);
});

test('TensorFlow ops without a tfjs kernel run by name through the native backend', () => {
  // ImageProjectiveTransformV3 is what augmentation uses; a shift by one column with
  // REFLECT fill mirrors the edge, which proves the op really ran with its attributes.
  const image = tf.tensor4d([1, 2, 3, 4], [1, 2, 2, 1]);
  const shiftRight = tf.tensor2d([[1, 0, -1, 0, 1, 0, 0, 0]]);
  const outputShape = tf.tensor1d([2, 2], 'int32');
  const fill = tf.scalar(0);
  const out = runOp(
    'ImageProjectiveTransformV3',
    [
      { name: 'dtype', kind: 'type', value: 'float32' },
      { name: 'interpolation', kind: 'string', value: 'BILINEAR' },
      { name: 'fill_mode', kind: 'string', value: 'REFLECT' },
    ],
    [image, shiftRight, outputShape, fill],
  );
  assert.deepEqual(Array.from(out.dataSync()), [1, 1, 3, 3]);
  tf.dispose([image, shiftRight, outputShape, fill, out]);
});

test('list attributes reach TensorFlow (binding patch): the fused conv kernels equal conv + bias (+ relu, relu6, hard-swish or swish)', () => {
  const x = tf.randomNormal([2, 7, 7, 6], 0, 3, 'float32', 1) as Tensor4D;
  const filter = tf.randomNormal([3, 3, 6, 4], 0, 1, 'float32', 2) as Tensor4D;
  const bias = tf.randomNormal([4], 0, 1, 'float32', 3) as Tensor1D;
  const depthwiseFilter = tf.randomNormal([3, 3, 6, 1], 0, 1, 'float32', 4) as Tensor4D;
  const depthwiseBias = tf.randomNormal([6], 0, 1, 'float32', 5) as Tensor1D;
  const maxDiff = (a: Tensor4D, b: Tensor4D) => tf.tidy(() => tf.max(tf.abs(a.sub(b))).dataSync()[0]);
  const activations = {
    Relu6: (y: Tensor4D) => tf.clipByValue(y, 0, 6),
    Relu: (y: Tensor4D) => tf.relu(y),
    HardSwish: (y: Tensor4D) => y.mul(tf.relu6(y.add(3))).div(6) as Tensor4D,
    Swish: (y: Tensor4D) => y.mul(tf.sigmoid(y)) as Tensor4D,
    none: (y: Tensor4D) => y,
  };
  for (const [name, activate] of Object.entries(activations)) {
    for (const [strides, padding] of [
      [1, 'SAME'],
      [2, 'VALID'],
    ] as const) {
      const activation = name === 'none' ? undefined : (name as FusedActivation);
      const options = { strides: [strides, strides] as [number, number], padding, activation };
      const pad = padding === 'SAME' ? 'same' : 'valid';
      const what = `${name}, stride ${strides}, ${padding}`;
      tf.tidy(() => {
        const conv = fusedConv2d(x, filter, bias, options);
        assert.ok(maxDiff(conv, activate(tf.conv2d(x, filter, strides, pad).add(bias))) < 1e-4, `conv, ${what}`);
        // TensorFlow's own fused kernel, for builds without oneDNN.
        assert.ok(maxDiff(conv, eigenFusedConv2d(x, filter, bias, options)) < 1e-4, `conv fallback, ${what}`);
        const depthwise = fusedDepthwiseConv2d(x, depthwiseFilter, depthwiseBias, options);
        assert.ok(
          maxDiff(depthwise, activate(tf.depthwiseConv2d(x, depthwiseFilter, strides, pad).add(depthwiseBias))) < 1e-4,
          `depthwise, ${what}`,
        );
        // The separate-kernel fallback, for TensorFlow builds without oneDNN's fused depthwise.
        assert.ok(
          maxDiff(depthwise, unfusedDepthwise(x, depthwiseFilter, depthwiseBias, options)) < 1e-4,
          `depthwise fallback, ${what}`,
        );
      });
    }
  }
  assert.equal(PreferredKernel.report()['oneDNN fused depthwise conv'], true, 'depthwise ran as one fused kernel');
  assert.equal(PreferredKernel.report()['oneDNN fused conv'], true, "conv ran as oneDNN's fused kernel");
  tf.dispose([x, filter, bias, depthwiseFilter, depthwiseBias]);
});
