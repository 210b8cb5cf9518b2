import type { LayersModel, Tensor, Tensor1D, Tensor4D, Variable } from '@tensorflow/tfjs-node';
import { graphOf, isContainer, type GraphContainer } from '../tfjs/internals.ts';
import { tf } from '../tfjs/tf.ts';
import {
  fusedConv2d,
  fusedDepthwiseConv2d,
  fusedDepthwiseSwishMean,
  type FusedActivation,
  type FusedConvOptions,
} from './fused-kernels.ts';
import {
  Activation,
  affineChainTerms,
  affineTermNames,
  channelAffine,
  extendsAffineChain,
  GlobalAveragePooling2D,
  InferenceBatchNormalization,
  InferenceDropout,
  ReLU,
  ReLU6,
  SeededDropout,
} from '../models/layers.ts';
import { multiply } from '../models/activations.ts';
import { applyDense, applyPointwiseConv, isMatrixDense, isPointwiseConv } from './pointwise.ts';
import { mergeSqueezeExcites, runSqueezeExcite, type SqueezeExciteStep } from './squeeze-excite.ts';
import { clampActivation, convBnClamp, foldConvBn, type ConvBnWeights } from './taped-conv-bn.ts';

/**
 * A functional model (nested models flattened) as a list of steps in execution order,
 * which tlx runs in two stages:
 *
 * - the frozen stage: every step that depends on no trainable weight. It runs outside the
 *   gradient tape, with each Conv -> BatchNorm (-> ReLU / ReLU6) chain folded into one fused
 *   native kernel (BatchNorm's scale and offset folded into the filter and a bias), as
 *   Keras's compiled graph does. Its outputs can be cached when the input is the same
 *   every epoch (no augmentation).
 * - the trainable stage: the rest, recorded on the tape. Each Conv -> BatchNorm chain is
 *   folded there too, on the tape, and runs as one fused op with its own gradient
 *   (taped-conv-bn.ts); the other layers run one by one. Gradients flow to the weights only:
 *   nothing asks for the gradient of the stage's inputs.
 *
 * A ZeroPadding2D that only feeds a strided chain is taken into it as SAME padding, a
 * base's preprocessing (Rescaling, Normalization, a per-channel Rescaling in a row) is one
 * pass of tlx's affine kernel, a squeeze-excite after its pooling one step
 * (squeeze-excite.ts), and a residual connection's Add part of the linear chain before it.
 *
 * Inference (evaluation, prediction) is the frozen stage over the whole model.
 */

export type Layer = LayersModel['layers'][number];
type TensorId = number;

export type Step =
  | { kind: 'layer'; layers: [Layer]; inputs: TensorId[]; output: TensorId }
  | {
      kind: 'conv_bn';
      layers: Layer[];
      conv: Layer;
      batchNorm: InferenceBatchNormalization;
      activation?: Layer;
      depthwise: boolean;
      options: FusedConvOptions;
      /** The conv's input, and a residual connection's shortcut when `residual` is set. */
      inputs: [TensorId] | [TensorId, TensorId];
      output: TensorId;
      /** The GlobalAveragePooling2D step reading a depthwise swish chain's output: its folded kernel pools in the same pass. */
      squeeze?: Step;
      /** The Add of a residual connection taken into a linear chain (its shortcut is inputs[1]). */
      residual?: { add: Layer; shortcutFirst: boolean };
    }
  | { kind: 'affine'; layers: Layer[]; inputs: [TensorId]; output: TensorId }
  | SqueezeExciteStep;

export interface CompiledGraph {
  input: TensorId;
  output: TensorId;
  steps: Step[];
  /** Per-sample shape of every tensor (for sizing caches). */
  shapes: Map<TensorId, number[]>;
}

