import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import type { Tensor, Tensor1D, Tensor4D } from '@tensorflow/tfjs-node';
import { ImageSplit } from '../src/data/images.ts';
import { buildClassifier, setPhaseTrainable, type Classifier } from '../src/models/classifier.ts';
import { compileGraph, StagedModel } from '../src/engine/graph.ts';
import { mobileNetV2 } from '../src/models/mobilenet_v2.ts';
import { isPointwiseConv } from '../src/engine/pointwise.ts';
import { namedVariables } from '../src/models/variables.ts';
import type { AugmentationOp } from '../src/config/resolved.ts';
import { Random } from '../src/core/random.ts';
import { augmentBatch, imageVariants } from '../src/data/augment.ts';
import { assignWeights, readKerasH5, readNsfwjsMobileNetV2, readTfjsModelJson } from '../src/models/weights.ts';
import { imagenetWeightsFile, type BaseModelName } from '../src/config/bases.ts';
import { nativeBackend } from '../src/tfjs/internals.ts';
import { tf } from '../src/tfjs/tf.ts';
import {
  evaluate,
  fitPhase,
  validationOfCurrentWeights,
  type EpochRecord,
  type Evaluation,
  type FitInputs,
  type PhaseEnd,
} from '../src/train/engine.ts';
import { FrozenPrefixStore } from '../src/engine/frozen-outputs.ts';
import { createOptimizer } from '../src/train/optimizers.ts';
import { writeClassFolders } from './helpers/images.ts';
import { baseArgs, kerasBatch, parityJob, type KerasLayer, type Parity } from './helpers/keras.ts';
import { tempDir } from './helpers/tmp.ts';

const work = tempDir('tlx-model-');

const v2 = { base: 'mobilenet_v2', minimalistic: false } as const;

const layerShapes = [
  [1.0, 160, 160],
  [0.35, 96, 128],
] as const;
const legacyH5 = path.join(work, 'random_0.35_96_no_top.h5');

/** What the tests below ask Keras, answered by one Python process (TensorFlow starts once). */
const keras = {
  layers: [] as KerasLayer[][],
  nsfwjs: { assigned: 0, missing: [] as string[], parity: undefined as Parity | undefined },
  rectangular: undefined as Parity | undefined,
};

before(async () => {
  const nsfwjsBase = mobileNetV2({ alpha: 1.0, inputShape: [96, 96, 3] });
  Object.assign(
    keras.nsfwjs,
    assignWeights(nsfwjsBase, await readNsfwjsMobileNetV2(), { requireAll: true, what: 'nsfwjs' }),
  );
  const rectangular = mobileNetV2({ alpha: 0.5, inputShape: [32, 48, 3] });
  rectangular.weights.forEach((w, i) => {
    const value = w.name.includes('moving_variance')
      ? tf.randomUniform(w.shape as number[], 0.5, 1.5, 'float32', i)
      : tf.randomNormal(w.shape as number[], 0, 0.1, 'float32', i);
    w.write(value);
    value.dispose();
  });
  const parities = [
    await parityJob(nsfwjsBase, { ...v2, alpha: 1.0 }, work),
    await parityJob(rectangular, { ...v2, alpha: 0.5 }, work),
  ];
  const printed = await kerasBatch([
    ...layerShapes.map(([alpha, height, width]): [string, string[]] => [
      'layers',
      baseArgs({ ...v2, alpha }, height, width),
    ]),
    ...parities.map((p) => p.job),
    ['h5', ['mobilenet_v2', '0.35', '96', '0', legacyH5, '3']],
  ]);
  keras.layers = layerShapes.map((_, i) => JSON.parse(printed[i]) as KerasLayer[]);
  [keras.nsfwjs.parity, keras.rectangular] = parities.map((p) => p.compare());
  nsfwjsBase.dispose();
  rectangular.dispose();
});

