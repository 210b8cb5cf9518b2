import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { checkImageHeader, decodeToBytes, UnusableImageError } from '../../src/data/images.ts';
import type { Tensor3D } from '@tensorflow/tfjs-node';
import { tf } from '../../src/tfjs/tf.ts';

/** Why an image file cannot be used, said before the decoder sees it: truncated, not an image, another format. */

async function encoded(format: 'jpeg' | 'png'): Promise<Buffer> {
  const image = tf.tidy(() => tf.randomUniform([16, 16, 3], 0, 255, 'int32', 7).toInt());
  const bytes =
    format === 'jpeg' ? await tf.node.encodeJpeg(image as Tensor3D) : await tf.node.encodePng(image as Tensor3D);
  image.dispose();
  return Buffer.from(bytes);
}

function reasonFor(bytes: Uint8Array): string {
  try {
    decodeToBytes(bytes, [8, 8]);
  } catch (error) {
    assert.ok(error instanceof UnusableImageError, `an UnusableImageError, not ${String(error)}`);
    return error.message;
  }
  return 'decoded';
}

describe('image files a person is told about', () => {
  test('whole JPEG and PNG files pass', async () => {
    for (const format of ['jpeg', 'png'] as const)
      assert.deepEqual(checkImageHeader(await encoded(format), 1e6), { width: 16, height: 16 });
  });

  test('a JPEG cut short: truncated JPEG, before decoding', async () => {
    const jpeg = await encoded('jpeg');
    assert.equal(
      reasonFor(jpeg.subarray(0, jpeg.length >> 1)),
      'truncated JPEG (no end-of-image marker: the file is cut short)',
    );
  });

  test('a PNG cut short: truncated PNG', async () => {
    const png = await encoded('png');
    assert.equal(reasonFor(png.subarray(0, png.length - 16)), 'truncated PNG (no IEND chunk: the file is cut short)');
  });

  test('text with an image name: not an image', () => {
    assert.equal(
      reasonFor(Buffer.from('hello, I am a text file')),
      'not an image (no JPEG, PNG, GIF or BMP signature at its start)',
    );
  });

  test('a WebP file: an unsupported format, named', () => {
    const webp = Buffer.alloc(30);
    webp.write('RIFF', 0);
    webp.writeUInt32LE(22, 4);
    webp.write('WEBPVP8X', 8);
    webp.writeUInt32LE(10, 16);
    webp.writeUIntLE(15, 24, 3);
    webp.writeUIntLE(15, 27, 3);
    assert.equal(reasonFor(webp), 'unsupported format (webp); expected JPEG, PNG, GIF or BMP');
  });

  test('a JPEG damaged in its middle: damaged JPEG data, not "Invalid TF_Status"', async () => {
    const jpeg = Buffer.from(await encoded('jpeg'));
    for (let i = 200; i < Math.min(jpeg.length - 4, 400); i++) jpeg[i] = i % 7 === 0 ? 0xff : 0x13;
    const reason = reasonFor(jpeg);
    assert.ok(reason === 'decoded' || reason === 'damaged JPEG data (the decoder refused it)', reason);
  });
});
