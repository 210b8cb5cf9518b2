import type { ResolvedExperiment } from './resolved.ts';

/**
 * Facts about the pretrained bases that need no model: how many layers Keras's model has
 * (the range of fine_tune_at, checked when a config is loaded), which options each base
 * takes, what it does with raw pixels, and where Keras keeps its ImageNet weights. The
 * model tests build each base and check these facts against it and against Keras.
 */

export type BaseModelName = ResolvedExperiment['model']['base'];
type ModelKeys = Pick<ResolvedExperiment['model'], 'base' | 'minimalistic'>;
type WeightKeys = Pick<ResolvedExperiment['model'], 'base' | 'alpha' | 'minimalistic' | 'weights'>;

export const baseNames: readonly BaseModelName[] = [
  'mobilenet_v2',
  'mobilenet_v3_small',
  'mobilenet_v3_large',
  'efficientnet_b0',
];

export function isBaseName(name: string): name is BaseModelName {
  return (baseNames as readonly string[]).includes(name);
}

/** The keras.applications function that builds the same base. */
export function kerasApplicationOf(base: BaseModelName): string {
  switch (base) {
    case 'mobilenet_v2':
      return 'MobileNetV2';
    case 'mobilenet_v3_small':
      return 'MobileNetV3Small';
    case 'mobilenet_v3_large':
      return 'MobileNetV3Large';
    case 'efficientnet_b0':
      return 'EfficientNetB0';
  }
}

/** len(base_model.layers) in Keras, the InputLayer included (EfficientNet: as with weights="imagenet"). */
export function baseLayerCount(model: ModelKeys): number {
  switch (model.base) {
    case 'mobilenet_v2':
      return 154;
    case 'mobilenet_v3_small':
      return model.minimalistic ? 103 : 157;
    case 'mobilenet_v3_large':
      return model.minimalistic ? 139 : 187;
    case 'efficientnet_b0':
      return 238;
  }
}

/** Whether the base rescales raw [0, 255] pixels itself (Keras's MobileNetV3 and EfficientNet do; MobileNetV2 expects [-1, 1]). */
export function baseRescalesInside(base: BaseModelName): boolean {
  return base !== 'mobilenet_v2';
}

/** What the exported model does with raw RGB pixels in [0, 255], for the model card. */
export function preprocessingInside(base: BaseModelName): string {
  switch (base) {
    case 'mobilenet_v2':
      return 'scales them to [-1, 1] (x / 127.5 - 1) in its first layer, then MobileNetV2';
    case 'mobilenet_v3_small':
    case 'mobilenet_v3_large':
      return "scales them to [-1, 1] (x / 127.5 - 1) in MobileNetV3's own first layer (Keras's include_preprocessing)";
    case 'efficientnet_b0':
      return "rescales them to [0, 1], then normalizes with the ImageNet mean and standard deviation, in EfficientNet-B0's own first layers";
  }
}

/** Keras's ImageNet weights for a base (include_top=False) and its published md5, if it has them. */
export interface ImagenetWeightsFile {
  url: string;
  md5?: string;
  /** Input size the file was trained at (conv weights work at any size). */
  resolution?: number;
}

const mobileNetV3Md5: Record<string, string> = {
  'large_224_0.75_float': '40af19a13ebea4e2ee0c676887f69a2e',
  'large_224_1.0_float': '07fb09a5933dd0c8eaafa16978110389',
  'large_minimalistic_224_1.0_float': 'ec5221f64a2f6d1ef965a614bdae7973',
  'small_224_0.75_float': 'ebdb5cc8e0b497cd13a7c275d475c819',
  'small_224_1.0_float': 'd3e8ec802a04aa4fc771ee12a9a9b836',
  'small_minimalistic_224_1.0_float': 'cde8136e733e811080d9fcd8a252f7e4',
};

const mobileNetV2Resolutions = [96, 128, 160, 192, 224];

function alphaText(alpha: number): string {
  return Number.isInteger(alpha) ? alpha.toFixed(1) : String(alpha);
}

/**
 * The file keras.applications downloads for `weights="imagenet"`, from Keras's own URL
 * patterns (mobilenet_v2.py, mobilenet_v3.py, efficientnet.py); undefined when Keras has no
 * file for these options. MobileNetV2 has one per input size: the nearest is used.
 */
export function imagenetWeightsFile(
  model: Omit<WeightKeys, 'weights'>,
  imageSize: [number, number],
): ImagenetWeightsFile | undefined {
  switch (model.base) {
    case 'mobilenet_v2': {
      const size = Math.max(...imageSize);
      const resolution = mobileNetV2Resolutions.reduce(
        (best, r) => (Math.abs(r - size) < Math.abs(best - size) ? r : best),
        224,
      );
      return {
        url: `https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_${alphaText(model.alpha)}_${resolution}_no_top.h5`,
        resolution,
      };
    }
    case 'mobilenet_v3_small':
    case 'mobilenet_v3_large': {
      const name = `${model.base === 'mobilenet_v3_small' ? 'small' : 'large'}${model.minimalistic ? '_minimalistic' : ''}_224_${alphaText(model.alpha)}_float`;
      const md5 = mobileNetV3Md5[name];
      if (!md5) return undefined;
      return {
        url: `https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/weights_mobilenet_v3_${name}_no_top_v2.h5`,
        md5,
        resolution: 224,
      };
    }
    case 'efficientnet_b0':
      return {
        url: 'https://storage.googleapis.com/keras-applications/efficientnetb0_notop.h5',
        md5: '50bc09e76180e00e4465e1a485ddc09d',
      };
  }
}

/** Options that do not fit the base, each as a key path and what was expected. */
export function baseOptionProblems(model: WeightKeys): { keyPath: string[]; message: string }[] {
  const problems: { keyPath: string[]; message: string }[] = [];
  const isV3 = model.base === 'mobilenet_v3_small' || model.base === 'mobilenet_v3_large';
  if (model.minimalistic && !isV3)
    problems.push({
      keyPath: ['model', 'minimalistic'],
      message: `found true, but ${model.base} has no minimalistic variant (only mobilenet_v3_small and mobilenet_v3_large)`,
    });
  if (model.base === 'efficientnet_b0' && model.alpha !== 1)
    problems.push({
      keyPath: ['model', 'alpha'],
      message: `found ${model.alpha}, but efficientnet_b0 has no width multiplier; expected 1.0 or no alpha`,
    });
  if (isV3 && model.weights === 'imagenet' && !imagenetWeightsFile(model, [224, 224])) {
    const expected = model.minimalistic ? '1.0 (the only minimalistic ImageNet weights)' : '0.75 or 1.0';
    problems.push({
      keyPath: ['model', 'alpha'],
      message: `found ${model.alpha}, but Keras has ImageNet weights for ${kerasApplicationOf(model.base)} only at alpha ${expected}; use one of those or weights: none`,
    });
  }
  if (model.weights === 'npm:nsfwjs' && (model.base !== 'mobilenet_v2' || model.alpha !== 1)) {
    problems.push({
      keyPath: ['model', 'weights'],
      message: `npm:nsfwjs is a MobileNetV2 with alpha 1.0; found base ${model.base}, alpha ${model.alpha}`,
    });
  }
  return problems;
}
