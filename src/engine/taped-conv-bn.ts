import type { Tensor, Tensor1D, Tensor2D, Tensor4D } from '@tensorflow/tfjs-node';
import {
  fusedMatMul2d,
  matMul2d,
  PreferredKernel,
  runOp,
  runOpMulti,
  tlxOpsAvailable,
  type OpAttr,
} from '../tfjs/native-ops.ts';
import { tf } from '../tfjs/tf.ts';
import { fusedConv2d, fusedDepthwiseConv2d, type FusedActivation, type FusedConvOptions } from './fused-kernels.ts';

/**
 * A trainable Conv -> BatchNorm (-> ReLU / ReLU6) chain as one fused kernel on the tape.
 *
 * The base's BatchNorm always runs in inference mode, so it is a per-channel affine map and
 * folds into the conv's filter and bias, inside the op (a few ops on filter-sized tensors,
 * whose gradient back to the kernel, gamma and beta is written out in `unfoldGradients`).
 * The convolution + bias + clamp then runs as one native kernel with its own gradient: the
 * clamp's gradient from the kernel's output (ReLU6's mask is the same whether read before or
 * after the clamp), the bias's as one reduction, the filter's and the input's as the conv's backprops. Layer by
 * layer the same chain costs a BatchNorm pass and its gradient (FusedBatchNormGradV3: the
 * largest kernel of a whole-model MobileNetV2 step after the matrix products) and a separate
 * clamp pass. The result is the layers', up to the order of float sums.
 */

export interface ConvBnChain {
  depthwise: boolean;
  /** A Conv2D with a 1x1 kernel and stride 1: a matrix product over the pixels. */
  pointwise: boolean;
  options: FusedConvOptions;
}

const float: OpAttr = { name: 'T', kind: 'type', value: 'float32' };

function convAttrs(options: FusedConvOptions): OpAttr[] {
  return [
    float,
    { name: 'strides', kind: 'int', value: [1, options.strides[0], options.strides[1], 1] },
    { name: 'padding', kind: 'string', value: options.padding },
    { name: 'data_format', kind: 'string', value: 'NHWC' },
    { name: 'dilations', kind: 'int', value: [1, 1, 1, 1] },
  ];
}

/** Relu and Relu6 fuse into every kernel here and have a gradient from the output alone. */
export function clampActivation(activation: FusedActivation | undefined): 'Relu' | 'Relu6' | undefined {
  return activation === 'Relu' || activation === 'Relu6' ? activation : undefined;
}

function pointwiseForward(
  x2d: Tensor2D,
  filter2d: Tensor2D,
  bias: Tensor1D,
  activation: 'Relu' | 'Relu6' | undefined,
): Tensor2D {
  return fusedMatMul2d(x2d, filter2d, bias, activation) as Tensor2D;
}

function forward(
  chain: ConvBnChain,
  x: Tensor4D,
  filter: Tensor4D,
  bias: Tensor1D,
  activation: 'Relu' | 'Relu6' | undefined,
): Tensor4D {
  const options = { ...chain.options, activation };
  if (chain.depthwise) return fusedDepthwiseConv2d(x, filter, bias, options);
  if (!chain.pointwise) return fusedConv2d(x, filter, bias, options);
  const [batch, height, width, channels] = x.shape;
  const filters = filter.shape[3];
  return tf.tidy(
    () =>
      pointwiseForward(
        x.reshape([batch * height * width, channels]),
        filter.reshape([channels, filters]),
        bias,
        activation,
      ).reshape([batch, height, width, filters]) as Tensor4D,
  );
}

/** Gradients of the conv + bias for dz (the gradient before the clamp): input (if asked), filter, bias. */
function backward(
  chain: ConvBnChain,
  dz: Tensor4D,
  x: Tensor4D,
  filter: Tensor4D,
  inputGradient: boolean,
): { dx?: Tensor4D; dFilter: Tensor4D; dBias: Tensor1D } {
  const dBias = runOp('BiasAddGrad', [float, { name: 'data_format', kind: 'string', value: 'NHWC' }], [dz]) as Tensor1D;
  if (chain.pointwise) {
    const [batch, height, width, channels] = x.shape;
    const filters = filter.shape[3];
    const dz2d = dz.reshape([batch * height * width, filters]);
    const dFilter = matMul2d(x.reshape([batch * height * width, channels]), dz2d, true, false).reshape(
      filter.shape,
    ) as Tensor4D;
    const dx = inputGradient
      ? (matMul2d(dz2d, filter.reshape([channels, filters]), false, true).reshape(x.shape) as Tensor4D)
      : undefined;
    return { dx, dFilter, dBias };
  }
  const attrs = convAttrs(chain.options);
  const [filterName, inputName] = chain.depthwise
    ? ['DepthwiseConv2dNativeBackpropFilter', 'DepthwiseConv2dNativeBackpropInput']
    : ['Conv2DBackpropFilter', 'Conv2DBackpropInput'];
  let dFilter: Tensor4D;
  if (chain.depthwise && filter.shape[0] * filter.shape[1] > 9 && filter.shape[3] === 1 && tlxOpsAvailable())
    dFilter = depthwiseFilterGradient(chain.options, x, dz, filter.shape);
  else {
    const filterSizes = tf.tensor1d(filter.shape, 'int32');
    dFilter = runOp(filterName, attrs, [x, filterSizes, dz]) as Tensor4D;
    filterSizes.dispose();
  }
  let dx: Tensor4D | undefined;
  if (inputGradient) {
    const inputSizes = tf.tensor1d(x.shape, 'int32');
    dx = chain.depthwise
      ? depthwiseInputGradient(attrs, [inputSizes, filter, dz])
      : (runOp(inputName, attrs, [inputSizes, filter, dz]) as Tensor4D);
  }
  return { dx, dFilter, dBias };
}

