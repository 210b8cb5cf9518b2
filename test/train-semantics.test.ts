import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { LayersModel, Tensor1D } from '@tensorflow/tfjs-node';
import type { EarlyStopping as EarlyStoppingConfig } from '../src/config/resolved.ts';
import { tf } from '../src/tfjs/tf.ts';
import { EarlyStopping } from '../src/train/callbacks.ts';
import type { EpochRecord, TrainingControl } from '../src/train/engine.ts';
import { batchLoss, balancedClassWeights } from '../src/train/objective.ts';
import { learningRateAt } from '../src/train/optimizers.ts';
import { python } from './helpers/python.ts';

/** The training semantics tlx claims from Keras, each against Keras's own numbers on the same inputs. */

interface StoppingCase {
  name: string;
  config: EarlyStoppingConfig;
  values: number[];
}

const stoppingCases: StoppingCase[] = [
  {
    name: 'val_loss, patience 3: stops on the 3rd epoch without improvement',
    config: { monitor: 'val_loss', patience: 3, min_delta: 0, restore_best_weights: true },
    values: [1.0, 0.8, 0.85, 0.9, 0.95, 0.7, 0.6],
  },
  {
    name: 'patience 0: stops at the first epoch without improvement, never the first epoch',
    config: { monitor: 'val_loss', patience: 0, min_delta: 0, restore_best_weights: true },
    values: [1.0, 1.2, 0.5],
  },
  {
    name: 'min_delta: small improvements do not count',
    config: { monitor: 'val_loss', patience: 2, min_delta: 0.1, restore_best_weights: true },
    values: [1.0, 0.95, 0.92, 0.5, 0.45],
  },
  {
    name: 'val_accuracy is maximised',
    config: { monitor: 'val_accuracy', patience: 1, min_delta: 0, restore_best_weights: true },
    values: [0.5, 0.7, 0.65, 0.9],
  },
  {
    name: 'no stop: the best weights are still restored at the end',
    config: { monitor: 'val_loss', patience: 5, min_delta: 0, restore_best_weights: true },
    values: [1.0, 0.5, 0.7, 0.8],
  },
  {
    name: 'restore_best_weights off: the last weights stay',
    config: { monitor: 'loss', patience: 1, min_delta: 0, restore_best_weights: false },
    values: [1.0, 0.5, 0.6, 0.7],
  },
];

/** Keras's EarlyStopping driven by the same values; the model's weight is set to the epoch so restoring shows which. */
async function kerasStopping(cases: StoppingCase[]): Promise<{ epochs: number; weight: number }[]> {
  const out = await python(
    `import json, sys
import numpy as np
import keras
results = []
for case in json.loads(sys.stdin.read()):
    c = case["config"]
    mode = "min" if c["monitor"].endswith("loss") else "max"
    callback = keras.callbacks.EarlyStopping(monitor=c["monitor"], patience=c["patience"], min_delta=c["min_delta"], restore_best_weights=c["restore_best_weights"], mode=mode)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    model.stop_training = False
    callback.set_model(model)
    callback.on_train_begin()
    epochs = 0
    for epoch, value in enumerate(case["values"]):
        model.layers[0].kernel.assign(np.array([[float(epoch)]], dtype="float32"))
        epochs += 1
        callback.on_epoch_end(epoch, {c["monitor"]: value})
        if model.stop_training:
            break
    callback.on_train_end()
    results.append({"epochs": epochs, "weight": float(model.layers[0].kernel.numpy()[0, 0])})
print(json.dumps(results))`,
    [],
    JSON.stringify(cases),
  );
  return JSON.parse(out) as { epochs: number; weight: number }[];
}

async function tlxStopping(testCase: StoppingCase): Promise<{ epochs: number; weight: number }> {
  const model: LayersModel = tf.sequential({
    layers: [tf.layers.dense({ units: 1, useBias: false, inputShape: [1] })],
  });
  const callback = new EarlyStopping(testCase.config, model);
  let stopped = false;
  const control: TrainingControl = {
    stop() {
      stopped = true;
    },
  };
  const first = 1;
  callback.onPhaseBegin({ phase: 'fine_tune', first, last: testCase.values.length, resumeAfter: 0 });
  let epochs = 0;
  for (const [i, value] of testCase.values.entries()) {
    const weight = tf.tensor2d([[i]]);
    model.weights[0].write(weight);
    weight.dispose();
    epochs++;
    const record = {
      epoch: first + i,
      phase: 'fine_tune',
      loss: value,
      accuracy: value,
      val_loss: value,
      val_accuracy: value,
      learning_rate: 0,
      seconds: 0,
      time: 0,
    } as EpochRecord;
    await callback.onEpochEnd(record, control);
    if (stopped) break;
  }
  callback.onPhaseEnd({
    phase: 'fine_tune',
    first,
    last: testCase.values.length,
    resumeAfter: 0,
    lastTrained: first + epochs - 1,
    complete: true,
    stopReason: stopped ? 'early_stopping' : undefined,
  });
  const weight = model.weights[0].read().dataSync()[0];
  model.dispose();
  return { epochs, weight };
}

