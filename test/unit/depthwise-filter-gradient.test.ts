import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Tensor4D } from '@tensorflow/tfjs-node';
import { runOp, tlxOpsAvailable, type OpAttr } from '../../src/tfjs/native-ops.ts';
import { tf } from '../../src/tfjs/tf.ts';

/**
 * tlx's depthwise filter gradient (TlxDepthwiseFilterGrad in native/tlx_ops.cc) against
 * TensorFlow's DepthwiseConv2dNativeBackpropFilter: strides 1 and 2, SAME and VALID, odd
 * sizes, channel counts below, at and past a multiple of the kernel's 16-channel blocks.
 * The two sum in different orders, so they agree to float rounding, not to the bit.
 */
type Case = { input: [number, number, number, number]; kernel: number; stride: number; padding: 'SAME' | 'VALID' };

const cases: Case[] = [
  { input: [2, 9, 10, 5], kernel: 5, stride: 1, padding: 'SAME' },
  { input: [3, 14, 14, 40], kernel: 5, stride: 2, padding: 'SAME' },
  { input: [2, 15, 13, 16], kernel: 3, stride: 2, padding: 'VALID' },
  { input: [1, 7, 7, 33], kernel: 5, stride: 1, padding: 'VALID' },
  { input: [4, 8, 8, 7], kernel: 3, stride: 1, padding: 'SAME' },
  // Inputs smaller than the filter (a 32-pixel MobileNetV3 at its last blocks): taps past both edges.
  { input: [2, 1, 1, 20], kernel: 5, stride: 2, padding: 'SAME' },
  { input: [2, 2, 2, 18], kernel: 5, stride: 2, padding: 'SAME' },
  { input: [3, 2, 3, 16], kernel: 5, stride: 1, padding: 'SAME' },
  { input: [2, 3, 3, 17], kernel: 5, stride: 2, padding: 'SAME' },
];

function outputSize(size: number, { kernel, stride, padding }: Case): number {
  return padding === 'SAME' ? Math.ceil(size / stride) : Math.floor((size - kernel) / stride) + 1;
}

function padBefore(size: number, out: number, { kernel, stride, padding }: Case): number {
  return padding === 'VALID' ? 0 : Math.floor(Math.max((out - 1) * stride + kernel - size, 0) / 2);
}

for (const c of cases) {
  test(`depthwise filter gradient ${c.kernel}x${c.kernel} stride ${c.stride} ${c.padding} on ${JSON.stringify(c.input)}: TensorFlow's`, () => {
    assert.ok(tlxOpsAvailable(), 'scripts/setup.mjs builds native/build/tlx_ops.so');
    const [batch, height, width, channels] = c.input;
    const [outHeight, outWidth] = [outputSize(height, c), outputSize(width, c)];
    const x = tf.randomNormal(c.input, 0, 1, 'float32', 11);
    const dy = tf.randomNormal([batch, outHeight, outWidth, channels], 0, 1, 'float32', 12);
    const ours = runOp(
      'TlxDepthwiseFilterGrad',
      [
        { name: 'kernel_size', kind: 'int', value: [c.kernel, c.kernel] },
        { name: 'strides', kind: 'int', value: [c.stride, c.stride] },
        { name: 'pads', kind: 'int', value: [padBefore(height, outHeight, c), padBefore(width, outWidth, c)] },
      ],
      [x, dy],
    ) as Tensor4D;
    const attrs: OpAttr[] = [
      { name: 'T', kind: 'type', value: 'float32' },
      { name: 'strides', kind: 'int', value: [1, c.stride, c.stride, 1] },
      { name: 'padding', kind: 'string', value: c.padding },
      { name: 'data_format', kind: 'string', value: 'NHWC' },
      { name: 'dilations', kind: 'int', value: [1, 1, 1, 1] },
    ];
    const sizes = tf.tensor1d([c.kernel, c.kernel, channels, 1], 'int32');
    const tensorflows = runOp('DepthwiseConv2dNativeBackpropFilter', attrs, [x, sizes, dy]);
    assert.deepEqual(ours.shape, tensorflows.shape);
    const [difference, largest] = tf.tidy(() => [
      ours.sub(tensorflows).abs().max().dataSync()[0],
      tensorflows.abs().max().dataSync()[0],
    ]);
    assert.ok(largest > 0.5, 'a gradient worth comparing');
    assert.ok(difference < 1e-5 * largest, `differs by ${difference} (largest entry ${largest})`);
    tf.dispose([x, dy, ours, sizes, tensorflows]);
  });
}

test('depthwise filter gradient: mismatched input and gradient are an error naming both shapes', () => {
  const x = tf.zeros([2, 8, 8, 4]);
  const dy = tf.zeros([3, 8, 8, 4]);
  assert.throws(
    () =>
      runOp(
        'TlxDepthwiseFilterGrad',
        [
          { name: 'kernel_size', kind: 'int', value: [5, 5] },
          { name: 'strides', kind: 'int', value: [1, 1] },
          { name: 'pads', kind: 'int', value: [2, 2] },
        ],
        [x, dy],
      ),
    /\[2,8,8,4\].*\[3,8,8,4\].*batch or channels/,
  );
  tf.dispose([x, dy]);
});
