import type { LayersModel } from '@tensorflow/tfjs-node';

type Layer = LayersModel['layers'][number];
type LayerVariable = Layer['weights'][number];

/**
 * Every variable of a model under a stable key, "<layer>/<weight>", walking nested models
 * (the base inside the classifier). tfjs's own variable names get _1, _2 suffixes when
 * several models live in one process, so they cannot key checkpoints or weight files.
 */
export function namedVariables(model: LayersModel): [key: string, variable: LayerVariable][] {
  const entries: [string, LayerVariable][] = [];
  const visit = (layers: Layer[]) => {
    for (const layer of layers) {
      const nested = (layer as unknown as { layers?: Layer[] }).layers;
      if (Array.isArray(nested)) {
        visit(nested);
        continue;
      }
      for (const variable of layer.weights) entries.push([`${layer.name}/${variable.originalName.split('/').pop()}`, variable]);
    }
  };
  visit(model.layers);
  return entries;
}
