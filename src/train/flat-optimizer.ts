import type { NamedTensorMap, Tensor, Tensor1D, Variable } from '@tensorflow/tfjs-node';
import { runOpMulti, tlxOpsAvailable } from '../tfjs/native-ops.ts';
import { tf } from '../tfjs/tf.ts';

/** tfjs-core's NamedTensor (not re-exported by tfjs-node). */
interface NamedTensor {
  name: string;
  tensor: Tensor;
}

/**
 * Adam, RMSprop and SGD (with or without momentum) over all of a phase's variables at once.
 *
 * tfjs's optimizers update variable by variable: 14 to 16 small ops per variable and step
 * (a whole-model MobileNetV2 step trains 158 variables: some 2,400 ops, each paying the
 * native call's overhead). Here the gradients are joined into one flat vector, the update
 * rule runs once over it (a handful of ops), and the result is split back: about four ops
 * per variable in all. Each slot (moments, mean squares) is one flat variable.
 *
 * The arithmetic is tfjs's, op for op (the same formulas, the same float32 scalars, in the
 * same order), and elementwise ops give the same float per element whatever the tensor's
 * length: the weights are tfjs's to the last bit (a test steps both side by side).
 * getWeights/setWeights keep tfjs's per-variable names and order (`<variable>/m`, ...), so
 * checkpoints read and write as before. Unlike tfjs's SGD, which computes its step from a
 * scalar made at construction, every rule reads `learningRate` on each step, so a schedule
 * that sets it per epoch changes SGD too.
 *
 * With tlx's kernels (native/tlx_ops.cc) the whole step is one op, TlxApplyFlatUpdate: the
 * same float operations in the same order, element by element, without joining the gradients,
 * the dozen passes over them and the split (on a MobileNetV2 fine-tuning step at 96 px, ~15
 * of ~95 ms). The op-by-op rules stay for a build without the kernels, and as their reference.
 */

/** One optimizer's update over flat tensors (called inside tf.tidy). */
interface UpdateRule {
  className: string;
  /** Slot names, in tfjs's getWeights order: `<variable>/<suffix>`. */
  slots: string[];
  /** The new slots, and what to add to (or take from) the values. */
  step(
    gradient: Tensor1D,
    slots: Tensor1D[],
    learningRate: number,
  ): { slots: Tensor1D[]; change: Tensor1D; apply: 'add' | 'subtract' };
  /** The same step as TlxApplyFlatUpdate's rule and hyperparameters (float32 values in the kernel's order). */
  kernel(learningRate: number): { rule: string; hyperparameters: number[] };
  /** After each step (Adam's powers of beta). */
  afterStep?(): void;
  /** After setWeights restored `iterations` steps. */
  restore?(iterations: number): void;
}

interface Layout {
  names: string[];
  /** The names are the trained variables' (from a step), not yet only those the restored state was saved under. */
  stepped: boolean;
  shapes: number[][];
  sizes: number[];
}

export class FlatOptimizer extends tf.Optimizer {
  static className = 'FlatOptimizer';
  private layout?: Layout;
  private slotVariables: Variable[] = [];

  constructor(
    private readonly rule: UpdateRule,
    /** Read on every step (schedules set it per epoch). */
    public learningRate: number,
    /** One kernel per step (the default when tlx's kernels are built), or the rule op by op. */
    private readonly useKernel: () => boolean = tlxOpsAvailable,
  ) {
    super();
  }

  override getClassName(): string {
    return this.rule.className;
  }

  override applyGradients(variableGradients: NamedTensorMap | NamedTensor[]): void {
    const named = Array.isArray(variableGradients)
      ? variableGradients
      : Object.entries(variableGradients).map(([name, tensor]) => ({ name, tensor }));
    const variables = named.map(({ name }) => {
      const variable = tf.engine().registeredVariables[name];
      if (!variable) throw new Error(`optimizer: no variable named ${name}`);
      return variable;
    });
    const layout = this.layoutFor(
      named.map(({ name }) => name),
      variables.map((v) => v.shape),
      true,
    );
    const gradients = named.map(({ name, tensor }) => {
      if (!tensor) throw new Error(`optimizer: no gradient for ${name}`);
      return tensor;
    });
    if (this.useKernel()) this.kernelStep(gradients, variables);
    else this.opByOpStep(gradients, variables, layout);
    this.incrementIterations();
  }

