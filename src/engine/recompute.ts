import {
  elementsPerSample,
  frozenOutputBytesPerSample,
  prefixSplit,
  type CompiledGraph,
  type GraphSplit,
  type Layer,
  type Step,
} from './graph.ts';

/**
 * What is cheaper to compute again than to keep. A cache of frozen layers' outputs pays in
 * bytes written once and read every epoch; recomputing a few frozen layers pays in
 * multiply-accumulates every step. Where a frozen stage ends in a wide tensor (MobileNetV2 at
 * fine_tune_at 100 hands over a 1x1 expansion's 576 channels beside its 96-channel input),
 * keeping the narrow tensor below it and running the expansion per step keeps a seventh of
 * the bytes for a few percent more arithmetic.
 */

/**
 * Recomputing at most this share of a step's training arithmetic (the trainable layers'
 * forward pass and its gradients, three forward passes' worth) is worth a narrower cache.
 */
const recomputeShare = 0.1;

/**
 * One byte kept per sample costs about as much time as this many multiply-accumulates
 * recomputed per sample: fashion60k on a 2-core AVX-512 VM wrote its kept rows at ~4 ns a byte
 * and read them back at 2-6 ns a byte per epoch, while its 1x1 convolutions ran at ~50 G
 * multiply-accumulates a second (0.02 ns each).
 */
const macsPerByte = 256;

/** Multiply-accumulates of one sample through a step's convolution or dense layer (elementwise ops, BatchNorm and pooling left out). */
export function stepMacs(graph: CompiledGraph, step: Step): number {
  // A squeeze-excite: two products on the pooled means, [channels] -> [reduced] -> [channels].
  if (step.kind === 'excite')
    return 2 * elementsPerSample(graph, step.inputs[1]) * (step.reduce.getConfig().filters as number);
  const layer = step.kind === 'conv_bn' ? step.conv : step.layers[0];
  const kind = layer.getClassName();
  if (kind !== 'Conv2D' && kind !== 'DepthwiseConv2D' && kind !== 'Dense') return 0;
  const input = graph.shapes.get(step.inputs[0]) ?? [];
  // A conv_bn step's output is after its activation: the conv's shape.
  const outputs = elementsPerSample(graph, step.output);
  const inputChannels = input[input.length - 1] ?? 0;
  if (kind === 'Dense') return inputChannels * outputs;
  const kernel = [layer.getConfig().kernelSize].flat() as number[];
  const window = (kernel[0] ?? 1) * (kernel[1] ?? kernel[0] ?? 1);
  return kind === 'DepthwiseConv2D' ? outputs * window : outputs * window * inputChannels;
}

function macsOf(graph: CompiledGraph, steps: Iterable<Step>): number {
  let sum = 0;
  for (const step of steps) sum += stepMacs(graph, step);
  return sum;
}

/** Steps of `outer`'s frozen stage that `inner` (a prefix of it) leaves out: what running from inner's outputs recomputes. */
function stepsBetween(inner: GraphSplit, outer: GraphSplit): Step[] {
  const done = new Set(inner.frozen);
  return outer.frozen.filter((step) => !done.has(step));
}

/**
 * Whether a phase should run its frozen steps above `prefix` every step instead of keeping
 * their outputs: they cost at most a tenth of the phase's training arithmetic per sample.
 */
export function recomputesCheaply(graph: CompiledGraph, phase: GraphSplit, prefix: GraphSplit): boolean {
  return macsOf(graph, stepsBetween(prefix, phase)) <= recomputeShare * 3 * macsOf(graph, phase.trainable);
}

/**
 * The prefix to keep for phases frozen below `layers` (in layer order): of the splits of the
 * first k of them that the phase training everything above `layers` recomputes cheaply, the
 * one whose bytes kept and arithmetic recomputed per sample cost least (ties: the largest k).
 */
export function cheapestPrefix(graph: CompiledGraph, layers: readonly Layer[]): GraphSplit {
  const full = prefixSplit(graph, new Set(layers));
  const cost = (split: GraphSplit) =>
    frozenOutputBytesPerSample(graph, split) + macsOf(graph, stepsBetween(split, full)) / macsPerByte;
  let best = { split: full, cost: cost(full) };
  let steps = full.frozen.length;
  for (let k = layers.length - 1; k > 0; k--) {
    const split = prefixSplit(graph, new Set(layers.slice(0, k)));
    if (split.frozen.length === steps) continue; // the same steps (k cut inside a folded chain)
    steps = split.frozen.length;
    if (!recomputesCheaply(graph, full, split)) break; // and so for every smaller k
    const splitCost = cost(split);
    if (splitCost < best.cost) best = { split, cost: splitCost };
  }
  return best.split;
}
