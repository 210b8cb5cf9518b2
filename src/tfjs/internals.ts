import type { LayersModel, Optimizer, SymbolicTensor, Tensor } from '@tensorflow/tfjs-node';
import { tf } from './tf.ts';

/**
 * Every private piece of tfjs that tlx relies on, in one file. tfjs 4.22 is the last release,
 * but a fork or an upgrade may move any of these; `checkTfjsInternals()` (run by the test
 * suite) then fails loudly and names this file, instead of training going wrong quietly.
 *
 * - a functional model's graph: nodes by depth, each node's layer and tensors
 *   (engine/graph.ts flattens the classifier into steps to fold BatchNorm and run stages);
 * - the native backend's binding, to run TensorFlow ops by name (tfjs/native-ops.ts);
 * - an optimizer's learning-rate field, which schedules set per epoch.
 */

type Layer = LayersModel['layers'][number];

/** One weight in a tfjs weights manifest (name, shape, dtype, quantization): the checkpoint format. */
export type WeightsManifestEntry = Parameters<typeof tf.io.decodeWeights>[1] extends (infer E)[] ? E : never;

interface GraphNode {
  layer: Layer;
  inputs: SymbolicTensor[];
  outputs: SymbolicTensor[];
}

export interface GraphContainer {
  inputs: SymbolicTensor[];
  outputs: SymbolicTensor[];
  /** Nodes in the order the container's own executor runs them: deepest first. */
  nodes: GraphNode[];
}

interface NodeInternals {
  outboundLayer: Layer;
  inputTensors: SymbolicTensor[];
  outputTensors: SymbolicTensor[];
}

interface ContainerInternals {
  inputs: SymbolicTensor[];
  outputs: SymbolicTensor[];
  nodesByDepth: Record<string, NodeInternals[]>;
}

export class TfjsInternalsError extends Error {
  override name = 'TfjsInternalsError';
  constructor(what: string) {
    super(
      `tfjs internals changed: ${what}. tlx reaches these private parts of tfjs ${tf.version.tfjs} only through src/tfjs/internals.ts; update that file for this tfjs version.`,
    );
  }
}

/** Whether a layer is itself a functional model (a base nested in the classifier). */
export function isContainer(layer: Layer): boolean {
  return 'nodesByDepth' in layer && Array.isArray((layer as unknown as ContainerInternals).outputs);
}

export function graphOf(model: LayersModel | Layer): GraphContainer {
  const container = model as unknown as ContainerInternals;
  if (!container.nodesByDepth || !Array.isArray(container.inputs) || !Array.isArray(container.outputs))
    throw new TfjsInternalsError('a LayersModel has no nodesByDepth/inputs/outputs');
  const nodes = Object.keys(container.nodesByDepth)
    .map(Number)
    .sort((a, b) => b - a)
    .flatMap((depth) => container.nodesByDepth[String(depth)])
    .map((node) => {
      if (!node.outboundLayer || !Array.isArray(node.inputTensors) || !Array.isArray(node.outputTensors))
        throw new TfjsInternalsError('a graph node has no outboundLayer/inputTensors/outputTensors');
      return { layer: node.outboundLayer, inputs: node.inputTensors, outputs: node.outputTensors };
    });
  return { inputs: container.inputs, outputs: container.outputs, nodes };
}

/** The native TensorFlow binding behind tfjs-node's backend. */
interface NativeBinding {
  TF_ATTR_STRING: number;
  TF_ATTR_INT: number;
  TF_ATTR_FLOAT: number;
  TF_ATTR_BOOL: number;
  TF_ATTR_TYPE: number;
  TF_ATTR_SHAPE: number;
  TF_FLOAT: number;
  TF_INT32: number;
  TF_BOOL: number;
  TF_UINT8: number;
  /** TF_LoadLibrary, added by tlx's binding patch (patches/); absent from an unpatched build. */
  loadOpLibrary?: (path: string) => void;
}

export interface NativeBackend {
  binding: NativeBinding;
  executeSingleOutput(name: string, attrs: unknown[], inputs: Tensor[]): Tensor;
  executeMultipleOutputs(name: string, attrs: unknown[], inputs: Tensor[], count: number): Tensor[];
}

let checkedBackend: NativeBackend | undefined;

export function nativeBackend(): NativeBackend {
  if (checkedBackend) return checkedBackend;
  const backend = tf.backend() as unknown as Partial<NativeBackend>;
  if (
    !backend.binding ||
    typeof backend.binding.TF_ATTR_STRING !== 'number' ||
    typeof backend.binding.TF_FLOAT !== 'number'
  )
    throw new TfjsInternalsError('the tensorflow backend has no binding with TF_ATTR_*/TF_* constants');
  if (typeof backend.executeSingleOutput !== 'function' || typeof backend.executeMultipleOutputs !== 'function')
    throw new TfjsInternalsError('the tensorflow backend has no executeSingleOutput/executeMultipleOutputs');
  checkedBackend = backend as NativeBackend;
  return checkedBackend;
}

/** tfjs optimizers read their learning-rate field on every step; schedules set it per epoch. */
export function setOptimizerLearningRate(optimizer: Optimizer, learningRate: number): void {
  const fields = optimizer as unknown as { learningRate?: number };
  if (typeof fields.learningRate !== 'number')
    throw new TfjsInternalsError(`${optimizer.getClassName()} has no numeric learningRate field`);
  fields.learningRate = learningRate;
}

/** Touches every internal once; throws TfjsInternalsError naming this file when one moved. */
export function checkTfjsInternals(): void {
  const input = tf.input({ shape: [2] });
  const output = tf.layers.dense({ units: 1 }).apply(input) as SymbolicTensor;
  const model = tf.model({ inputs: input, outputs: output });
  const graph = graphOf(model);
  if (graph.nodes.length !== 2) throw new TfjsInternalsError(`a two-layer model has ${graph.nodes.length} graph nodes`);
  nativeBackend();
  const optimizer = tf.train.adam(0.1);
  setOptimizerLearningRate(optimizer, 0.01);
  optimizer.dispose();
  model.dispose();
}