describe('MobileNetV2 as Keras builds it', () => {
  for (const [i, [alpha, height, width]] of layerShapes.entries()) {
    test(`every layer name by index equals Keras's (alpha ${alpha}, ${height}x${width})`, () => {
      const reference = keras.layers[i];
      const ours = mobileNetV2({ alpha, inputShape: [height, width, 3] });
      assert.equal(ours.layers.length, reference.length);
      assert.equal(ours.layers.length, 154, 'Keras prints 154 layers for the base');
      ours.layers.forEach((layer, i) => {
        assert.equal(layer.name, reference[i].name, `layer ${i}`);
        const shapes = layer.weights.map((w) => w.shape.join('x'));
        assert.deepEqual(
          shapes,
          reference[i].weights.map(([, shape]) => shape.join('x')),
          `weights of layer ${i} (${layer.name})`,
        );
      });
      assert.deepEqual(ours.outputs[0].shape.slice(1), [
        Math.ceil(height / 32),
        Math.ceil(width / 32),
        alpha > 1 ? 1792 : 1280,
      ]);
    });
  }

  test('fine_tune_at 100 leaves 56 trainable variables; feature extraction leaves 2', () => {
    const classifier = buildClassifier({
      base: 'mobilenet_v2',
      alpha: 1.0,
      imageSize: [160, 160],
      classCount: 2,
      dropout: 0.2,
      seed: 1,
    });
    assert.equal(classifier.base.layers.length, 154);
    assert.equal(setPhaseTrainable(classifier, 'feature_extraction', 100), 2);
    assert.equal(setPhaseTrainable(classifier, 'fine_tune', 100), 56);
    assert.equal(setPhaseTrainable(classifier, 'fine_tune', 154), 2);
    assert.equal(setPhaseTrainable(classifier, 'fine_tune', 0), 158);
  });

  test('with the nsfwjs pretrained weights, outputs equal Keras MobileNetV2 on the same weights within 1e-4', () => {
    assert.equal(keras.nsfwjs.assigned, 260);
    assert.deepEqual(keras.nsfwjs.missing, []);
    const diff = keras.nsfwjs.parity!.maxDiff;
    assert.ok(diff < 1e-4, `max abs diff ${diff}`);
  });

  test('a rectangular input from 32 px works and matches Keras (alpha 0.5, 32x48)', () => {
    const diff = keras.rectangular!.maxDiff;
    assert.ok(diff < 1e-4, `max abs diff ${diff}`);
  });
});

describe('weight loaders', () => {
  test('a legacy Keras .h5 loads by layer and weight name, and matches Keras', async () => {
    const weights = await readKerasH5(legacyH5);
    assert.equal(weights.get('block_1_depthwise/kernel')?.shape.join('x'), '3x3x96x1'.replace('96', '48'));
    const base = mobileNetV2({ alpha: 0.35, inputShape: [96, 96, 3] });
    const { assigned } = assignWeights(base, weights, { requireAll: true, what: 'h5' });
    assert.equal(assigned, 260);
    const conv = namedVariables(base)
      .find(([key]) => key === 'Conv1/kernel')![1]
      .read()
      .dataSync();
    assert.deepEqual(Array.from(conv.slice(0, 5)), Array.from(weights.get('Conv1/kernel')!.values.slice(0, 5)));
  });

  test('a shape mismatch is an error naming the layer', async () => {
    const weights = await readKerasH5(legacyH5);
    const base = mobileNetV2({ alpha: 1.0, inputShape: [96, 96, 3] });
    assert.throws(
      () => assignWeights(base, weights, { requireAll: true, what: 'model.weights (x.h5)' }),
      /model\.weights \(x\.h5\): layer Conv1: weight Conv1\/kernel has shape \[3, 3, 3, 16\], the model expects \[3, 3, 3, 32\]/,
    );
  });

  test('a file that is not HDF5 is a clear error', async () => {
    const file = path.join(work, 'not.h5');
    fs.writeFileSync(file, 'hello');
    await assert.rejects(readKerasH5(file), /not a readable HDF5 file/);
  });

  test('a tfjs model.json loads by name', async () => {
    const base = mobileNetV2({ alpha: 0.35, inputShape: [64, 64, 3] });
    await base.save(`file://${path.join(work, 'tfjs')}`);
    const weights = await readTfjsModelJson(path.join(work, 'tfjs', 'model.json'));
    const fresh = mobileNetV2({ alpha: 0.35, inputShape: [64, 64, 3] });
    assert.equal(assignWeights(fresh, weights, { requireAll: true, what: 'model.json' }).assigned, 260);
    const x = tf.randomUniform([1, 64, 64, 3], -1, 1, 'float32', 9);
    const diff = tf.tidy(
      () =>
        (base.predict(x) as Tensor)
          .sub(fresh.predict(x) as Tensor)
          .abs()
          .max()
          .dataSync()[0],
    );
    assert.equal(diff, 0);
    x.dispose();
  });

  test('imagenet resolves to the Keras application file, nearest resolution otherwise', () => {
    const v2 = { base: 'mobilenet_v2', minimalistic: false } as const;
    assert.deepEqual(imagenetWeightsFile({ ...v2, alpha: 1.0 }, [160, 160]), {
      url: 'https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160_no_top.h5',
      resolution: 160,
    });
    assert.equal(imagenetWeightsFile({ ...v2, alpha: 0.35 }, [100, 100])?.url.endsWith('_0.35_96_no_top.h5'), true);
    assert.equal(imagenetWeightsFile({ ...v2, alpha: 1.4 }, [200, 200])?.resolution, 192);
  });
});

/** Class folders a/b of small generated images, decoded into memory. */
async function tinySplit(name: string, perClass: number): Promise<ImageSplit> {
  await writeClassFolders(path.join(work, name), ['a', 'b'], perClass, { size: 32 });
  const samples = ['a', 'b'].flatMap((c, label) =>
    fs.readdirSync(path.join(work, name, c)).map((f) => ({ file: path.join(work, name, c, f), label })),
  );
  return ImageSplit.load(samples, [32, 32], 'memory').split;
}

