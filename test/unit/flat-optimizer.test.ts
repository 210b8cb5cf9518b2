import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Optimizer, Tensor, Variable } from '@tensorflow/tfjs-node';
import type { Optimizer as OptimizerConfig } from '../../src/config/resolved.ts';
import { Random } from '../../src/core/random.ts';
import { tlxOpsAvailable } from '../../src/tfjs/native-ops.ts';
import { tf } from '../../src/tfjs/tf.ts';
import { flatAdam, flatRmsprop, flatSgd } from '../../src/train/flat-optimizer.ts';
import { createOptimizer, setLearningRate } from '../../src/train/optimizers.ts';
import { nativeOpsOf } from '../helpers/native-ops.ts';

/**
 * The flat optimizers against tfjs's own, variable by variable: the same weights to the last
 * bit after every step, through learning-rate changes and a getWeights/setWeights round trip
 * (a resumed run), on variables of several shapes and a loss whose gradients vary per element.
 * Both ways a flat optimizer steps: tlx's kernel (one op) and the rule op by op.
 */

const keras = 1e-7;

/** tfjs's optimizer for a config, as tlx made them before (the reference). */
function tfjsOptimizer(config: OptimizerConfig): Optimizer {
  switch (config.name) {
    case 'adam':
      return tf.train.adam(config.learning_rate, 0.9, 0.999, keras);
    case 'rmsprop':
      return tf.train.rmsprop(config.learning_rate, 0.9, config.momentum ?? 0, keras, false);
    case 'sgd':
      return config.momentum
        ? tf.train.momentum(config.learning_rate, config.momentum, false)
        : tf.train.sgd(config.learning_rate);
  }
}

// 23,150 values: the kernel's 4096-value blocks start and end inside variables.
const shapes = [[3, 3, 4, 8], [8], [1, 1, 8, 16], [16], [70, 130], [5], [4099], [16, 5], [9000]];

function variablesFrom(seed: number): Variable[] {
  const random = new Random(seed, 'weights');
  return shapes.map((shape) => {
    const initial = tf.tensor(
      Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => random.next() - 0.5),
      shape,
    );
    const variable = tf.variable(initial);
    initial.dispose();
    return variable;
  });
}

/** A loss with per-element gradients of varied size (so that no rule's arithmetic is trivial). */
function loss(variables: Variable[], step: number): Tensor {
  return tf.tidy(() =>
    tf.addN(
      variables.map((v, i) =>
        v
          .mul(v)
          .mul(0.5 + i)
          .add(v.mul(Math.sin(step + i)))
          .sum(),
      ),
    ),
  ) as Tensor;
}

function values(variables: Variable[]): number[][] {
  return variables.map((v) => Array.from(v.dataSync()));
}

const configs: OptimizerConfig[] = [
  { name: 'adam', learning_rate: 0.01 },
  { name: 'rmsprop', learning_rate: 0.01 },
  { name: 'rmsprop', learning_rate: 0.01, momentum: 0.9 },
  { name: 'sgd', learning_rate: 0.05 },
  { name: 'sgd', learning_rate: 0.05, momentum: 0.9 },
];

/** The flat optimizer for a config, running the rule op by op (without tlx's kernel). */
function opByOpOptimizer(config: OptimizerConfig): Optimizer {
  const opByOp = () => false;
  switch (config.name) {
    case 'adam':
      return flatAdam(config.learning_rate, 0.9, 0.999, keras, opByOp);
    case 'rmsprop':
      return flatRmsprop(config.learning_rate, 0.9, config.momentum ?? 0, keras, opByOp);
    case 'sgd':
      return flatSgd(config.learning_rate, config.momentum || undefined, opByOp);
  }
}

const ways = [
  { way: 'one kernel', make: createOptimizer },
  { way: 'op by op', make: opByOpOptimizer },
];