function flatten(model: LayersModel): {
  steps: Step[];
  input: TensorId;
  output: TensorId;
  shapes: Map<TensorId, number[]>;
} {
  // A nested model's inner inputs and outputs are the outer tensors under other ids.
  const alias = new Map<TensorId, TensorId>();
  const resolve = (id: TensorId): TensorId => {
    let current = id;
    while (alias.has(current)) current = alias.get(current)!;
    return current;
  };
  const steps: Step[] = [];
  const shapes = new Map<TensorId, number[]>();
  const visit = (container: GraphContainer) => {
    for (const node of container.nodes) {
      const layer = node.layer;
      if (layer.getClassName() === 'InputLayer') continue; // its tensor is the container's input
      if (layer instanceof InferenceDropout) {
        // Never drops (the base runs in inference mode): its output is its input.
        alias.set(node.outputs[0].id, node.inputs[0].id);
        continue;
      }
      if (isContainer(layer)) {
        const inner = graphOf(layer);
        inner.inputs.forEach((tensor, i) => alias.set(tensor.id, node.inputs[i].id));
        visit(inner);
        inner.outputs.forEach((tensor, i) => alias.set(node.outputs[i].id, tensor.id));
        continue;
      }
      if (node.outputs.length !== 1)
        throw new Error(`layer ${layer.name} has ${node.outputs.length} outputs; tlx's graph runner expects one`);
      const output = node.outputs[0];
      shapes.set(output.id, output.shape.slice(1) as number[]);
      steps.push({
        kind: 'layer',
        layers: [layer],
        inputs: node.inputs.map((tensor) => resolve(tensor.id)),
        output: output.id,
      });
    }
  };
  const container = graphOf(model);
  visit(container);
  const input = container.inputs[0];
  shapes.set(input.id, input.shape.slice(1) as number[]);
  return { steps, input: input.id, output: resolve(container.outputs[0].id), shapes };
}

function className(layer: Layer): string {
  return layer.getClassName();
}

/** How many steps read each tensor (the graph's output counts as read once more). */
function readerCounts(steps: readonly Step[], output: TensorId): Map<TensorId, number> {
  const readers = new Map<TensorId, number>([[output, 1]]);
  for (const step of steps) for (const id of step.inputs) readers.set(id, (readers.get(id) ?? 0) + 1);
  return readers;
}

/** A Conv2D / DepthwiseConv2D whose config a fused kernel can run as is. */
function foldableConv(layer: Layer): boolean {
  const name = className(layer);
  if (name !== 'Conv2D' && name !== 'DepthwiseConv2D') return false;
  const config = layer.getConfig();
  const dilation = [config.dilationRate].flat() as number[];
  return (
    config.dataFormat === 'channelsLast' &&
    dilation.every((d) => d === 1) &&
    (config.activation === 'linear' || config.activation === undefined) &&
    (name === 'Conv2D' || config.depthMultiplier === 1)
  );
}

/** The fused kernel's activation for a layer that can join a Conv -> BatchNorm chain. */
function fusableActivation(layer: Layer): FusedActivation | undefined {
  if (layer instanceof ReLU6) return 'Relu6';
  if (layer instanceof ReLU) return 'Relu';
  if (layer instanceof Activation) return layer.activation === 'hard_silu' ? 'HardSwish' : 'Swish';
  return undefined;
}

