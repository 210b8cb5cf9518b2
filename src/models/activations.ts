import type { Tensor } from '@tensorflow/tfjs-node';
import { runOp, runOpMulti, tlxOpsAvailable, type OpAttr } from '../tfjs/native-ops.ts';
import { tf } from '../tfjs/tf.ts';

/**
 * The activations of tlx's bases with their gradients written out, as TensorFlow registers
 * them for Keras. tfjs's autodiff of the same expressions goes op by op, and each product's
 * gradient casts its other operand (a copy of an activation-sized tensor), multiplies and
 * reshapes: hard-swish's backward pass made some ten passes over the activation, swish's
 * eight, a squeeze-excite gate's six. Here two to five; hard-swish and swish one each way
 * with tlx's own kernels (native/tlx_ops.cc), which compute the same float operations in the
 * same order, so hard-swish's outputs and gradients are equal to the last bit (swish's
 * sigmoid is Eigen's, within a unit in the last place of TensorFlow's Sigmoid).
 */

/** The save callback tf.customGrad passes a forward function, and what its gradient receives. */
export type GradSave = (tensors: Tensor[]) => void;
type Dy = Tensor | Tensor[];

const float: OpAttr[] = [{ name: 'T', kind: 'type', value: 'float32' }];

/** The one tensor of a layer's inputs or an op's upstream gradient. */
export function single(dy: Dy): Tensor {
  return Array.isArray(dy) ? dy[0] : dy;
}

/** dy * (0 < features < 6): TensorFlow's gradient of ReLU6 in one kernel. */
function relu6Grad(dy: Tensor, features: Tensor): Tensor {
  return runOp('Relu6Grad', float, [dy, features]);
}

/** min(max(x, 0), 6) natively, with the single-kernel Relu6Grad as its gradient. */
export const relu6 = tf.customGrad((...args: (Tensor | GradSave)[]) => {
  const x = args[0] as Tensor;
  (args[1] as GradSave)([x]);
  return {
    value: runOp('Relu6', float, [x]),
    gradFunc: (dy: Dy, [saved]: Tensor[]) => [relu6Grad(single(dy), saved)],
  };
}) as (x: Tensor) => Tensor;

/** relu6(x + 3) / 6 (MobileNetV3's hard sigmoid); gradient Relu6Grad(dy / 6, x + 3). */
export const hardSigmoid = tf.customGrad((...args: (Tensor | GradSave)[]) => {
  const shifted = (args[0] as Tensor).add(3);
  (args[1] as GradSave)([shifted]);
  return {
    value: runOp('Relu6', float, [shifted]).mul(1 / 6),
    gradFunc: (dy: Dy, [savedShifted]: Tensor[]) => [tf.tidy(() => relu6Grad(single(dy).mul(1 / 6), savedShifted))],
  };
}) as (x: Tensor) => Tensor;

/**
 * x * relu6(x + 3) / 6 (Keras's hard_silu, hard-swish); with g = dy / 6, the gradient is
 * g * relu6(x + 3) + x * Relu6Grad(g, x + 3). One kernel each way when tlx's are built.
 */
export function hardSilu(x: Tensor): Tensor {
  return tlxOpsAvailable() ? hardSiluKernel(x) : hardSiluOps(x);
}

/** An activation on tlx's kernels: `forward` computes it, `gradient` takes (dy, x); x is what the tape keeps. */
function oneKernelEachWay(forward: string, gradient: string): (x: Tensor) => Tensor {
  return tf.customGrad((...args: (Tensor | GradSave)[]) => {
    const x = args[0] as Tensor;
    (args[1] as GradSave)([x]);
    return {
      value: runOp(forward, [], [x]),
      gradFunc: (dy: Dy, [savedX]: Tensor[]) => [runOp(gradient, [], [single(dy), savedX])],
    };
  }) as (x: Tensor) => Tensor;
}

const hardSiluKernel = oneKernelEachWay('TlxHardSwish', 'TlxHardSwishGrad');

const hardSiluOps = tf.customGrad((...args: (Tensor | GradSave)[]) => {
  const x = args[0] as Tensor;
  const shifted = x.add(3);
  const clamped = runOp('Relu6', float, [shifted]);
  (args[1] as GradSave)([x, shifted, clamped]);
  return {
    value: x.mul(clamped).mul(1 / 6),
    gradFunc: (dy: Dy, [savedX, savedShifted, savedClamped]: Tensor[]) => [
      tf.tidy(() => {
        const g = single(dy).mul(1 / 6);
        return g.mul(savedClamped).add(savedX.mul(relu6Grad(g, savedShifted)));
      }),
    ],
  };
}) as (x: Tensor) => Tensor;