  private kernelStep(gradients: Tensor[], variables: Variable[]): void {
    tf.tidy(() => {
      const { rule, hyperparameters } = this.rule.kernel(this.learningRate);
      const slotCount = this.slotVariables.length;
      const outputs = runOpMulti(
        'TlxApplyFlatUpdate',
        [
          { name: 'rule', kind: 'string', value: rule },
          { name: 'S', kind: 'int', value: slotCount },
          { name: 'N', kind: 'int', value: variables.length },
        ],
        [...this.slotVariables, ...gradients, ...variables, tf.tensor1d(hyperparameters, 'float32')],
        slotCount + variables.length,
      );
      this.slotVariables.forEach((slot, k) => slot.assign(outputs[k]));
      variables.forEach((variable, i) => variable.assign(outputs[slotCount + i]));
      this.rule.afterStep?.();
    });
  }

  private opByOpStep(gradients: Tensor[], variables: Variable[], layout: Layout): void {
    tf.tidy(() => {
      const gradient = joined(gradients);
      const slots = this.slotVariables as unknown as Tensor1D[];
      const next = this.rule.step(gradient, slots, this.learningRate);
      next.slots.forEach((slot, k) => this.slotVariables[k].assign(slot));
      const parts = variables.length === 1 ? [next.change] : tf.split(next.change, layout.sizes);
      variables.forEach((variable, i) => {
        const part = parts[i].reshape(layout.shapes[i]);
        variable.assign(next.apply === 'add' ? tf.add(part, variable) : tf.sub(variable, part));
      });
      this.rule.afterStep?.();
    });
  }

  /**
   * The variables this optimizer trains, fixed by its first step. Restored slots (setWeights)
   * fix only the shapes: as in tfjs, they belong to the variables by position, since a new
   * process may name the same model's variables otherwise (tfjs adds suffixes to reused names).
   */
  private layoutFor(names: string[], shapes: number[][], stepped: boolean): Layout {
    if (!this.layout) {
      this.layout = { names, stepped, shapes, sizes: shapes.map(sizeOf) };
      const total = this.layout.sizes.reduce((a, b) => a + b, 0);
      this.slotVariables = this.rule.slots.map(() => tf.tidy(() => tf.variable(tf.zeros([total]), false)));
      return this.layout;
    }
    const { layout } = this;
    const sameShapes =
      shapes.length === layout.shapes.length &&
      shapes.every((shape, i) => shape.join('x') === layout.shapes[i].join('x'));
    if (!sameShapes || (layout.stepped && names.some((name, i) => name !== layout.names[i])))
      throw new Error(
        layout.stepped
          ? 'optimizer: a step on other variables than its first (an optimizer trains one list of variables)'
          : `optimizer: the restored state is for ${layout.shapes.length} variables of other shapes than the ${shapes.length} being trained`,
      );
    if (stepped && !layout.stepped) Object.assign(layout, { names, stepped });
    return layout;
  }

  override async getWeights(): Promise<NamedTensor[]> {
    const iterations = await this.saveIterations();
    if (!this.layout) return [iterations];
    const { names, sizes, shapes } = this.layout;
    const perVariable = this.rule.slots.flatMap((suffix, k) => {
      const parts = tf.tidy(() =>
        (names.length === 1 ? [this.slotVariables[k]] : tf.split(this.slotVariables[k], sizes)).map((part, i) =>
          part.reshape(shapes[i]),
        ),
      );
      return names.map((name, i) => ({ name: `${name}/${suffix}`, tensor: parts[i] }));
    });
    return [iterations, ...perVariable];
  }

  /** Takes the tensors over, as tfjs's optimizers do (they become its slots; here they are joined and released). */
  override async setWeights(weightValues: NamedTensor[]): Promise<void> {
    const values = await this.extractIterations(weightValues);
    this.rule.restore?.(this.iterations);
    if (values.length === 0) {
      tf.dispose(weightValues.map(({ tensor }) => tensor));
      return;
    }
    const count = values.length / this.rule.slots.length;
    tf.dispose(this.slotVariables);
    this.layout = undefined;
    const restored = values.slice(0, count);
    const suffix = `/${this.rule.slots[0]}`;
    this.layoutFor(
      restored.map(({ name }) => (name.endsWith(suffix) ? name.slice(0, -suffix.length) : name)),
      restored.map(({ tensor }) => tensor.shape),
      false,
    );
    this.rule.slots.forEach((_, k) => {
      const flat = tf.tidy(() => joined(values.slice(k * count, (k + 1) * count).map(({ tensor }) => tensor)));
      this.slotVariables[k].assign(flat);
      flat.dispose();
    });
    tf.dispose(weightValues.map(({ tensor }) => tensor));
  }

  override dispose(): void {
    tf.dispose(this.slotVariables);
    this.slotVariables = [];
  }

  override getConfig(): Record<string, never> {
    return {};
  }
}

