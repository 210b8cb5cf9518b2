import type { ResolvedExperiment } from './resolved.ts';

/**
 * Facts about the pretrained bases that stages need without building a model: how many
 * layers Keras's model has (the range of fine_tune_at, checked when a config is loaded).
 * The model tests build each base and check these numbers against it and against Keras.
 */

export type BaseModelName = ResolvedExperiment['model']['base'];

/** len(base_model.layers) in Keras, the InputLayer included. */
export function baseLayerCount(model: Pick<ResolvedExperiment['model'], 'base'>): number {
  switch (model.base) {
    case 'mobilenet_v2':
      return 154;
  }
}