/** Merges Conv -> BatchNorm (-> ReLU / ReLU6 / hard-swish / swish) chains whose intermediate tensors nobody else reads. */
function fuseChains(steps: Step[], output: TensorId): Step[] {
  const readers = readerCounts(steps, output);
  const consumer = (id: TensorId): number | undefined => {
    if (readers.get(id) !== 1 || id === output) return undefined;
    const index = steps.findIndex((step) => step.inputs.includes(id));
    return index >= 0 ? index : undefined;
  };
  const merged = new Set<number>();
  const result: Step[] = [];
  steps.forEach((step, index) => {
    if (merged.has(index)) return;
    const conv = step.layers[0];
    const bnIndex = step.kind === 'layer' && foldableConv(conv) ? consumer(step.output) : undefined;
    const bn = bnIndex !== undefined ? steps[bnIndex].layers[0] : undefined;
    if (bnIndex === undefined || !(bn instanceof InferenceBatchNormalization)) {
      result.push(step);
      return;
    }
    merged.add(bnIndex);
    const reluIndex = consumer(steps[bnIndex].output);
    const activation = reluIndex !== undefined ? fusableActivation(steps[reluIndex].layers[0]) : undefined;
    const relu = activation ? reluIndex : undefined;
    if (relu !== undefined) merged.add(relu);
    const config = conv.getConfig();
    const strides = [config.strides].flat() as number[];
    result.push({
      kind: 'conv_bn',
      layers: [conv, bn, ...(relu !== undefined ? [steps[relu].layers[0]] : [])],
      conv,
      batchNorm: bn,
      activation: relu !== undefined ? steps[relu].layers[0] : undefined,
      depthwise: className(conv) === 'DepthwiseConv2D',
      options: {
        strides: [strides[0], strides[1] ?? strides[0]],
        padding: config.padding === 'same' ? 'SAME' : 'VALID',
        activation,
      },
      inputs: [step.inputs[0]],
      output: steps[relu ?? bnIndex].output,
    });
  });
  return result;
}

/** The padding TensorFlow's SAME adds before and after, per spatial axis, for a conv on `size`. */
function samePadding(size: number[], kernel: number[], strides: number[]): [number, number][] {
  return [0, 1].map((axis) => {
    const out = Math.ceil(size[axis] / strides[axis]);
    const total = Math.max((out - 1) * strides[axis] + kernel[axis] - size[axis], 0);
    return [Math.floor(total / 2), total - Math.floor(total / 2)];
  });
}

/**
 * Keras pads before a strided conv with a ZeroPadding2D layer and a VALID conv (its
 * `correct_pad`), which is exactly the padding SAME adds there. A chain that reads such a
 * padding (and nothing else does) takes it in as SAME: one pass over the activation and
 * one slice of its gradient fewer.
 */
function absorbPadding(steps: Step[], shapes: Map<TensorId, number[]>, output: TensorId): Step[] {
  const readers = readerCounts(steps, output);
  const producer = new Map(steps.map((step) => [step.output, step]));
  const absorbed = new Set<Step>();
  const result = steps.map((step): Step => {
    if (step.kind !== 'conv_bn' || step.options.padding !== 'VALID') return step;
    const padding = producer.get(step.inputs[0]);
    if (
      !padding ||
      padding.kind !== 'layer' ||
      className(padding.layers[0]) !== 'ZeroPadding2D' ||
      readers.get(padding.output) !== 1
    )
      return step;
    const config = padding.layers[0].getConfig();
    const inputShape = shapes.get(padding.inputs[0]);
    if (config.dataFormat !== 'channelsLast' || !inputShape) return step;
    const kernel = [step.conv.getConfig().kernelSize].flat() as number[];
    const same = samePadding(inputShape, [kernel[0], kernel[1] ?? kernel[0]], step.options.strides);
    if (JSON.stringify(config.padding) !== JSON.stringify(same)) return step;
    absorbed.add(padding);
    return {
      ...step,
      layers: [padding.layers[0], ...step.layers],
      inputs: [padding.inputs[0]],
      options: { ...step.options, padding: 'SAME' },
    };
  });
  return result.filter((step) => !absorbed.has(step));
}

/**
 * A residual connection: an Add of a linear chain's output (no activation; nothing else reads
 * it) and a shortcut of the same shape. Folded, oneDNN's conv adds the shortcut as it writes
 * its output, as grappler fuses a Keras model's Conv2D + BiasAdd + Add; the chain moves to the
 * Add's place (where the shortcut is computed too) with the shortcut as its second input.
 */
