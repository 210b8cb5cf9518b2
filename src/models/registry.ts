/**
 * Facts about the supported pretrained bases that other stages need without building a
 * model (config checks, sweep planning).
 */
export const baseModels = {
  mobilenet_v2: {
    /** len(base_model.layers) in Keras, the InputLayer included: the range of fine_tune_at. */
    layerCount: 154,
    /** MobileNetV2 expects pixels in [-1, 1]: x / 127.5 - 1. */
    pixelScale: { scale: 1 / 127.5, offset: -1 },
  },
} as const;

export type BaseModelName = keyof typeof baseModels;