/**
 * A chain's weights: the conv's kernel (and bias, if it has one), and its BatchNorm as the
 * per-channel affine map (x - mean) * gamma * inverseStd + beta. gamma, beta, the kernel and
 * the bias train; inverseStd and mean are the moving statistics', constant while BatchNorm
 * runs in inference mode.
 */
export interface ConvBnWeights {
  kernel: Tensor4D;
  convBias?: Tensor1D;
  gamma: Tensor1D;
  beta: Tensor1D;
  inverseStd: Tensor1D;
  mean: Tensor1D;
}

/** scale = gamma * inverseStd as the filter's last-but-one (depthwise) or last axis broadcasts it. */
function filterScale(depthwise: boolean, scale: Tensor1D): Tensor {
  // Depthwise kernels are [h, w, channels, 1]: the output channel is the third axis.
  return depthwise ? scale.reshape([1, 1, -1, 1]) : scale;
}

/**
 * BatchNorm folded into the conv: filter = kernel * scale, bias = convBias * scale + beta -
 * mean * scale, with scale = gamma * inverseStd. Without a conv bias (every base's convs) one
 * of tlx's kernels, equal to the last bit to the ops below (five ops and a reshape).
 */
export function foldConvBn(
  depthwise: boolean,
  weights: ConvBnWeights,
): { filter: Tensor4D; bias: Tensor1D; scale: Tensor1D } {
  if (!weights.convBias && tlxOpsAvailable()) {
    const { kernel, gamma, beta, inverseStd, mean } = weights;
    const [filter, bias, scale] = runOpMulti('TlxFoldConvBn', [], [kernel, gamma, beta, inverseStd, mean], 3);
    return { filter: filter as Tensor4D, bias: bias as Tensor1D, scale: scale as Tensor1D };
  }
  return tf.tidy(() => {
    const { kernel, convBias, gamma, beta, inverseStd, mean } = weights;
    const scale = gamma.mul(inverseStd) as Tensor1D;
    const offset = beta.sub(mean.mul(scale)) as Tensor1D;
    const filter = kernel.mul(filterScale(depthwise, scale)) as Tensor4D;
    const bias = (convBias ? convBias.mul(scale).add(offset) : offset) as Tensor1D;
    return { filter, bias, scale };
  });
}

/**
 * The fold's gradient: from the folded filter's and bias's gradients to the kernel's, gamma's,
 * beta's (and the conv bias's), in a few ops on filter-sized tensors. Taped op by op, the same
 * fold costs some 25 small ops per chain (broadcast products' gradients cast, sum and reshape).
 * Without a conv bias, one of tlx's kernels (its per-channel sums in double, so within float
 * rounding of these ops, not bit-equal).
 */
function unfoldGradients(
  depthwise: boolean,
  weights: ConvBnWeights,
  scale: Tensor1D,
  dFilter: Tensor4D,
  dBias: Tensor1D,
): { dKernel: Tensor4D; dGamma: Tensor1D; dBeta: Tensor1D; dConvBias?: Tensor1D } {
  const { kernel, convBias, inverseStd, mean } = weights;
  if (!convBias && tlxOpsAvailable()) {
    const [dKernel, dGamma] = runOpMulti(
      'TlxUnfoldConvBnGrad',
      [],
      [dFilter, dBias, kernel, scale, inverseStd, mean],
      2,
    );
    return { dKernel: dKernel as Tensor4D, dGamma: dGamma as Tensor1D, dBeta: dBias };
  }
  const dKernel = dFilter.mul(filterScale(depthwise, scale)) as Tensor4D;
  // Every axis but the output channel's.
  let dScale = dFilter
    .mul(kernel)
    .sum(depthwise ? [0, 1, 3] : [0, 1, 2])
    .sub(dBias.mul(mean)) as Tensor1D;
  if (convBias) dScale = dScale.add(dBias.mul(convBias));
  return {
    dKernel,
    dGamma: dScale.mul(inverseStd),
    dBeta: dBias,
    dConvBias: convBias ? (dBias.mul(scale) as Tensor1D) : undefined,
  };
}