function mergeResidualAdds(steps: Step[], shapes: Map<TensorId, number[]>, output: TensorId): Step[] {
  const readers = readerCounts(steps, output);
  const producer = new Map(steps.map((step) => [step.output, step]));
  const absorbed = new Set<Step>();
  const result = steps.map((step): Step => {
    if (step.kind !== 'layer' || className(step.layers[0]) !== 'Add' || step.inputs.length !== 2) return step;
    for (const [index, id] of step.inputs.entries()) {
      const chain = producer.get(id);
      const shortcut = step.inputs[1 - index];
      if (
        chain?.kind !== 'conv_bn' ||
        chain.depthwise ||
        chain.options.activation ||
        chain.residual ||
        readers.get(id) !== 1 ||
        shortcut === id ||
        JSON.stringify(shapes.get(shortcut)) !== JSON.stringify(shapes.get(id))
      )
        continue;
      absorbed.add(chain);
      return {
        ...chain,
        layers: [...chain.layers, step.layers[0]],
        inputs: [chain.inputs[0], shortcut],
        output: step.output,
        residual: { add: step.layers[0], shortcutFirst: index === 1 },
      };
    }
    return step;
  });
  return result.filter((step) => !absorbed.has(step));
}

/** Rescaling / Normalization / per-channel Rescaling layers in a row, each read only by the next: one affine step. */
function mergeAffineChains(steps: Step[], output: TensorId): Step[] {
  const readers = readerCounts(steps, output);
  const result: Step[] = [];
  for (const step of steps) {
    const layer = step.layers[0];
    if (step.kind !== 'layer' || step.inputs.length !== 1 || !affineTermNames(layer)) {
      result.push(step);
      continue;
    }
    const previous = result[result.length - 1];
    if (
      previous?.kind === 'affine' &&
      previous.output === step.inputs[0] &&
      readers.get(previous.output) === 1 &&
      extendsAffineChain(previous.layers, layer)
    )
      result[result.length - 1] = { ...previous, layers: [...previous.layers, layer], output: step.output };
    else result.push({ kind: 'affine', layers: [layer], inputs: [step.inputs[0]], output: step.output });
  }
  return result;
}

/** Links each depthwise chain ending in swish to the pooling step that reads its output (EfficientNet's squeeze-excite). */
function attachSqueezes(steps: Step[]): Step[] {
  const pooling = new Map(
    steps.flatMap((step) => (step.layers[0] instanceof GlobalAveragePooling2D ? [[step.inputs[0], step]] : [])),
  );
  return steps.map((step) =>
    step.kind === 'conv_bn' && step.depthwise && step.options.activation === 'Swish' && pooling.has(step.output)
      ? { ...step, squeeze: pooling.get(step.output) }
      : step,
  );
}

const compiled = new WeakMap<LayersModel, CompiledGraph>();

export function compileGraph(model: LayersModel): CompiledGraph {
  let graph = compiled.get(model);
  if (!graph) {
    const flat = flatten(model);
    const chains = fuseChains(mergeAffineChains(flat.steps, flat.output), flat.output);
    const excites = mergeSqueezeExcites(chains, flat.output);
    const padded = absorbPadding(excites, flat.shapes, flat.output);
    graph = { ...flat, steps: attachSqueezes(mergeResidualAdds(padded, flat.shapes, flat.output)) };
    compiled.set(model, graph);
  }
  return graph;
}

function hasTrainableWeights(step: Step): boolean {
  return step.layers.some((layer) => layer.trainableWeights.length > 0);
}

/** Layers whose output differs between training and inference (dropout) stay in the trainable stage. */
function dependsOnTrainingFlag(step: Step): boolean {
  return step.layers.some((layer) => layer instanceof SeededDropout || className(layer) === 'Dropout');
}

export interface GraphSplit {
  frozen: Step[];
  trainable: Step[];
  /** Tensors the frozen stage hands to the trainable stage (or the output, if nothing trains). */
  frozenOutputs: TensorId[];
}

