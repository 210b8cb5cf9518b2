import type { Optimizer } from '../config/resolved.ts';
import { elementsPerSample as elements, type CompiledGraph, type GraphSplit, type Step } from '../engine/graph.ts';
import { cachePassBatch } from '../engine/frozen-outputs.ts';
import { tlxOpsAvailable } from '../tfjs/native-ops.ts';

/**
 * The peak memory of a training phase, estimated from the model's graph before its first
 * batch: what the process holds already (TensorFlow, the decoded images, the weights), plus
 * the largest of the phase's moments. Pure: graph shapes and sizes in, bytes out.
 *
 * Throughout the phase (float32 bytes): the frozen Conv -> BatchNorm chains folded once (a
 * filter and a bias each), the optimizer's slots (Adam and RMSprop: 2 per trainable weight, SGD
 * with momentum: 1) and one gradient per trainable weight. Then, at its moments:
 * - the frozen pass on a batch: the batch as float32 pixels and its augmented copy, and the
 *   tensors alive at the pass's widest step (the runner frees each after its last reader);
 * - the training step: every tensor the trainable stage makes stays on the tape until the
 *   backward pass ends, which makes one gradient per tensor it goes through (tfjs frees them
 *   at its end): twice the forward's, on top of the batch's frozen-stage outputs (computed,
 *   or gathered from the cache);
 * - validation without a cache: the whole model off the tape, at its widest step;
 * - with a cache of the frozen stage's outputs (training variants + validation), it is held
 *   through the phase, and twice over for a moment while its batches are joined; the pass
 *   that fills it runs a batch of at least cachePassBatch samples.
 */

/** A moment of a phase: bytes it holds whatever the batch, and bytes per sample of a batch. */
export interface Moment {
  name: 'frozen pass' | 'training step' | 'validation' | 'joining the cache' | 'caching pass';
  fixed: number;
  perSample: number;
}

export interface PhaseMemory {
  /** Bytes held through the phase, by what holds them. */
  held: { foldedWeights: number; optimizerSlots: number; gradients: number; frozenOutputsCache: number };
  moments: Moment[];
}

export interface PhaseMemoryInputs {
  graph: CompiledGraph;
  /** The phase's split at its trainable flags. */
  split: GraphSplit;
  /** Bytes of the weights that train in this phase. */
  trainableWeightBytes: number;
  optimizer: Pick<Optimizer, 'name' | 'momentum'>;
  /** Bytes of cached frozen-stage outputs, 0 when the phase recomputes them every batch. */
  frozenOutputsCacheBytes: number;
}

const floatBytes = 4;

function activationOf(step: Step): string | undefined {
  if (step.kind === 'conv_bn') return step.options.activation;
  const layer = step.layers[0];
  const name = layer.getClassName();
  if (name === 'TlxActivation')
    return (layer as unknown as { activation: string }).activation === 'hard_silu' ? 'HardSwish' : 'Swish';
  return undefined;
}

/**
 * Output-sized tensors a step makes, counting its output: hard-swish and swish one each with
 * tlx's kernels (native/tlx_ops.cc), else x * relu6(x + 3) / 6 (four ops) and x * sigmoid(x)
 * (two); a fused conv's pre-activation one more; BatchNorm
 * alone and dropout (its mask) two; everything else one (ReLU/ReLU6 fuse into the conv).
 */
function tensorsPerOutput(step: Step): number {
  const activation = activationOf(step);
  const ownKernel = tlxOpsAvailable();
  const activationOps =
    activation === 'HardSwish' ? (ownKernel ? 1 : 4) : activation === 'Swish' ? (ownKernel ? 1 : 2) : 0;
  // A residual connection's Add inside a chain: one more on the tape (folded, oneDNN adds in place of the bias pass).
  if (step.kind === 'conv_bn') return (activationOps > 0 ? 1 + activationOps : 1) + (step.residual ? 1 : 0);
  // A base's preprocessing: one pass of tlx's kernel, else each layer's ops (two each).
  if (step.kind === 'affine') return ownKernel ? 1 : 2 * step.layers.length;
  // A squeeze-excite: its gate is per image and channel; only the product is activation-sized.
  if (step.kind === 'excite') return 1;
  if (activationOps > 0) return activationOps;
  const name = step.layers[0].getClassName();
  if (name === 'TlxHardSigmoid') return 3;
  if (
    name === 'TlxInferenceBatchNormalization' ||
    name === 'TlxSeededDropout' ||
    name === 'Dropout' ||
    name === 'Rescaling' ||
    name === 'TlxNormalization' ||
    name === 'TlxChannelRescaling'
  )
    return 2;
  if (
    (name === 'Conv2D' || name === 'DepthwiseConv2D' || name === 'Dense') &&
    step.layers[0].getConfig().activation !== 'linear'
  )
    return 2;
  return 1;
}

/** A convolution: its kernel works on a reordered or packed copy of its input and output (oneDNN's blocked layouts, Eigen's patches). */
function isConvolution(step: Step): boolean {
  const name = step.layers[0].getClassName();
  return step.kind === 'conv_bn' || (step.kind === 'layer' && (name === 'Conv2D' || name === 'DepthwiseConv2D'));
}

/** Elements per sample a convolution's kernel needs beside its input and output while it runs. */
function convolutionWorkspace(graph: CompiledGraph, step: Step): number {
  return isConvolution(step) ? elements(graph, step.inputs[0]) + elements(graph, step.output) : 0;
}

