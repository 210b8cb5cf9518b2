import type { NamedTensorMap, Scalar, Tensor, Tensor1D, Variable } from '@tensorflow/tfjs-node';
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
  /** After each step (Adam's powers of beta). */
  afterStep?(): void;
  /** After setWeights restored `iterations` steps. */
  restore?(iterations: number): void;
  dispose?(): void;
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
    tf.tidy(() => {
      const gradient = joined(
        named.map(({ name, tensor }) => {
          if (!tensor) throw new Error(`optimizer: no gradient for ${name}`);
          return tensor;
        }),
      );
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
    this.incrementIterations();
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
    this.rule.dispose?.();
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

/** tfjs's AdamOptimizer.applyGradients, over one vector. */
function adamRule(beta1: number, beta2: number, epsilon: number): UpdateRule {
  const [accBeta1, accBeta2] = tf.tidy(() => [tf.scalar(beta1).variable(false), tf.scalar(beta2).variable(false)]);
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
    afterStep() {
      accBeta1.assign(tf.mul(accBeta1, beta1) as Scalar);
      accBeta2.assign(tf.mul(accBeta2, beta2) as Scalar);
    },
    restore(iterations) {
      tf.tidy(() => {
        accBeta1.assign(tf.pow(beta1, iterations + 1) as Scalar);
        accBeta2.assign(tf.pow(beta2, iterations + 1) as Scalar);
      });
    },
    dispose() {
      tf.dispose([accBeta1, accBeta2]);
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
  };
}

export function flatAdam(learningRate: number, beta1: number, beta2: number, epsilon: number): FlatOptimizer {
  return new FlatOptimizer(adamRule(beta1, beta2, epsilon), learningRate);
}

export function flatRmsprop(learningRate: number, decay: number, momentum: number, epsilon: number): FlatOptimizer {
  return new FlatOptimizer(rmspropRule(decay, momentum, epsilon), learningRate);
}

export function flatSgd(learningRate: number, momentum?: number): FlatOptimizer {
  return new FlatOptimizer(sgdRule(momentum), learningRate);
}