/** Splits at the layers' current trainable flags (or at the steps `trains` names). */
export function splitGraph(graph: CompiledGraph, trains: (step: Step) => boolean = hasTrainableWeights): GraphSplit {
  const live = new Set<TensorId>(); // tensors that depend on a trainable weight or the training flag
  const frozen: Step[] = [];
  const trainable: Step[] = [];
  for (const step of graph.steps) {
    if (trains(step) || dependsOnTrainingFlag(step) || step.inputs.some((id) => live.has(id))) {
      live.add(step.output);
      trainable.push(step);
    } else {
      frozen.push(step);
    }
  }
  const available = new Set<TensorId>([graph.input, ...frozen.map((step) => step.output)]);
  const frozenOutputs = new Set<TensorId>();
  for (const step of trainable) for (const id of step.inputs) if (available.has(id)) frozenOutputs.add(id);
  if (trainable.length === 0) frozenOutputs.add(graph.output);
  return { frozen, trainable, frozenOutputs: [...frozenOutputs] };
}

/** Float32 elements of one sample of a tensor of the graph. */
export function elementsPerSample(graph: CompiledGraph, id: TensorId): number {
  return (graph.shapes.get(id) ?? []).reduce((a, b) => a * b, 1);
}

/** Bytes per sample of a split's frozen layers' outputs (what caching the frozen stage's outputs costs). */
export function frozenOutputBytesPerSample(graph: CompiledGraph, split: GraphSplit): number {
  return split.frozenOutputs.reduce((sum, id) => sum + 4 * elementsPerSample(graph, id), 0);
}

/**
 * The part of the frozen stage that depends only on `layers`' weights: the split a phase
 * would have if only these layers were frozen (a sweep's smallest fine_tune_at). It is part
 * of every such phase's frozen stage, so its outputs can be shared between trials.
 */
export function prefixSplit(graph: CompiledGraph, layers: ReadonlySet<Layer>): GraphSplit {
  return splitGraph(
    graph,
    (step) => hasTrainableWeights(step) || step.layers.some((layer) => layer.weights.length > 0 && !layers.has(layer)),
  );
}

/** Folded filter and bias per conv_bn step, computed from the current weights. */
export type FoldedWeights = Map<Step, { filter: Tensor4D; bias: Tensor1D }>;

type ConvBnStep = Extract<Step, { kind: 'conv_bn' }>;

/** Per trainable chain, its BatchNorm's 1 / sqrt(moving variance + epsilon). */
type InverseStds = Map<Step, Tensor1D>;

/** A chain's weights, BatchNorm's moving statistics' part given (a phase computes it once). */
function chainWeights(step: ConvBnStep, inverseStd: Tensor1D): ConvBnWeights {
  const { gamma, beta, mean } = step.batchNorm.affineParts();
  const [kernel, convBias] = step.conv.weights.map((weight) => weight.read()) as [Tensor4D, Tensor1D | undefined];
  return { kernel, convBias, gamma, beta, inverseStd, mean };
}

/** Folds every chain among `steps` with the weights as they are now (a chain's inverseStd from `inverseStds` when there). */
function foldWeights(steps: readonly Step[], inverseStds?: InverseStds): FoldedWeights {
  const folded: FoldedWeights = new Map();
  for (const step of steps) {
    if (step.kind !== 'conv_bn') continue;
    folded.set(
      step,
      tf.tidy(() => {
        const inverseStd = inverseStds?.get(step) ?? step.batchNorm.inverseStd();
        const { filter, bias } = foldConvBn(step.depthwise, chainWeights(step, inverseStd));
        return { filter: tf.keep(filter), bias: tf.keep(bias) };
      }),
    );
  }
  return folded;
}

function disposeFolded(folded: FoldedWeights): void {
  for (const { filter, bias } of folded.values()) tf.dispose([filter, bias]);
  folded.clear();
}

function runConvBn(
  step: ConvBnStep,
  x: Tensor4D,
  weights: { filter: Tensor4D; bias: Tensor1D },
  shortcut: Tensor4D | undefined,
): Tensor4D {
  return step.depthwise
    ? fusedDepthwiseConv2d(x, weights.filter, weights.bias, step.options)
    : fusedConv2d(x, weights.filter, weights.bias, step.options, shortcut);
}

