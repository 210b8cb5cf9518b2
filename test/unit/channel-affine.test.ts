import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Tensor } from '@tensorflow/tfjs-node';
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