for (const config of configs)
  for (const { way, make } of ways) {
    test(`${JSON.stringify(config)}, ${way}: the weights of tfjs's optimizer to the last bit, step after step, across a resume`, async () => {
      const reference = variablesFrom(1);
      const flat = variablesFrom(1);
      const reference_optimizer = tfjsOptimizer(config);
      let flatOptimizer = make(config);
      // tfjs's SGD reads its learning rate once, at construction: only the others follow a schedule.
      const schedule = config.name === 'sgd' ? [1, 1, 1, 1, 1, 1] : [1, 1, 0.5, 0.5, 0.25, 0.1];
      for (let step = 0; step < schedule.length; step++) {
        setLearningRate(reference_optimizer, config.learning_rate * schedule[step]);
        setLearningRate(flatOptimizer, config.learning_rate * schedule[step]);
        reference_optimizer.minimize(() => loss(reference, step) as never, false, reference);
        flatOptimizer.minimize(() => loss(flat, step) as never, false, flat);
        assert.deepEqual(values(flat), values(reference), `step ${step}`);
        if (step === 2) {
          // A checkpoint and a resume: tfjs's names, read into a new optimizer.
          const saved = await flatOptimizer.getWeights();
          const referenceSaved = await reference_optimizer.getWeights();
          // Each variable's slots under its own name (the two sets of variables have their own names).
          const byIndex = (name: string, own: Variable[]) =>
            name.replace(/^[^/]+/, (variable) => `#${own.findIndex((v) => v.name === variable)}`);
          assert.deepEqual(
            saved.map((w) => [byIndex(w.name, flat), w.tensor.shape]),
            referenceSaved.map((w) => [byIndex(w.name, reference), w.tensor.shape]),
          );
          saved.forEach((w, i) =>
            assert.deepEqual(Array.from(w.tensor.dataSync()), Array.from(referenceSaved[i].tensor.dataSync()), w.name),
          );
          flatOptimizer.dispose();
          flatOptimizer = make(config);
          // Saved by another process, whose tfjs named the same variables otherwise: slots go by position.
          await flatOptimizer.setWeights(
            saved.map((w, i) => (i === 0 ? w : { name: `another_process_${w.name}`, tensor: w.tensor })),
          );
          tf.dispose(saved.map((w) => w.tensor));
          tf.dispose(referenceSaved.map((w) => w.tensor).filter((t) => !(t instanceof tf.Variable)));
        }
      }
      flatOptimizer.dispose();
      reference_optimizer.dispose();
      tf.dispose([...reference, ...flat]);
    });
  }

test("with tlx's kernels, a step is one op: TlxApplyFlatUpdate", () => {
  assert.ok(tlxOpsAvailable(), 'scripts/setup.mjs builds native/build/tlx_ops.so');
  for (const config of configs) {
    const variables = variablesFrom(3);
    const optimizer = createOptimizer(config);
    for (let step = 0; step < 2; step++) {
      const { grads } = tf.variableGrads(() => loss(variables, step) as never, variables);
      assert.deepEqual(
        nativeOpsOf(() => optimizer.applyGradients(grads)),
        ['TlxApplyFlatUpdate'],
        JSON.stringify(config),
      );
      tf.dispose(Object.values(grads));
    }
    optimizer.dispose();
    tf.dispose(variables);
  }
});

test('a flat optimizer leaves no tensor behind: steps, a checkpoint, a resume, dispose', async () => {
  for (const config of configs)
    for (const { way, make } of ways) {
      const before = tf.memory().numTensors;
      const variables = variablesFrom(2);
      let optimizer = make(config);
      for (let step = 0; step < 4; step++) {
        optimizer.minimize(() => loss(variables, step) as never, false, variables);
        if (step === 1) {
          const saved = await optimizer.getWeights();
          optimizer.dispose();
          optimizer = make(config);
          await optimizer.setWeights(saved);
          tf.dispose(saved.map((w) => w.tensor));
        }
      }
      optimizer.dispose();
      tf.dispose(variables);
      assert.equal(tf.memory().numTensors, before, `${JSON.stringify(config)}, ${way}`);
    }
});

test('SGD follows a learning-rate change (tfjs kept the rate it was made with)', () => {
  for (const momentum of [undefined, 0.9]) {
    const optimizer = createOptimizer({ name: 'sgd', learning_rate: 0.1, momentum });
    setLearningRate(optimizer, 0);
    const weight = tf.variable(tf.ones([2]));
    optimizer.minimize(() => weight.square().sum() as never, false, [weight]);
    assert.deepEqual(Array.from(weight.dataSync()), [1, 1], `momentum ${momentum}: a step at rate 0 moves nothing`);
    optimizer.dispose();
    weight.dispose();
  }
});

test("a restored state for other variables' shapes is refused at the first step, naming both counts", async () => {
  const optimizer = createOptimizer({ name: 'adam', learning_rate: 0.01 });
  const iterations = tf.scalar(3, 'int32');
  await optimizer.setWeights([
    { name: 'iter', tensor: iterations },
    { name: 'w/m', tensor: tf.zeros([4]) },
    { name: 'w/v', tensor: tf.zeros([4]) },
  ]);
  const weight = tf.variable(tf.ones([3]));
  assert.throws(
    () => optimizer.minimize(() => weight.square().sum() as never, false, [weight]),
    /the restored state is for 1 variables of other shapes than the 1 being trained/,
  );
  optimizer.dispose();
  weight.dispose();
});
