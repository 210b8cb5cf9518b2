import assert from 'node:assert/strict';
import { test } from 'node:test';
import { runOp } from '../src/native-ops.ts';
import { tf } from '../src/tf.ts';

test('the native TensorFlow backend is what runs', () => {
  assert.equal(tf.getBackend(), 'tensorflow');
});

test('a small op runs natively and gives the right numbers', () => {
  const product = tf.tidy(() => tf.matMul(tf.tensor2d([[1, 2], [3, 4]]), tf.tensor2d([[5], [6]])).dataSync());
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