describe('early stopping is keras.callbacks.EarlyStopping', () => {
  let keras: { epochs: number; weight: number }[];
  test('Keras runs the cases', async () => {
    keras = await kerasStopping(stoppingCases);
    assert.equal(keras.length, stoppingCases.length);
  });
  stoppingCases.forEach((testCase, i) => {
    test(testCase.name, async () => {
      const ours = await tlxStopping(testCase);
      assert.deepEqual(
        ours,
        keras[i],
        `tlx trained ${ours.epochs} epochs and ends with epoch ${ours.weight}'s weights; Keras ${keras[i].epochs} and ${keras[i].weight}`,
      );
    });
  });
});

describe('learning-rate schedules are keras.optimizers.schedules.CosineDecay, one step per epoch', () => {
  const cases = [
    { base: 0.001, schedule: { name: 'cosine' as const, warmup_epochs: 0, min_learning_rate: 0 }, epochs: 10 },
    { base: 0.01, schedule: { name: 'cosine' as const, warmup_epochs: 3, min_learning_rate: 0.0005 }, epochs: 12 },
    { base: 0.0001, schedule: { name: 'constant' as const, warmup_epochs: 4, min_learning_rate: 0 }, epochs: 6 },
  ];
  test('warm-up, then constant or cosine decay, epoch by epoch', async () => {
    const out = await python(
      `import json, sys
import keras
results = []
for case in json.loads(sys.stdin.read()):
    base, s, epochs = case["base"], case["schedule"], case["epochs"]
    warmup = min(s["warmup_epochs"], epochs)
    decay = max(1, epochs - warmup) if s["name"] == "cosine" else 10**9
    schedule = keras.optimizers.schedules.CosineDecay(initial_learning_rate=0.0, decay_steps=decay, alpha=(s["min_learning_rate"] / base) if s["name"] == "cosine" else 1.0, warmup_target=base, warmup_steps=warmup + 1)
    results.append([float(schedule(e + 1)) for e in range(epochs)])
print(json.dumps(results))`,
      [],
      JSON.stringify(cases),
    );
    const keras = JSON.parse(out) as number[][];
    cases.forEach((c, i) => {
      const ours = Array.from({ length: c.epochs }, (_, e) => learningRateAt(c.base, c.schedule, e, c.epochs));
      ours.forEach((value, e) =>
        assert.ok(
          Math.abs(value - keras[i][e]) <= 1e-6 * c.base + 1e-12,
          `case ${i} epoch ${e}: tlx ${value}, Keras ${keras[i][e]}`,
        ),
      );
    });
  });
});

describe('losses are Keras losses: label smoothing and class weights', () => {
  const logits2 = [[0.3], [-1.2], [2.0], [0.1], [-0.4]];
  const labels2 = [1, 0, 1, 1, 0];
  const logits5 = [
    [0.1, 0.5, -0.3, 1.2, 0.0],
    [2.0, -1.0, 0.3, 0.2, 0.1],
    [-0.5, 0.4, 1.5, -0.2, 0.9],
    [0.0, 0.0, 0.1, 0.2, 3.0],
  ];
  const labels5 = [3, 0, 2, 1];
  const cases = [
    {
      head: 'binary_logit' as const,
      logits: logits2,
      labels: labels2,
      classCount: 2,
      smoothing: 0,
      weights: undefined,
    },
    {
      head: 'binary_logit' as const,
      logits: logits2,
      labels: labels2,
      classCount: 2,
      smoothing: 0.1,
      weights: [0.7, 2.5],
    },
    {
      head: 'softmax_logits' as const,
      logits: logits5,
      labels: labels5,
      classCount: 5,
      smoothing: 0,
      weights: undefined,
    },
    {
      head: 'softmax_logits' as const,
      logits: logits5,
      labels: labels5,
      classCount: 5,
      smoothing: 0.2,
      weights: balancedClassWeights(Int32Array.from([0, 0, 1, 2, 2, 2, 3, 4]), 5),
    },
  ];
  test('BinaryCrossentropy / CategoricalCrossentropy (from_logits) with label_smoothing, weighted as fit(class_weight=...)', async () => {
    const out = await python(
      `import json, sys
import numpy as np
import keras
results = []
for case in json.loads(sys.stdin.read()):
    logits = np.array(case["logits"], dtype="float32")
    labels = np.array(case["labels"])
    weights = None if case.get("weights") is None else np.array(case["weights"], dtype="float32")[labels]
    if case["head"] == "binary_logit":
        loss = keras.losses.BinaryCrossentropy(from_logits=True, label_smoothing=case["smoothing"])
        y = labels.reshape(-1, 1).astype("float32")
    else:
        loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=case["smoothing"])
        y = keras.utils.to_categorical(labels, case["classCount"])
    results.append(float(loss(y, logits, sample_weight=weights)))
print(json.dumps(results))`,
      [],
      JSON.stringify(cases),
    );
    const keras = JSON.parse(out) as number[];
    cases.forEach((c, i) => {
      const value = tf.tidy(
        () =>
          batchLoss(
            { head: c.head, classCount: c.classCount, labelSmoothing: c.smoothing, classWeights: c.weights },
            tf.tensor2d(c.logits),
            tf.tensor1d(c.labels, 'int32') as Tensor1D,
          ).dataSync()[0],
      );
      assert.ok(Math.abs(value - keras[i]) < 1e-5, `case ${i}: tlx ${value}, Keras ${keras[i]}`);
    });
  });

  test("class_weight 'auto' is sklearn's balanced: n_samples / (n_classes x count)", () => {
    assert.deepEqual(balancedClassWeights(Int32Array.from([0, 0, 0, 1]), 2), [4 / 6, 2]);
  });
});