/** One phase of SGD on a split (training and validation alike), as tlx runs it. */
async function trainPhase(
  classifier: Classifier,
  phase: 'feature_extraction' | 'fine_tune',
  split: ImageSplit,
  options: {
    epochs: number;
    batchSize: number;
    learningRate: number;
    seed: number;
    cacheFrozenOutputs: boolean;
    augmentation?: AugmentationOp[];
    sharedPrefix?: FitInputs['sharedPrefix'];
    cacheStorage?: FitInputs['cacheStorage'];
    beforeTraining?: FitInputs['beforeTraining'];
    log?: (message: string) => void;
    onEpochEnd?: (record: EpochRecord) => void;
  },
): Promise<PhaseEnd> {
  const ops = options.augmentation ?? [];
  const optimizer = createOptimizer({ name: 'sgd', learning_rate: options.learningRate });
  try {
    return await fitPhase(
      {
        model: classifier.model,
        objective: { head: classifier.head, classCount: 2, labelSmoothing: 0 },
        train: split,
        validation: split,
        batchSize: options.batchSize,
        seed: options.seed,
        augment: (images: Tensor4D, random: Random) => augmentBatch(images, ops, random),
        variants: options.cacheFrozenOutputs ? imageVariants(ops) : undefined,
        sharedPrefix: options.sharedPrefix,
        cacheStorage: options.cacheStorage,
        beforeTraining: options.beforeTraining,
        log: options.log ?? (() => {}),
      },
      { phase, first: 1, last: options.epochs, resumeAfter: 0, optimizer, learningRateAt: () => options.learningRate },
      [{ onEpochEnd: (record) => options.onEpochEnd?.(record) }],
    );
  } finally {
    optimizer.dispose();
  }
}

type Snapshot = Map<string, Buffer>;

function snapshotOf(variables: [string, { read(): Tensor }][]): Snapshot {
  return new Map(
    variables.map(([key, v]) => [key, Buffer.from((v.read().dataSync() as Float32Array).buffer.slice(0))]),
  );
}

/** BatchNorm's moving statistics and EfficientNet's Normalization statistics: never trained. */
function isStatistic(key: string): boolean {
  return (
    key.endsWith('moving_mean') || key.endsWith('moving_variance') || /^normalization\/(mean|variance|count)$/.test(key)
  );
}

/** The BatchNorm moving statistics whose bytes differ between two snapshots. */
function movedStatistics(before: Snapshot, after: Snapshot): string[] {
  return [...before].filter(([key, bytes]) => isStatistic(key) && !bytes.equals(after.get(key)!)).map(([key]) => key);
}

describe('freezing as Keras does', () => {
  test("the moving-statistics check catches a BatchNorm that updates them (tfjs-layers' own, in fit)", async () => {
    const model = tf.sequential({
      layers: [
        tf.layers.dense({ units: 4, inputShape: [3], name: 'd' }),
        tf.layers.batchNormalization({ name: 'bn' }),
        tf.layers.dense({ units: 1, name: 'out' }),
      ],
    });
    model.compile({ optimizer: 'sgd', loss: 'meanSquaredError' });
    const variables = namedVariables(model);
    const before = snapshotOf(variables);
    const [x, y] = [tf.randomNormal([16, 3], 0, 3, 'float32', 1), tf.randomNormal([16, 1], 0, 1, 'float32', 2)];
    await model.fit(x, y, { epochs: 1, batchSize: 8, verbose: 0 });
    assert.deepEqual(movedStatistics(before, snapshotOf(variables)).sort(), ['bn/moving_mean', 'bn/moving_variance']);
    tf.dispose([x, y]);
    model.dispose();
  });

  for (const { base, alpha, fineTuneAt } of [
    { base: 'mobilenet_v2', alpha: 0.35, fineTuneAt: 100 },
    { base: 'mobilenet_v3_small', alpha: 0.75, fineTuneAt: 100 },
    { base: 'mobilenet_v3_large', alpha: 0.75, fineTuneAt: 130 },
    { base: 'efficientnet_b0', alpha: 1, fineTuneAt: 190 },
  ] as const) {
    test(`${base}: after each phase, BatchNorm moving statistics are unchanged and frozen kernels are unchanged bit for bit`, async () => {
      const split = await tinySplit('tiny', 12);
      const classifier = buildClassifier({ base, alpha, imageSize: [32, 32], classCount: 2, dropout: 0.2, seed: 3 });
      const bases = namedVariables(classifier.base);
      // Non-trivial statistics, so that training-mode BN would visibly move them.
      bases.forEach(([key, variable], i) => {
        const value = key.endsWith('moving_variance')
          ? tf.randomUniform(variable.shape as number[], 0.5, 2, 'float32', i)
          : tf.randomNormal(variable.shape as number[], 0, 0.1, 'float32', i);
        variable.write(value);
        value.dispose();
      });
      const snapshot = () => snapshotOf(bases);
      const trainableLayerNames = new Set(classifier.base.layers.slice(fineTuneAt).map((l) => l.name));
      for (const phase of ['feature_extraction', 'fine_tune'] as const) {
        const before = snapshot();
        setPhaseTrainable(classifier, phase, fineTuneAt);
        await trainPhase(classifier, phase, split, {
          epochs: 1,
          batchSize: 8,
          learningRate: 0.5,
          seed: 1,
          cacheFrozenOutputs: false,
        });
        const after = snapshot();
        let changed = 0;
        assert.deepEqual(movedStatistics(before, after), [], `${phase}: moving statistics moved`);
        for (const [key, bytes] of before) {
          const layer = key.slice(0, key.lastIndexOf('/'));
          const same = bytes.equals(after.get(key)!);
          if (isStatistic(key)) continue;
          if (phase === 'feature_extraction' || !trainableLayerNames.has(layer))
            assert.ok(same, `${phase}: frozen ${key} changed`);
          else if (!same) changed++;
        }
        if (phase === 'fine_tune') assert.ok(changed > 20, `fine-tuning changed only ${changed} unfrozen variables`);
      }
    });
  }
});