function sizeOf(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** The tensors flattened and joined into one vector. */
function joined(tensors: Tensor[]): Tensor1D {
  const flat = tensors.map((tensor) => tensor.reshape([-1]) as Tensor1D);
  return flat.length === 1 ? flat[0] : (tf.concat(flat) as Tensor1D);
}

/**
 * tfjs's AdamOptimizer.applyGradients, over one vector. Its powers of beta are float32 values
 * kept here: tfjs's float32 product of two floats is the double product rounded once.
 */
function adamRule(beta1: number, beta2: number, epsilon: number): UpdateRule {
  let accBeta1 = Math.fround(beta1);
  let accBeta2 = Math.fround(beta2);
  return {
    className: 'Adam',
    slots: ['m', 'v'],
    step(gradient, [firstMoment, secondMoment], learningRate) {
      const m = tf.add(tf.mul(firstMoment, beta1), tf.mul(gradient, 1 - beta1));
      const v = tf.add(tf.mul(secondMoment, beta2), tf.mul(tf.square(gradient), 1 - beta2));
      const mHat = tf.div(m, tf.sub(1, accBeta1));
      const vHat = tf.div(v, tf.sub(1, accBeta2));
      const change = tf.mul(tf.div(mHat, tf.add(tf.sqrt(vHat), epsilon)), -learningRate);
      return { slots: [m, v] as Tensor1D[], change: change as Tensor1D, apply: 'add' };
    },
    kernel: (learningRate) => ({
      rule: 'adam',
      hyperparameters: [beta1, 1 - beta1, beta2, 1 - beta2, accBeta1, accBeta2, epsilon, -learningRate],
    }),
    afterStep() {
      accBeta1 = Math.fround(accBeta1 * Math.fround(beta1));
      accBeta2 = Math.fround(accBeta2 * Math.fround(beta2));
    },
    restore(iterations) {
      // TensorFlow's float32 pow, as tfjs restores them.
      [accBeta1, accBeta2] = tf.tidy(() => [
        tf.pow(beta1, iterations + 1).dataSync()[0],
        tf.pow(beta2, iterations + 1).dataSync()[0],
      ]);
    },
  };
}

/** tfjs's RMSPropOptimizer.applyGradients (not centered), over one vector. */
function rmspropRule(decay: number, momentum: number, epsilon: number): UpdateRule {
  return {
    className: 'RMSProp',
    slots: ['rms', 'momentum'],
    step(gradient, [meanSquare, moments], learningRate) {
      const ms = tf.add(tf.mul(meanSquare, decay), tf.mul(tf.square(gradient), 1 - decay));
      const contribution = tf.div(tf.mul(gradient, learningRate), tf.sqrt(tf.add(ms, epsilon)));
      // With momentum 0, tfjs's moments * 0 + contribution is the contribution itself.
      const nextMoments = momentum === 0 ? contribution : tf.add(tf.mul(moments, momentum), contribution);
      return { slots: [ms, nextMoments] as Tensor1D[], change: nextMoments as Tensor1D, apply: 'subtract' };
    },
    kernel: (learningRate) =>
      momentum === 0
        ? { rule: 'rmsprop', hyperparameters: [decay, 1 - decay, learningRate, epsilon] }
        : { rule: 'rmsprop_momentum', hyperparameters: [decay, 1 - decay, learningRate, epsilon, momentum] },
  };
}

/** tfjs's SGDOptimizer and MomentumOptimizer (not Nesterov), over one vector. */
function sgdRule(momentum: number | undefined): UpdateRule {
  return {
    className: momentum ? 'Momentum' : 'SGD',
    slots: momentum ? ['momentum'] : [],
    step(gradient, [accumulation], learningRate) {
      const c = tf.scalar(-learningRate);
      if (!momentum) return { slots: [], change: tf.mul(c, gradient) as Tensor1D, apply: 'add' };
      const next = tf.add(tf.mul(tf.scalar(momentum), accumulation), gradient) as Tensor1D;
      return { slots: [next], change: tf.mul(c, next) as Tensor1D, apply: 'add' };
    },
    kernel: (learningRate) =>
      momentum
        ? { rule: 'momentum', hyperparameters: [-learningRate, momentum] }
        : { rule: 'sgd', hyperparameters: [-learningRate] },
  };
}

export function flatAdam(
  learningRate: number,
  beta1: number,
  beta2: number,
  epsilon: number,
  useKernel?: () => boolean,
): FlatOptimizer {
  return new FlatOptimizer(adamRule(beta1, beta2, epsilon), learningRate, useKernel);
}

export function flatRmsprop(
  learningRate: number,
  decay: number,
  momentum: number,
  epsilon: number,
  useKernel?: () => boolean,
): FlatOptimizer {
  return new FlatOptimizer(rmspropRule(decay, momentum, epsilon), learningRate, useKernel);
}

export function flatSgd(learningRate: number, momentum?: number, useKernel?: () => boolean): FlatOptimizer {
  return new FlatOptimizer(sgdRule(momentum), learningRate, useKernel);
}