/**
 * A Conv -> BatchNorm (-> clamp) chain taped as one op: BatchNorm folded into the filter and a
 * bias, then the fused kernel; the gradient the conv's backprops, then the fold's.
 * `inputGradient` false leaves x off the tape: the chain reads the frozen stage's output (or
 * the images), whose gradient nobody uses, and the conv's input backprop is the costliest
 * half of its gradient.
 */
export function convBnClamp(chain: ConvBnChain, x: Tensor4D, weights: ConvBnWeights, inputGradient: boolean): Tensor4D {
  const activation = clampActivation(chain.options.activation);
  const trained = [weights.kernel, weights.gamma, weights.beta, ...(weights.convBias ? [weights.convBias] : [])];
  const op = tf.customGrad((...args: (Tensor | ((tensors: Tensor[]) => void))[]) => {
    const save = args[args.length - 1] as (tensors: Tensor[]) => void;
    const input = (inputGradient ? args[0] : x) as Tensor4D;
    const { filter, bias, scale } = foldConvBn(chain.depthwise, weights);
    const y = forward(chain, input, filter, bias, activation);
    save([input, filter, scale, y]);
    return {
      value: y,
      gradFunc: (dy: Tensor | Tensor[], saved: Tensor[]) => {
        const [savedInput, savedFilter, savedScale, output] = saved as [Tensor4D, Tensor4D, Tensor1D, Tensor4D];
        // Its own scope: dz is as large as the activation and must not live until the whole backward pass ends.
        return tf.tidy(() => {
          const dz = activation
            ? (runOp(`${activation}Grad`, [float], [dy as Tensor4D, output]) as Tensor4D)
            : (dy as Tensor4D);
          const { dx, dFilter, dBias } = backward(chain, dz, savedInput, savedFilter, inputGradient);
          const { dKernel, dGamma, dBeta, dConvBias } = unfoldGradients(
            chain.depthwise,
            weights,
            savedScale,
            dFilter,
            dBias,
          );
          return [...(inputGradient ? [dx!] : []), dKernel, dGamma, dBeta, ...(dConvBias ? [dConvBias] : [])];
        });
      },
    };
  });
  return (inputGradient ? op(x, ...trained) : op(...trained)) as Tensor4D;
}

/** Padding before the first row (or column) as TensorFlow's SAME pads: half the total, the odd one after. */
function padBefore(
  padding: 'SAME' | 'VALID',
  inputSize: number,
  outputSize: number,
  kernel: number,
  stride: number,
): number {
  if (padding === 'VALID') return 0;
  return Math.floor(Math.max((outputSize - 1) * stride + kernel - inputSize, 0) / 2);
}

/**
 * A 5x5 depthwise filter's gradient on tlx's kernel (native/tlx_ops.cc). TensorFlow's
 * DepthwiseConv2dNativeBackpropFilter, which Keras runs too, was the largest kernel of a
 * whole-model MobileNetV3-Small step (17%): at 5x5 it is 3-4x slower than tlx's (34.4 against
 * 9.9 ms at [32, 28, 28, 240], 6.3 against 2.3 ms at [32, 14, 14, 240]); at 3x3 it is
 * 1.2-3x faster than tlx's, so 3x3 filters (all of MobileNetV2's) stay on it.
 */
function depthwiseFilterGradient(
  options: FusedConvOptions,
  x: Tensor4D,
  dz: Tensor4D,
  filterShape: [number, number, number, number],
): Tensor4D {
  const [kh, kw] = filterShape;
  const [sh, sw] = options.strides;
  return runOp(
    'TlxDepthwiseFilterGrad',
    [
      { name: 'kernel_size', kind: 'int', value: [kh, kw] },
      { name: 'strides', kind: 'int', value: [sh, sw] },
      {
        name: 'pads',
        kind: 'int',
        value: [
          padBefore(options.padding, x.shape[1], dz.shape[1], kh, sh),
          padBefore(options.padding, x.shape[2], dz.shape[2], kw, sw),
        ],
      },
    ],
    [x, dz],
  ) as Tensor4D;
}

/**
 * oneDNN's kernel for the depthwise input gradient (registered under the label
 * MklNameChangeOp, as the fused depthwise kernel is): 143 against 190 ms at 112x112x96,
 * stride 2, batch 32 on an AVX2 CPU (its filter gradient is slower than TensorFlow's).
 */
const oneDnnDepthwiseInputGradient = new PreferredKernel('oneDNN depthwise input gradient');

function depthwiseInputGradient(attrs: OpAttr[], inputs: Tensor[]): Tensor4D {
  return oneDnnDepthwiseInputGradient.run(
    () =>
      runOp(
        '_MklNativeDepthwiseConv2dNativeBackpropInput',
        [
          ...attrs,
          { name: 'explicit_paddings', kind: 'int', value: [] },
          { name: '_kernel', kind: 'string', value: 'MklNameChangeOp' },
        ],
        inputs,
      ) as Tensor4D,
    () => runOp('DepthwiseConv2dNativeBackpropInput', attrs, inputs) as Tensor4D,
  );
}