/** A small classifier with non-trivial BatchNorm statistics and weights. */
/**
 * A classifier with random weights and BatchNorm statistics. The larger bases keep their
 * built kernels (variance-preserving): N(0, 0.2) kernels at alpha 1.0 drive EfficientNet's
 * logits into the thousands, where the order of float sums shows.
 */
function randomClassifier(seed: number, size = 32, base: BaseModelName = 'mobilenet_v2'): Classifier {
  const small = base === 'mobilenet_v2';
  const classifier = buildClassifier({
    base,
    alpha: small ? 0.35 : 1.0,
    imageSize: [size, size],
    classCount: 2,
    dropout: 0.2,
    seed,
  });
  namedVariables(classifier.model).forEach(([key, variable], i) => {
    const shape = variable.shape as number[];
    const batchNorm = /(gamma|beta|moving_mean|moving_variance)$/.test(key);
    if (!small && !batchNorm) return;
    const value = key.endsWith('moving_variance')
      ? tf.randomUniform(shape, 0.5, 2, 'float32', seed + i)
      : key.endsWith('gamma')
        ? tf.randomUniform(shape, 0.5, 1.5, 'float32', seed + i)
        : tf.randomNormal(shape, 0, 0.2, 'float32', seed + i);
    variable.write(value);
    value.dispose();
  });
  return classifier;
}

/** Loss within 1e-5 and every gradient within 1e-3 of its largest entry: the same function up to the order of float sums. */
function assertSameLossAndGradients(
  reference: ReturnType<typeof tf.variableGrads>,
  ours: ReturnType<typeof tf.variableGrads>,
): void {
  const referenceLoss = reference.value.dataSync()[0];
  assert.ok(Math.abs(ours.value.dataSync()[0] - referenceLoss) < 1e-5 * Math.max(1, Math.abs(referenceLoss)), 'loss');
  const worst = tf.tidy(() => {
    let largest = 0;
    for (const [name, gradient] of Object.entries(reference.grads)) {
      const scale = Math.max(1e-6, gradient.abs().max().dataSync()[0]);
      largest = Math.max(largest, ours.grads[name].sub(gradient).abs().max().dataSync()[0] / scale);
    }
    return largest;
  });
  assert.ok(worst < 1e-3, `largest gradient difference ${worst} (relative to each gradient's largest entry)`);
}

/** The names of the native TensorFlow ops `run` executes (recorded by the backend as it runs them). */
function nativeOpsOf(run: () => void): Map<string, number> {
  const backend = nativeBackend();
  const executed = new Map<string, number>();
  const record = (name: string) => executed.set(name, (executed.get(name) ?? 0) + 1);
  const [single, multiple] = [backend.executeSingleOutput, backend.executeMultipleOutputs];
  backend.executeSingleOutput = (name, ...rest) => (record(name), single.call(backend, name, ...rest));
  backend.executeMultipleOutputs = (name, ...rest) => (record(name), multiple.call(backend, name, ...rest));
  try {
    run();
  } finally {
    [backend.executeSingleOutput, backend.executeMultipleOutputs] = [single, multiple];
  }
  return executed;
}

