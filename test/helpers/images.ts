import fs from 'node:fs';
import path from 'node:path';
import type { Tensor3D } from '@tensorflow/tfjs-node';
import { tf } from '../../src/tfjs/tf.ts';

/**
 * Small learnable images for tests: each class has its own colour and stripe direction,
 * plus seeded noise, so a few epochs separate them.
 */
export function classImage(classIndex: number, sample: number, size = 16): Tensor3D {
  return tf.tidy(() => {
    const palette = [
      [220, 40, 40],
      [40, 200, 60],
      [40, 70, 220],
      [230, 200, 40],
      [180, 60, 200],
      [40, 200, 200],
    ];
    const [r, g, b] = palette[classIndex % palette.length];
    const coords = tf.range(0, size).reshape([size, 1]).tile([1, size]);
    const stripes = classIndex % 2 === 0 ? coords : coords.transpose();
    const wave = stripes
      .mul((classIndex + 1) * 0.7)
      .sin()
      .mul(40)
      .expandDims(2);
    const base = tf.tensor1d([r, g, b]).reshape([1, 1, 3]).tile([size, size, 1]);
    const noise = tf.randomUniform([size, size, 3], -25, 25, 'float32', 1000 * classIndex + sample);
    return base.add(wave).add(noise).clipByValue(0, 255).round().toInt() as Tensor3D;
  });
}

export async function encodeImage(image: Tensor3D, format: 'png' | 'jpg'): Promise<Uint8Array> {
  return format === 'png' ? tf.node.encodePng(image) : tf.node.encodeJpeg(image, 'rgb', 95);
}

/** Writes <root>/<class>/<n>.<ext> for each class. */
export async function writeClassFolders(
  root: string,
  classes: string[],
  perClass: number,
  options: { size?: number; format?: 'png' | 'jpg'; offset?: number } = {},
): Promise<void> {
  const format = options.format ?? 'png';
  for (const [classIndex, name] of classes.entries()) {
    fs.mkdirSync(path.join(root, name), { recursive: true });
    for (let i = 0; i < perClass; i++) {
      const image = classImage(classIndex, i + (options.offset ?? 0), options.size);
      fs.writeFileSync(
        path.join(root, name, `${String(i).padStart(4, '0')}.${format}`),
        await encodeImage(image, format),
      );
      image.dispose();
    }
  }
}
