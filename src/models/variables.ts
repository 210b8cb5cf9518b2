import type { LayersModel } from '@tensorflow/tfjs-node';

type Layer = LayersModel['layers'][number];
type LayerVariable = Layer['weights'][number];

/**
 * The key of a weight everywhere tlx stores or loads one: Keras 3's variable path,
 * "<layer>/<variable>". The one naming difference between tfjs, Keras 2 files and Keras 3
 * is resolved here: a depthwise kernel is `depthwise_kernel` in tfjs and Keras 2 .h5 files,
 * `kernel` in Keras 3. Checkpoints use these keys, so python/ assigns them by path as is.
 */
export function weightKey(layer: string, variable: string): string {
  const short = variable.split('/').pop()!.replace(/:\d+$/, '');
  return `${layer}/${short === 'depthwise_kernel' ? 'kernel' : short}`;
}

/**
 * Every variable of a model under its key, walking nested models (the base inside the
 * classifier). tfjs's own variable names get _1, _2 suffixes when several models live in
 * one process, so they cannot key checkpoints or weight files.
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
      for (const variable of layer.weights) entries.push([weightKey(layer.name, variable.originalName), variable]);
    }
  };
  visit(model.layers);
  return entries;
}
