import type { LayersModel } from '@tensorflow/tfjs-node';
import type { BaseModelName } from '../config/bases.ts';
import { efficientNetB0 } from './efficientnet.ts';
import { mobileNetV2 } from './mobilenet_v2.ts';
import { mobileNetV3Large, mobileNetV3Small } from './mobilenet_v3.ts';

/** What every base builder takes. */
export interface BaseOptions {
  alpha: number;
  inputShape: [height: number, width: number, channels: 3];
  /** MobileNetV3 only. */
  minimalistic?: boolean;
  /** Seeds the kernels of a `weights: none` base, so runs repeat. */
  seed?: number;
}

export function buildBase(base: BaseModelName, options: BaseOptions): LayersModel {
  switch (base) {
    case 'mobilenet_v2':
      return mobileNetV2(options);
    case 'mobilenet_v3_small':
      return mobileNetV3Small(options);
    case 'mobilenet_v3_large':
      return mobileNetV3Large(options);
    case 'efficientnet_b0':
      return efficientNetB0(options);
  }
}

/** The block a layer name belongs to (Keras's own prefixes), or undefined outside blocks. */
const blockPatterns: Record<BaseModelName, RegExp> = {
  mobilenet_v2: /^(?:expanded_conv_|block_(\d+)_)/,
  mobilenet_v3_small: /^expanded_conv_(?:(\d+)_)?/,
  mobilenet_v3_large: /^expanded_conv_(?:(\d+)_)?/,
  efficientnet_b0: /^block(\d+[a-z])_/,
};

/** Names Keras gives layers it is not told to name; they belong to the block before them. */
const autoNamed = /^(re_lu|activation)(_\d+)?$/;

/**
 * The block of every layer, by index: "block 3", or "stem" before the first block and
 * "top" after the last (MobileNetV2's block 0 is Keras's expanded_conv_).
 */
export function blocksOf(base: BaseModelName, layerNames: readonly string[]): string[] {
  const labels: string[] = [];
  let seenBlock = false;
  layerNames.forEach((name, index) => {
    const match = blockPatterns[base].exec(name);
    if (match) {
      seenBlock = true;
      labels.push(`block ${match[1] ?? '0'}`);
    } else if (autoNamed.test(name) && index > 0) {
      labels.push(labels[index - 1]);
    } else {
      labels.push(seenBlock ? 'top' : 'stem');
    }
  });
  return labels;
}
