import type { Tensor } from '@tensorflow/tfjs-node';
import { GlobalAveragePooling2D, HardSigmoid, ReLU } from '../models/layers.ts';
import { runOp, tlxOpsAvailable } from '../tfjs/native-ops.ts';
import { tf } from '../tfjs/tf.ts';
import type { Layer, Step } from './graph.ts';
import { isPointwiseConv } from './pointwise.ts';

/**
 * A squeeze-excite block after its pooling, as one step: from the pooled channel means, a
 * reduce conv (+ ReLU or swish), an expand conv (+ sigmoid or hard-sigmoid) and the product
 * of the block's activation with that gate. EfficientNet has 16 of them, MobileNetV3 8 or 9;
 * on [images, 1, 1, channels] their convs are microseconds of arithmetic, and run layer by
 * layer they were about a dozen ops each (reshapes, two _FusedMatMul, the activations, the
 * product). Off the tape the step is one op of tlx's (TlxSqueezeExcite); on the tape, and
 * without tlx's kernels, its layers run one by one as before.
 */
export interface SqueezeExciteStep {
  kind: 'excite';
  /** The gate's layers in order: [Reshape], reduce conv, [ReLU], expand conv, [hard-sigmoid]; then the Multiply. */
  layers: Layer[];
  reduce: Layer;
  expand: Layer;
  multiply: Layer;
  reduceActivation: 'Linear' | 'Relu' | 'Swish';
  gateActivation: 'Sigmoid' | 'HardSigmoid';
  /** Whether the Multiply takes [gate, activation] rather than [activation, gate]. */
  gateFirst: boolean;
  /** The block's activation and its pooled means. */
  inputs: [number, number];
  output: number;
}

const reduceActivations: Record<string, SqueezeExciteStep['reduceActivation']> = {
  linear: 'Linear',
  relu: 'Relu',
  swish: 'Swish',
};

function activationOf(layer: Layer): string {
  return (layer.getConfig().activation as string | undefined) ?? 'linear';
}

/** A pointwise conv with a bias whose own activation is one of `activations`. */
function biasedPointwise(layer: Layer, activations: readonly string[]): boolean {
  return isPointwiseConv(layer) && layer.getConfig().useBias === true && activations.includes(activationOf(layer));
}

/**
 * Replaces each squeeze-excite's gate layers and product (whose intermediate tensors nothing
 * else reads) by one step where the product was; the pooling step stays (a depthwise chain may
 * compute it, graph.ts's squeeze).
 */
export function mergeSqueezeExcites(steps: Step[], output: number): Step[] {
  const readers = new Map<number, number>();
  for (const step of steps) for (const id of step.inputs) readers.set(id, (readers.get(id) ?? 0) + 1);
  readers.set(output, (readers.get(output) ?? 0) + 1);
  const producer = new Map(steps.map((step) => [step.output, step]));
  const absorbed = new Set<Step>();
  const replacements = new Map<Step, SqueezeExciteStep>();

  /** The gate chain ending in `gate` that starts from the pooling of `x`, if it is one. */
  const gateChain = (gate: number, x: number, multiply: Step): SqueezeExciteStep | undefined => {
    const chain: Step[] = [];
    let id = gate;
    const take = (accepts: (layer: Layer) => boolean): Layer | undefined => {
      const step = producer.get(id);
      if (!step || step.kind !== 'layer' || readers.get(id) !== 1 || !accepts(step.layers[0])) return undefined;
      chain.unshift(step);
      id = step.inputs[0];
      return step.layers[0];
    };
    const hardSigmoid = take((layer) => layer instanceof HardSigmoid);
    const expand = take((layer) => biasedPointwise(layer, hardSigmoid ? ['linear'] : ['sigmoid']));
    const relu = expand && take((layer) => layer instanceof ReLU);
    const reduce = expand && take((layer) => biasedPointwise(layer, relu ? ['linear'] : ['linear', 'relu', 'swish']));
    if (!expand || !reduce) return undefined;
    // EfficientNet pools without keepdims and reshapes to [1, 1, channels].
    take(
      (layer) =>
        layer.getClassName() === 'Reshape' && (layer.getConfig().targetShape as number[]).slice(0, 2).join() === '1,1',
    );
    const pooling = producer.get(id);
    if (!pooling || !(pooling.layers[0] instanceof GlobalAveragePooling2D) || pooling.inputs[0] !== x) return undefined;
    for (const step of chain) absorbed.add(step);
    return {
      kind: 'excite',
      layers: [...chain.map((step) => step.layers[0]), multiply.layers[0]],
      reduce,
      expand,
      multiply: multiply.layers[0],
      reduceActivation: relu ? 'Relu' : reduceActivations[activationOf(reduce)],
      gateActivation: hardSigmoid ? 'HardSigmoid' : 'Sigmoid',
      gateFirst: multiply.inputs[0] === gate,
      inputs: [x, id],
      output: multiply.output,
    };
  };

  for (const step of steps) {
    if (step.kind !== 'layer' || step.layers[0].getClassName() !== 'Multiply' || step.inputs.length !== 2) continue;
    const [a, b] = step.inputs;
    const excite = gateChain(b, a, step) ?? gateChain(a, b, step);
    if (excite) replacements.set(step, excite);
  }
  return steps.filter((step) => !absorbed.has(step)).map((step) => replacements.get(step) ?? step);
}

/**
 * The step's output from the activation x and the pooled means: one TlxSqueezeExcite off the
 * tape (`fused`), else its layers one by one through `apply` (graph.ts's applyLayer).
 */
export function runSqueezeExcite(
  step: SqueezeExciteStep,
  x: Tensor,
  pooled: Tensor,
  fused: boolean,
  apply: (layer: Layer, inputs: Tensor[]) => Tensor,
): Tensor {
  if (fused && tlxOpsAvailable()) {
    const [reduceKernel, reduceBias] = step.reduce.weights.map((weight) => weight.read());
    const [expandKernel, expandBias] = step.expand.weights.map((weight) => weight.read());
    return runOp(
      'TlxSqueezeExcite',
      [
        { name: 'reduce_activation', kind: 'string', value: step.reduceActivation },
        { name: 'gate_activation', kind: 'string', value: step.gateActivation },
      ],
      [x, pooled, reduceKernel, reduceBias, expandKernel, expandBias],
    );
  }
  return tf.tidy(() => {
    const gate = step.layers.slice(0, -1).reduce((value, layer) => apply(layer, [value]), pooled);
    return apply(step.multiply, step.gateFirst ? [gate, x] : [x, gate]);
  });
}