/**
 * A chain whose weights may train: one op on the tape with its own gradient, BatchNorm folded
 * inside it (taped-conv-bn.ts). An activation other than ReLU / ReLU6 runs as its layer.
 */
function runTapedConvBn(
  step: ConvBnStep,
  x: Tensor4D,
  shortcut: Tensor | undefined,
  inverseStd: Tensor1D,
  inputGradient: boolean,
  training: boolean,
): Tensor {
  return tf.tidy(() => {
    const chain = {
      depthwise: step.depthwise,
      pointwise: !step.depthwise && isPointwiseConv(step.conv),
      options: step.options,
    };
    const y = convBnClamp(chain, x, chainWeights(step, inverseStd), inputGradient);
    const activated =
      step.activation && !clampActivation(step.options.activation)
        ? applyLayer(step.activation, [y], { training, onTape: true })
        : y;
    if (!step.residual || !shortcut) return activated;
    const operands = step.residual.shortcutFirst ? [shortcut, activated] : [activated, shortcut];
    return applyLayer(step.residual.add, operands, { training, onTape: true });
  });
}

function applyLayer(
  layer: Layer,
  inputs: Tensor[],
  options: { training: boolean; seed?: number; onTape: boolean },
): Tensor {
  const { training, seed } = options;
  if (inputs.length === 1 && isPointwiseConv(layer))
    return applyPointwiseConv(layer, inputs[0] as Tensor4D, options.onTape);
  if (inputs.length === 1 && isMatrixDense(layer, inputs[0])) return applyDense(layer, inputs[0], options.onTape);
  // tfjs-layers' Multiply is tf.mul, whose gradient copies each operand once more (squeeze-excite gates).
  if (inputs.length === 2 && layer.getClassName() === 'Multiply') return multiply(inputs[0], inputs[1]);
  return layer.apply(
    inputs.length === 1 ? inputs[0] : inputs,
    seed === undefined ? { training } : { training, seed },
  ) as Tensor;
}

/** A folded depthwise swish chain and its squeeze-excite's pooling from one pass: [chain output, pooled output]. */
function runSqueezedChain(
  step: ConvBnStep,
  squeeze: Step,
  x: Tensor4D,
  weights: { filter: Tensor4D; bias: Tensor1D },
): [Tensor, Tensor] {
  const [y, mean] = fusedDepthwiseSwishMean(x, weights.filter, weights.bias, step.options);
  if (!(squeeze.layers[0] as GlobalAveragePooling2D).keepdims) return [y, mean];
  const pooled = mean.reshape([mean.shape[0], 1, 1, mean.shape[1]]);
  mean.dispose();
  return [y, pooled];
}

/** A base's preprocessing chain as one pass of tlx's affine kernel. */
function runAffine(step: Extract<Step, { kind: 'affine' }>, x: Tensor): Tensor {
  return tf.tidy(() => channelAffine(x, affineChainTerms(step.layers, x.shape[x.shape.length - 1] ?? 0)));
}

/**
 * Runs steps on concrete tensors, reading and adding to `values` (tensor id -> tensor).
 * Folded steps run their fused kernel; everything else its layers, in order. Tensors a
 * later step no longer needs are disposed unless listed in `keep` (off the tape only:
 * this keeps an inference pass's peak memory to a few activations).
 */