/** Float32 elements per sample alive at the widest point of running `steps` off the tape, outputs freed after their last reader. */
function widestPassElements(
  graph: CompiledGraph,
  steps: readonly Step[],
  inputs: readonly number[],
  kept: ReadonlySet<number>,
): number {
  const lastUse = new Map<number, number>();
  steps.forEach((step, index) => step.inputs.forEach((id) => lastUse.set(id, index)));
  const live = new Map<number, number>(inputs.map((id) => [id, elements(graph, id)]));
  let liveSum = [...live.values()].reduce((a, b) => a + b, 0);
  let widest = liveSum;
  steps.forEach((step, index) => {
    const output = elements(graph, step.output);
    // Inside the step, its inputs, its output, its intermediates and its kernel's workspace are alive together.
    widest = Math.max(widest, liveSum + output * tensorsPerOutput(step) + convolutionWorkspace(graph, step));
    live.set(step.output, output);
    liveSum += output;
    for (const id of step.inputs) {
      if (lastUse.get(id) === index && !kept.has(id) && live.has(id)) {
        liveSum -= live.get(id)!;
        live.delete(id);
      }
    }
    widest = Math.max(widest, liveSum);
  });
  return widest;
}

/** Optimizer slot variables per trainable weight, as tfjs's optimizers create them. */
export function slotsPerWeight(optimizer: PhaseMemoryInputs['optimizer']): number {
  switch (optimizer.name) {
    case 'adam':
      return 2;
    case 'rmsprop':
      // Mean squares and moments, whatever the momentum (tlx's RMSprop is not centered).
      return 2;
    case 'sgd':
      return optimizer.momentum ? 1 : 0;
  }
}

/** Float32 bytes of a list of weights. */
export function weightBytes(weights: readonly { shape: readonly (number | null)[] }[]): number {
  return weights.reduce((sum, weight) => sum + floatBytes * weight.shape.reduce((a: number, b) => a * (b ?? 1), 1), 0);
}

/** The frozen chains folded once: a filter shaped as the conv's kernel and a bias per output channel. */
function foldedWeightBytes(split: GraphSplit): number {
  return split.frozen.reduce(
    (sum, step) =>
      step.kind === 'conv_bn'
        ? sum + weightBytes([step.conv.weights[0]]) + floatBytes * (step.batchNorm.weights[0].shape[0] ?? 0)
        : sum,
    0,
  );
}

export function phaseMemory(inputs: PhaseMemoryInputs): PhaseMemory {
  const { graph, split } = inputs;
  const cache = inputs.frozenOutputsCacheBytes;
  const held = {
    foldedWeights: foldedWeightBytes(split),
    optimizerSlots: slotsPerWeight(inputs.optimizer) * inputs.trainableWeightBytes,
    gradients: inputs.trainableWeightBytes,
    frozenOutputsCache: cache,
  };
  const always = held.foldedWeights + held.optimizerSlots + held.gradients + cache;
  const pixels = 2 * elements(graph, graph.input);
  const frozenOutputs = split.frozenOutputs.reduce((total, id) => total + elements(graph, id), 0);
  const tape = split.trainable.reduce(
    (total, step) => total + elements(graph, step.output) * tensorsPerOutput(step),
    0,
  );
  // Backward makes a gradient per tensor of the tape, and a convolution one more (its output's, masked by the clamp, and its input's).
  const gradients = split.trainable.reduce(
    (total, step) => total + elements(graph, step.output) * (tensorsPerOutput(step) + (isConvolution(step) ? 1 : 0)),
    0,
  );
  const workspace = Math.max(0, ...split.trainable.map((step) => convolutionWorkspace(graph, step)));
  const frozenPass = widestPassElements(
    graph,
    split.frozen,
    [graph.input],
    new Set([graph.input, ...split.frozenOutputs]),
  );
  const moments: Moment[] = [
    { name: 'frozen pass', fixed: always, perSample: floatBytes * (pixels + frozenPass) },
    { name: 'training step', fixed: always, perSample: floatBytes * (frozenOutputs + tape + gradients + workspace) },
  ];
  if (cache > 0)
    moments.push(
      { name: 'joining the cache', fixed: always + cache, perSample: 0 },
      // The pass that fills the cache runs at least cachePassBatch samples at once.
      {
        name: 'caching pass',
        fixed: always + cachePassBatch(graph, split.frozen, 0) * floatBytes * (pixels + frozenPass),
        perSample: 0,
      },
    );
  else
    moments.push({
      name: 'validation',
      fixed: always,
      perSample:
        floatBytes * (pixels / 2 + widestPassElements(graph, graph.steps, [graph.input], new Set([graph.input]))),
    });
  return { held, moments };
}

/** The phase's peak over what the process holds already (`resident`), at a batch of `batch` samples, and the moment it happens. */
export function peakOf(memory: PhaseMemory, resident: number, batch: number): { bytes: number; moment: Moment } {
  const at = memory.moments.map((moment) => ({ bytes: resident + moment.fixed + batch * moment.perSample, moment }));
  return at.reduce((a, b) => (b.bytes > a.bytes ? b : a));
}

/** The largest batch whose peak stays within `available` bytes (0: not even one sample). */
export function largestBatchWithin(memory: PhaseMemory, resident: number, available: number): number {
  const batches = memory.moments.map((moment) => {
    const room = available - resident - moment.fixed;
    if (room < 0) return 0;
    return moment.perSample > 0 ? Math.floor(room / moment.perSample) : Number.POSITIVE_INFINITY;
  });
  return Math.max(0, Math.min(...batches));
}