/** x * sigmoid(x) (swish); with s = sigmoid(x), the gradient is dy * s + SigmoidGrad(s, dy * x). */
export function silu(x: Tensor): Tensor {
  return tlxOpsAvailable() ? siluKernel(x) : siluOps(x);
}

const siluKernel = oneKernelEachWay('TlxSwish', 'TlxSwishGrad');

const siluOps = tf.customGrad((...args: (Tensor | GradSave)[]) => {
  const x = args[0] as Tensor;
  const sigmoid = tf.sigmoid(x);
  (args[1] as GradSave)([x, sigmoid]);
  return {
    value: x.mul(sigmoid),
    gradFunc: (dy: Dy, [savedX, savedSigmoid]: Tensor[]) => [
      tf.tidy(() => {
        const d = single(dy);
        // SigmoidGrad(y, g) = g * y * (1 - y).
        return d.mul(savedSigmoid).add(runOp('SigmoidGrad', float, [savedSigmoid, d.mul(savedX)]));
      }),
    ],
  };
}) as (x: Tensor) => Tensor;

/** dy summed over the axes `shape` was broadcast along, kept as `shape`. */
function unbroadcast(dy: Tensor, shape: number[]): Tensor {
  const axes = tf.backend_util.getReductionAxes(shape, dy.shape);
  if (axes.length === 0) return dy;
  const summed = dy.sum(axes, shape.length === dy.rank);
  return summed.rank === shape.length ? summed : summed.reshape(shape);
}

/** a * b with broadcasting (a squeeze-excite gate times its activation); gradients dy * b and dy * a, each summed back to its operand's shape. */
const multiplyByOps = tf.customGrad((...args: (Tensor | GradSave)[]) => {
  const [a, b] = args as [Tensor, Tensor];
  (args[2] as GradSave)([a, b]);
  return {
    value: a.mul(b),
    gradFunc: (dy: Dy, [savedA, savedB]: Tensor[]) =>
      tf.tidy(() => {
        const d = single(dy);
        return [unbroadcast(d.mul(savedB), savedA.shape), unbroadcast(d.mul(savedA), savedB.shape)];
      }),
  };
}) as (a: Tensor, b: Tensor) => Tensor;

/** Squeeze-excite's product on tlx's kernels: x [b, h, w, c] times gate [b, 1, 1, c], one pass each way. */
const scaleChannels = tf.customGrad((...args: (Tensor | GradSave)[]) => {
  const [x, gate] = args as [Tensor, Tensor];
  (args[2] as GradSave)([x, gate]);
  return {
    value: runOp('TlxScaleChannels', [], [x, gate]),
    gradFunc: (dy: Dy, [savedX, savedGate]: Tensor[]) =>
      runOpMulti('TlxScaleChannelsGrad', [], [single(dy), savedX, savedGate], 2),
  };
}) as (x: Tensor, gate: Tensor) => Tensor;

/** Whether `gate` is a per-image, per-channel gate of the activation `x` ([b, 1, 1, c] for [b, h, w, c]). */
function isGateOf(gate: Tensor, x: Tensor): boolean {
  const [batch, height, width, channels] = x.shape;
  return x.rank === 4 && gate.rank === 4 && gate.shape.join() === [batch, 1, 1, channels].join() && height * width > 1;
}

/**
 * a * b with broadcasting. Squeeze-excite's gate times its activation (MobileNetV3,
 * EfficientNet) runs on tlx's kernels when they are built: TensorFlow's broadcasting Mul and
 * its gradient's Mul + Sum each pass over the activation at ~2.6 ns a value; the kernels pass
 * once each way, the product bit-equal, the gate's gradient within float rounding.
 */
export function multiply(a: Tensor, b: Tensor): Tensor {
  if (tlxOpsAvailable()) {
    if (isGateOf(b, a)) return scaleChannels(a, b);
    if (isGateOf(a, b)) return scaleChannels(b, a);
  }
  return multiplyByOps(a, b);
}

/**
 * The mean over the pixels (squeeze-excite's squeeze). tfjs's gradient of a mean fills an
 * input-sized tensor of ones, multiplies and divides (three passes over the activation); here
 * dy / pixels is broadcast in one.
 */
export function spatialMean(x: Tensor, keepdims: boolean): Tensor {
  const [batch, height, width, channels] = x.shape;
  const mean = tf.customGrad((...args: (Tensor | GradSave)[]) => ({
    value: tf.mean(args[0] as Tensor, [1, 2], keepdims),
    gradFunc: (dy: Dy) => [
      tf.tidy(() =>
        single(dy)
          .reshape([batch, 1, 1, channels])
          .div(height * width)
          .broadcastTo(x.shape),
      ),
    ],
  })) as (x: Tensor) => Tensor;
  return mean(x);
}