function runSteps(
  steps: readonly Step[],
  values: Map<TensorId, Tensor>,
  options: {
    training: boolean;
    seed?: number;
    folded?: FoldedWeights;
    /** Each taped chain's BatchNorm 1 / sqrt(variance + epsilon), computed once for the phase. */
    inverseStds?: InverseStds;
    keep?: ReadonlySet<TensorId>;
  },
): void {
  const lastUse = new Map<TensorId, number>();
  const given = new Set(values.keys()); // no step's gradient flows into these
  const pooledAlready = new Set<Step>(); // squeeze steps whose output a folded chain made
  const members = new Set(steps);
  // Off the tape when the chains run folded (frozen stage, inference): nothing takes gradients there.
  const layerOptions = { training: options.training, seed: options.seed, onTape: !options.folded };
  steps.forEach((step, index) => step.inputs.forEach((id) => lastUse.set(id, index)));
  steps.forEach((step, index) => {
    const inputs = step.inputs.map((id) => {
      const value = values.get(id);
      if (!value) throw new Error(`graph runner: tensor ${id} is not computed before ${step.layers[0].name}`);
      return value;
    });
    const weights = step.kind === 'conv_bn' ? options.folded?.get(step) : undefined;
    let output: Tensor;
    if (pooledAlready.has(step)) {
      output = values.get(step.output)!;
    } else if (step.kind === 'conv_bn' && weights && step.squeeze && members.has(step.squeeze)) {
      const [y, pooled] = runSqueezedChain(step, step.squeeze, inputs[0] as Tensor4D, weights);
      values.set(step.squeeze.output, pooled);
      pooledAlready.add(step.squeeze);
      output = y;
    } else if (step.kind === 'conv_bn' && weights) {
      output = runConvBn(step, inputs[0] as Tensor4D, weights, inputs[1] as Tensor4D | undefined);
    } else if (step.kind === 'conv_bn') {
      const inverseStd = options.inverseStds?.get(step);
      if (!inverseStd) throw new Error(`graph runner: no BatchNorm statistics for the taped chain ${step.conv.name}`);
      const [x, shortcut] = inputs as [Tensor4D, Tensor | undefined];
      output = runTapedConvBn(step, x, shortcut, inverseStd, !given.has(step.inputs[0]), options.training);
    } else if (step.kind === 'excite') {
      const apply = (layer: Layer, xs: Tensor[]) => applyLayer(layer, xs, layerOptions);
      output = runSqueezeExcite(step, inputs[0], inputs[1], !layerOptions.onTape, apply);
    } else if (step.kind === 'affine' && options.folded) {
      // Off the tape only: tlx's kernel has no gradient (on the tape the layers run one by one).
      output = runAffine(step, inputs[0]);
    } else {
      output = step.layers.reduce((xs: Tensor[], layer) => [applyLayer(layer, xs, layerOptions)], inputs)[0];
    }
    values.set(step.output, output);
    for (const id of step.inputs) {
      if (options.keep && lastUse.get(id) === index && !options.keep.has(id)) {
        values.get(id)!.dispose();
        values.delete(id);
      }
    }
  });
}

/**
 * Runs steps off the tape from the images, with folded weights where they exist; returns
 * the requested tensors (the images themselves as a copy, so the caller owns every result).
 */
function runFrozen(
  graph: CompiledGraph,
  steps: readonly Step[],
  folded: FoldedWeights,
  images: Tensor,
  outputs: readonly TensorId[],
  keep: ReadonlySet<TensorId>,
): Tensor[] {
  return tf.tidy(() => {
    const values = new Map<TensorId, Tensor>([[graph.input, images]]);
    runSteps(steps, values, { training: false, folded, keep });
    return outputs.map((id) => (id === graph.input ? images.clone() : values.get(id)!));
  });
}

/**
 * One phase's view of a model: the frozen stage with its weights folded once (they do not
 * change during the phase), and the trainable stage.
 */
export class StagedModel {
  readonly graph: CompiledGraph;
  readonly split: GraphSplit;
  readonly variables: Variable[];
  private readonly folded: FoldedWeights;
  /** The trainable chains' moving statistics do not change either (BatchNorm runs in inference mode). */
  private readonly inverseStds: InverseStds;
  private readonly kept: ReadonlySet<TensorId>;

  constructor(readonly model: LayersModel) {
    this.graph = compileGraph(model);
    this.split = splitGraph(this.graph);
    this.folded = foldWeights(this.split.frozen);
    this.inverseStds = new Map(
      this.split.trainable.flatMap((step) => (step.kind === 'conv_bn' ? [[step, step.batchNorm.inverseStd()]] : [])),
    );
    this.kept = new Set([...this.split.frozenOutputs, this.graph.input]);
    this.variables = model.trainableWeights.map((weight) => weight.read() as Variable);
  }