describe('the staged graph runner (BatchNorm folded into fused conv kernels)', () => {
  test('every Conv -> BatchNorm of MobileNetV2 is folded; ReLU6 joins where Keras has one', () => {
    const classifier = buildClassifier({
      base: 'mobilenet_v2',
      alpha: 1.0,
      imageSize: [96, 96],
      classCount: 5,
      dropout: 0.2,
      seed: 1,
    });
    const steps = compileGraph(classifier.model).steps;
    const fused = steps.filter((step) => step.kind === 'conv_bn');
    assert.equal(fused.length, 52, '35 convs + 17 depthwise convs, each followed by BatchNorm');
    assert.equal(
      fused.filter((step) => step.kind === 'conv_bn' && step.options.activation === 'Relu6').length,
      35,
      'all but the 17 linear projections',
    );
    assert.equal(fused.filter((step) => step.kind === 'conv_bn' && step.depthwise).length, 17);
  });

  test('fine_tune_at 100: no trainable weight in the frozen stage; loss and gradients equal the whole model on the tape', () => {
    const classifier = randomClassifier(7);
    setPhaseTrainable(classifier, 'fine_tune', 100);
    const staged = new StagedModel(classifier.model);
    for (const step of staged.split.frozen)
      for (const layer of step.layers)
        assert.equal(layer.trainableWeights.length, 0, `${layer.name} trains but is in the frozen stage`);
    assert.ok(
      staged.split.frozen.length > 30 && staged.split.trainable.length > 15,
      'the cut is at layer 100, not at either end',
    );
    assert.equal(staged.split.frozenOutputs.length, 2, 'the cut at layer 100 crosses a residual connection');
    assert.equal(staged.variables.length, 56);
    const images = tf.randomUniform([4, 32, 32, 3], 0, 255, 'float32', 3);
    const labels = tf.tensor1d([0, 1, 1, 0], 'float32') as Tensor1D;
    const loss = (logits: Tensor) => tf.losses.sigmoidCrossEntropy(labels.reshape([-1, 1]), logits);
    const reference = tf.variableGrads(
      () => loss(classifier.model.apply(images, { training: false }) as Tensor) as never,
      staged.variables,
    );
    const frozenOutputs = staged.frozen(images);
    const ours = tf.variableGrads(() => loss(staged.trainable(frozenOutputs, false)) as never, staged.variables);
    assertSameLossAndGradients(reference, ours);
    tf.dispose([
      images,
      labels,
      reference.value,
      ours.value,
      ...frozenOutputs,
      ...Object.values(reference.grads),
      ...Object.values(ours.grads),
    ]);
    staged.dispose();
  });

  test("1x1 convs train as matrix products: no Conv2DBackprop kernel at fine_tune_at 100, and the convolution's output and gradients", async () => {
    const classifier = randomClassifier(11);
    setPhaseTrainable(classifier, 'fine_tune', 100);
    const staged = new StagedModel(classifier.model);
    const images = tf.randomUniform([2, 32, 32, 3], 0, 255, 'float32', 5);
    const frozenOutputs = staged.frozen(images);
    const loss = () => staged.trainable(frozenOutputs, true, 1).square().mean() as never;
    const kernels = nativeOpsOf(() => tf.dispose(Object.values(tf.variableGrads(loss, staged.variables).grads)));
    assert.ok(kernels.has('MatMul'), `expected matrix products among ${[...kernels.keys()].join(', ')}`);
    assert.deepEqual(
      [...kernels.keys()].filter((name) => name.startsWith('Conv2DBackprop')),
      [],
      'every trainable conv of MobileNetV2 above 100 is 1x1',
    );

    // One 1x1 conv with a bias: the layer's own convolution against the matrix-product path.
    const conv = tf.layers.conv2d({
      filters: 6,
      kernelSize: 1,
      useBias: true,
      biasInitializer: 'randomNormal',
      kernelInitializer: tf.initializers.glorotUniform({ seed: 3 }),
    });
    const input = tf.input({ shape: [5, 7, 4] });
    const model = tf.model({ inputs: input, outputs: conv.apply(input) as never });
    const x = tf.randomNormal([3, 5, 7, 4], 0, 1, 'float32', 9);
    const variables = conv.weights.map((weight) => weight.read() as never);
    const viaConv = tf.variableGrads(
      () =>
        tf
          .conv2d(x as Tensor4D, conv.getWeights()[0] as Tensor4D, 1, 'same')
          .add(conv.getWeights()[1])
          .square()
          .sum() as never,
      variables,
    );
    const stagedConv = new StagedModel(model);
    let viaStage!: ReturnType<typeof tf.variableGrads>;
    const stageKernels = nativeOpsOf(
      () => (viaStage = tf.variableGrads(() => stagedConv.trainable([x], true).square().sum() as never, variables)),
    );
    assert.ok(
      stageKernels.has('MatMul') && !stageKernels.has('BatchMatMulV2'),
      `the MatMul kernel, not tf.matMul's BatchMatMulV2, among ${[...stageKernels.keys()].join(', ')}`,
    );
    assert.ok(
      Math.abs(viaStage.value.dataSync()[0] - viaConv.value.dataSync()[0]) < 1e-4 * viaConv.value.dataSync()[0],
      'output',
    );
    for (const name of Object.keys(viaConv.grads)) {
      const difference = viaStage.grads[name].sub(viaConv.grads[name]).abs().max().dataSync()[0];
      assert.ok(
        difference < 1e-4 * viaConv.grads[name].abs().max().dataSync()[0],
        `gradient of ${name}: ${difference}`,
      );
    }
    tf.dispose([
      images,
      x,
      ...frozenOutputs,
      viaConv.value,
      viaStage.value,
      ...Object.values(viaConv.grads),
      ...Object.values(viaStage.grads),
    ]);
    staged.dispose();
    stagedConv.dispose();
    model.dispose();
  });

  // Odd sizes too: Keras's ZeroPadding before a strided conv pads (1, 1) there, (0, 1) on even sizes.
  for (const [base, size] of [
    ['mobilenet_v2', 32],
    ['mobilenet_v3_small', 33],
    ['efficientnet_b0', 35],
  ] as const) {
    test(`${base} at ${size} px, whole model trainable: each Conv -> BatchNorm chain (with its ZeroPadding) trains as one fused kernel (no BatchNorm gradient kernel), with the layers' gradients`, () => {
      const classifier = randomClassifier(13, size, base);
      setPhaseTrainable(classifier, 'fine_tune', 0);
      const staged = new StagedModel(classifier.model);
      assert.deepEqual(
        staged.split.frozen.filter((step) => step.kind === 'conv_bn'),
        [],
        'every conv trains, the first one too',
      );
      const paddings = staged.graph.steps.filter((step) =>
        step.layers.some((layer) => layer.getClassName() === 'ZeroPadding2D'),
      );
      assert.ok(
        paddings.length >= 4 && paddings.every((step) => step.kind === 'conv_bn' && step.options.padding === 'SAME'),
        'every ZeroPadding is taken into its strided conv as SAME',
      );
      const images = tf.randomUniform([2, size, size, 3], 0, 255, 'float32', 4);
      const labels = tf.tensor1d([0, 1], 'float32') as Tensor1D;
      const loss = (logits: Tensor) => tf.losses.sigmoidCrossEntropy(labels.reshape([-1, 1]), logits);
      const reference = tf.variableGrads(
        () => loss(classifier.model.apply(images, { training: false }) as Tensor) as never,
        staged.variables,
      );
      const frozenOutputs = staged.frozen(images); // the preprocessing layers
      let ours!: ReturnType<typeof tf.variableGrads>;
      const executed = nativeOpsOf(
        () => (ours = tf.variableGrads(() => loss(staged.trainable(frozenOutputs, false)) as never, staged.variables)),
      );
      assert.deepEqual(
        [...executed.keys()].filter((name) => name.startsWith('FusedBatchNorm')),
        [],
        `BatchNorm runs as kernels of its own: ${[...executed.keys()].join(', ')}`,
      );
      // Only convs outside a chain that are no matrix product (EfficientNet's squeeze-excite convs carry their activation) backprop to their input.
      const unchainedConvs = staged.split.trainable.filter(
        (step) =>
          step.kind === 'layer' && step.layers[0].getClassName() === 'Conv2D' && !isPointwiseConv(step.layers[0]),
      ).length;
      assert.equal(
        executed.get('Conv2DBackpropInput') ?? 0,
        unchainedConvs,
        'the first conv computes no gradient for the images',
      );
      assert.ok(executed.has('BiasAddGrad'), "the folded chains' bias gradient");
      assert.ok(
        executed.has('_MklNativeDepthwiseConv2dNativeBackpropInput') &&
          !executed.has('DepthwiseConv2dNativeBackpropInput'),
        "depthwise input gradients from oneDNN's kernel (compared with the layers' below)",
      );
      assertSameLossAndGradients(reference, ours);
      tf.dispose([
        images,
        labels,
        reference.value,
        ours.value,
        ...frozenOutputs,
        ...Object.values(reference.grads),
        ...Object.values(ours.grads),
      ]);
      staged.dispose();
    });
  }

  test('caching the frozen stage (no augmentation) gives the metrics of recomputing it, in both phases, and leaks no tensor', async () => {
    const split = await tinySplit('cache', 10);
    const pretrained = await readNsfwjsMobileNetV2();
    // Pretrained weights and a small learning rate: training that moves smoothly, so the two
    // paths' last-bit differences (batch composition in oneDNN kernels) stay last-bit.
    const runBoth = async (cacheFrozenOutputs: boolean) => {
      const classifier = buildClassifier({
        base: 'mobilenet_v2',
        alpha: 1.0,
        imageSize: [32, 32],
        classCount: 2,
        dropout: 0.2,
        seed: 11,
      });
      assignWeights(classifier.base, pretrained, { requireAll: true, what: 'nsfwjs' });
      const records: EpochRecord[] = [];
      for (const phase of ['feature_extraction', 'fine_tune'] as const) {
        setPhaseTrainable(classifier, phase, 100);
        const before = tf.memory().numTensors;
        await trainPhase(classifier, phase, split, {
          epochs: 3,
          batchSize: 6,
          learningRate: phase === 'fine_tune' ? 0.001 : 0.01,
          seed: 2,
          cacheFrozenOutputs,
          onEpochEnd: (record) => records.push(record),
        });
        assert.equal(tf.memory().numTensors, before, `${phase} (cache ${cacheFrozenOutputs}) left tensors behind`);
      }
      classifier.model.dispose();
      return records;
    };
    const cached = await runBoth(true);
    const recomputed = await runBoth(false);
    assert.equal(cached.length, 6);
    cached.forEach((record, i) => {
      for (const key of ['loss', 'val_loss'] as const)
        assert.ok(
          Math.abs(record[key] - recomputed[i][key]) <= 1e-4 * Math.abs(record[key]),
          `${record.phase} epoch ${record.epoch} ${key}: ${record[key]} vs ${recomputed[i][key]}`,
        );
      assert.ok(
        Math.abs(record.val_accuracy - recomputed[i].val_accuracy) <= 1 / split.length + 1e-9,
        `${record.phase} epoch ${record.epoch} val_accuracy`,
      );
    });
    assert.ok(
      cached[2].val_loss < cached[0].val_loss && cached[5].val_loss < cached[3].val_loss,
      `training moved the model smoothly: ${cached.map((r) => r.val_loss.toFixed(4)).join(', ')}`,
    );
  });

  test("a random flip cached as two variants per image, and a sweep's shared frozen prefix, give the metrics of flipping pixels every epoch; in files, bit for bit those of memory", async () => {
    const split = await tinySplit('flip', 10);
    const pretrained = await readNsfwjsMobileNetV2();
    const augmentation: AugmentationOp[] = [{ random_flip: 'horizontal' }];
    const store = new FrozenPrefixStore();
    const diskStore = new FrozenPrefixStore();
    const cacheDir = path.join(tempDir('flip-files'), 'frozen-outputs');
    const openFiles = () => fs.readdirSync('/proc/self/fd').length;
    const filesBefore = openFiles();
    const messages: string[] = [];
    const tensorsAfter: number[] = [];
    const keptStore = new FrozenPrefixStore();
    const keptDiskStore = new FrozenPrefixStore();
    // The fine-tuning phase of a trial at fine_tune_at 100 (feature extraction first, as a sweep's trial starts from it).
    // 'kept': as a run keeps what feature extraction computed for fine-tuning (the layers below
    // fine_tune_at, cut where their outputs are narrow, the few frozen layers above run every step).
    const train = async (
      mode: 'recompute' | 'cached' | 'shared' | 'files' | 'shared files' | 'kept' | 'kept files',
    ) => {
      const inFiles = mode.endsWith('files');
      const classifier = buildClassifier({
        base: 'mobilenet_v2',
        alpha: 1.0,
        imageSize: [32, 32],
        classCount: 2,
        dropout: 0.2,
        seed: 11,
      });
      assignWeights(classifier.base, pretrained, { requireAll: true, what: 'nsfwjs' });
      const records: EpochRecord[] = [];
      for (const phase of ['feature_extraction', 'fine_tune'] as const) {
        setPhaseTrainable(classifier, phase, 100);
        const sharedPrefix = mode.startsWith('kept')
          ? { layers: classifier.base.layers.slice(0, 100), store: inFiles ? keptDiskStore : keptStore }
          : mode.startsWith('shared') && phase === 'fine_tune'
            ? { layers: classifier.base.layers.slice(0, 40), store: inFiles ? diskStore : store }
            : undefined;
        await trainPhase(classifier, phase, split, {
          epochs: 3,
          batchSize: 6,
          learningRate: phase === 'fine_tune' ? 0.001 : 0.01,
          seed: 2,
          cacheFrozenOutputs: mode !== 'recompute',
          augmentation,
          sharedPrefix,
          // Nothing in memory: every row (the prefix's and the phase's own) in a file.
          cacheStorage: inFiles ? { dir: cacheDir, memoryBytes: 0 } : undefined,
          log: (m) => messages.push(m),
          onEpochEnd: (record) => records.push(record),
        });
      }
      classifier.model.dispose();
      tensorsAfter.push(tf.memory().numTensors);
      return records;
    };
    const recomputed = await train('recompute');
    const cached = await train('cached');
    const sharedFirst = await train('shared');
    const sharedAgain = await train('shared');
    const files = await train('files');
    const sharedFiles = await train('shared files');
    const kept = await train('kept');
    const keptFiles = await train('kept files');
    assert.equal(
      messages.filter((m) => /^fine_tune: .*reused.*the few frozen layers above them run every step/.test(m)).length,
      2,
      messages.join('\n'),
    );
    assert.deepEqual(
      keptFiles.map(({ time, seconds, ...numbers }) => numbers),
      kept.map(({ time, seconds, ...numbers }) => numbers),
    );
    assert.equal(tensorsAfter[7], tensorsAfter[6], 'kept rows in files hold no tensor');
    keptStore.dispose();
    keptDiskStore.dispose();
    assert.ok(
      messages.some((m) =>
        /fine_tune: .* in files under .*frozen-outputs, beyond the 0\.0 MiB a cache keeps in memory/.test(m),
      ),
      messages.join('\n'),
    );
    // The files are unlinked as soon as they are open: nothing is left in the folder, even while the store holds rows.
    assert.deepEqual(fs.readdirSync(cacheDir), []);
    // Read back from files, the rows are the very floats memory held: the same metrics to the last bit.
    assert.deepEqual(
      files.map(({ time, seconds, ...numbers }) => numbers),
      cached.map(({ time, seconds, ...numbers }) => numbers),
    );
    assert.deepEqual(
      sharedFiles.map(({ time, seconds, ...numbers }) => numbers),
      sharedFirst.map(({ time, seconds, ...numbers }) => numbers),
    );
    assert.ok(
      messages.some((m) =>
        /feature_extraction: frozen layers' outputs computed for 2 variants of each image \(random_flip:horizontal\)/.test(
          m,
        ),
      ),
      messages.join('\n'),
    );
    // Kept: by the first shared trial in memory and in files, and by feature extraction in both kept runs;
    // reused: by the second shared trial and by fine-tuning in both kept runs.
    assert.equal(messages.filter((m) => m.includes('kept for what follows')).length, 4, messages.join('\n'));
    assert.equal(
      messages.filter((m) => m.includes('reused (computed earlier in this process)')).length,
      3,
      messages.join('\n'),
    );
    for (const [name, records] of Object.entries({ cached, sharedFirst, sharedAgain, files, sharedFiles, kept })) {
      assert.equal(records.length, 6);
      records.forEach((record, i) => {
        for (const key of ['loss', 'val_loss'] as const)
          assert.ok(
            Math.abs(record[key] - recomputed[i][key]) <= 1e-4 * Math.abs(record[key]),
            `${name}: ${record.phase} epoch ${record.epoch} ${key}: ${record[key]} vs ${recomputed[i][key]}`,
          );
        assert.ok(
          Math.abs(record.accuracy - recomputed[i].accuracy) <= 1 / split.length + 1e-9,
          `${name}: ${record.phase} epoch ${record.epoch} accuracy`,
        );
      });
    }
    // The store holds the shared rows between trials, and only them.
    assert.equal(tensorsAfter[0], tensorsAfter[1], 'the per-phase cache is released');
    assert.equal(tensorsAfter[2], tensorsAfter[3], 'a trial that reuses the store adds nothing to it');
    store.dispose();
    assert.equal(tf.memory().numTensors, tensorsAfter[0], 'disposing the store releases the shared rows');
    assert.equal(tensorsAfter[4], tensorsAfter[3], 'rows in files hold no tensor');
    assert.equal(tensorsAfter[5], tensorsAfter[3], 'a store of rows in files holds no tensor');
    diskStore.dispose();
    assert.equal(openFiles(), filesBefore, 'every cache file is closed once its phase and its store are done');
  });
  test("epoch 0 and the final validation come from the phases' own passes: the whole model's numbers, reused only while the weights are the ones validated", async () => {
    const split = await tinySplit('reuse', 10);
    const classifier = buildClassifier({
      base: 'mobilenet_v2',
      alpha: 1.0,
      imageSize: [32, 32],
      classCount: 2,
      dropout: 0.2,
      seed: 11,
    });
    assignWeights(classifier.base, await readNsfwjsMobileNetV2(), { requireAll: true, what: 'nsfwjs' });
    const objective = { head: classifier.head, classCount: 2, labelSmoothing: 0 };
    const wholeModel = () => evaluate(classifier.model, objective, split, 6);
    const close = (a: Evaluation, b: Evaluation, what: string) => {
      assert.ok(Math.abs(a.loss - b.loss) <= 1e-5 * Math.abs(b.loss), `${what}: loss ${a.loss} vs ${b.loss}`);
      assert.deepEqual([...a.predictions], [...b.predictions], `${what}: predictions`);
    };
    try {
      const beforeAnyTraining = wholeModel();
      let initial: Evaluation | undefined;
      setPhaseTrainable(classifier, 'feature_extraction', 100);
      // Feature extraction caches the frozen base's outputs (two flip variants): epoch 0 is answered from them.
      const options = {
        epochs: 2,
        batchSize: 6,
        seed: 2,
        cacheFrozenOutputs: true,
        augmentation: [{ random_flip: 'horizontal' }] as AugmentationOp[],
      };
      await trainPhase(classifier, 'feature_extraction', split, {
        ...options,
        learningRate: 0.01,
        beforeTraining: (evaluation) => void (initial = evaluation),
      });
      assert.ok(initial, 'beforeTraining was called');
      close(initial, beforeAnyTraining, 'epoch 0 from the cache vs the whole model before training');
      setPhaseTrainable(classifier, 'fine_tune', 100);
      const end = await trainPhase(classifier, 'fine_tune', split, { ...options, learningRate: 0.001 });
      const reused = validationOfCurrentWeights(classifier.model, end.lastValidation);
      assert.ok(reused, 'the weights are still the ones the last epoch validated');
      close(reused, wholeModel(), "the last epoch's validation vs the whole model after training");
      // A restore (EarlyStopping's restore_best_weights writes every weight) makes it stale.
      const kernel = classifier.model.trainableWeights.at(-1)!;
      const restored = tf.tidy(() => kernel.read().mul(0.5));
      kernel.write(restored);
      restored.dispose();
      assert.equal(
        validationOfCurrentWeights(classifier.model, end.lastValidation),
        undefined,
        'weights written after the validation: recomputed',
      );
    } finally {
      classifier.model.dispose();
    }
  });
});