  /** images -> the frozen layers' outputs tensors, outside any tape (the caller disposes them). */
  frozen(images: Tensor): Tensor[] {
    return runFrozen(this.graph, this.split.frozen, this.folded, images, this.split.frozenOutputs, this.kept);
  }

  /** images -> a prefix's frozen layers' outputs (a prefixSplit of this model whose steps are all frozen now). */
  frozenPrefix(prefix: GraphSplit, images: Tensor): Tensor[] {
    return runFrozen(
      this.graph,
      prefix.frozen,
      this.folded,
      images,
      prefix.frozenOutputs,
      new Set([...prefix.frozenOutputs, this.graph.input]),
    );
  }

  /**
   * A prefix's frozen layers' outputs -> this stage's frozen layers' outputs, through the frozen steps after the prefix:
   * with frozenPrefix, the same kernels in the same order as frozen(). The inputs stay the
   * caller's; every result is new.
   */
  frozenAfterPrefix(prefix: GraphSplit, inputs: Tensor[]): Tensor[] {
    const inPrefix = new Set(prefix.frozen);
    const rest = this.split.frozen.filter((step) => !inPrefix.has(step));
    const given = new Set(prefix.frozenOutputs);
    return tf.tidy(() => {
      const values = new Map<TensorId, Tensor>(prefix.frozenOutputs.map((id, i) => [id, inputs[i]]));
      runSteps(rest, values, { training: false, folded: this.folded, keep: new Set([...this.kept, ...given]) });
      return this.split.frozenOutputs.map((id) => (given.has(id) ? values.get(id)!.clone() : values.get(id)!));
    });
  }

  /**
   * The frozen layers' outputs tensors -> logits, through the trainable layers (taped inside minimize).
   * `seed` draws the step's dropout masks when training.
   */
  trainable(frozenOutputs: Tensor[], training: boolean, seed?: number): Tensor {
    return this.runTrainable(frozenOutputs, { training, seed, inverseStds: this.inverseStds });
  }

  /**
   * The trainable stage off the tape for inference (validation), every chain folded once with
   * the weights as they are now: a validation pass runs many batches on the same weights.
   */
  trainableInference(): { logits(frozenOutputs: Tensor[]): Tensor; dispose(): void } {
    const folded = foldWeights(this.split.trainable, this.inverseStds);
    return {
      logits: (frozenOutputs) => this.runTrainable(frozenOutputs, { training: false, folded }),
      dispose: () => disposeFolded(folded),
    };
  }

  private runTrainable(frozenOutputs: Tensor[], options: Parameters<typeof runSteps>[2]): Tensor {
    if (this.split.trainable.length === 0) return frozenOutputs[0].clone();
    return tf.tidy(() => {
      const values = new Map<TensorId, Tensor>(this.split.frozenOutputs.map((id, i) => [id, frozenOutputs[i]]));
      runSteps(this.split.trainable, values, options);
      return values.get(this.graph.output)!;
    });
  }

  dispose(): void {
    disposeFolded(this.folded);
    tf.dispose([...this.inverseStds.values()]);
    this.inverseStds.clear();
  }
}

/**
 * Logits for images with every Conv -> BatchNorm chain folded, from the weights as they
 * are now (fold once, run many batches, then dispose).
 */
export class FoldedInference {
  private readonly graph: CompiledGraph;
  private readonly folded: FoldedWeights;
  private readonly kept: ReadonlySet<TensorId>;

  constructor(model: LayersModel) {
    this.graph = compileGraph(model);
    this.folded = foldWeights(this.graph.steps);
    this.kept = new Set([this.graph.input]);
  }

  logits(images: Tensor): Tensor {
    return runFrozen(this.graph, this.graph.steps, this.folded, images, [this.graph.output], this.kept)[0];
  }

  dispose(): void {
    disposeFolded(this.folded);
  }
}
