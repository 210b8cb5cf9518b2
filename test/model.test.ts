import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import type { LayersModel, Tensor, Tensor4D } from '@tensorflow/tfjs-node';
import { execa } from 'execa';
import { ImageSplit } from '../src/data/images.ts';
import { venvPython } from '../src/export/bridge.ts';
import { buildClassifier, setPhaseTrainable } from '../src/models/classifier.ts';
import { mobileNetV2 } from '../src/models/mobilenet_v2.ts';
import { namedVariables } from '../src/models/variables.ts';
import { assignWeights, imagenetWeightsUrl, readKerasH5, readNsfwjsMobileNetV2, readTfjsModelJson } from '../src/models/weights.ts';
import { projectRoot } from '../src/version.ts';
import { tf } from '../src/tf.ts';
import { saveCheckpoint } from '../src/train/checkpoint.ts';
import { runPhase } from '../src/train/engine.ts';
import { createOptimizer } from '../src/train/optimizers.ts';
import { writeClassFolders } from './helpers/images.ts';
import { tempDir } from './helpers/tmp.ts';

const work = tempDir('tlx-model-');

async function kerasReference(args: string[]): Promise<string> {
  const result = await execa(venvPython(), [path.join(projectRoot, 'python', 'keras_reference.py'), ...args], {
    env: { TF_CPP_MIN_LOG_LEVEL: '3', PYTHONPATH: path.join(projectRoot, 'python') },
    reject: false,
    timeout: 600_000,
  });
  if (result.exitCode !== 0) throw new Error(String(result.stderr).split('\n').slice(-10).join('\n'));
  return String(result.stdout);
}

/** Keras's base on the same weights and inputs as a tlx base; returns the max abs difference. */
async function parityWithKeras(base: LayersModel, alpha: number, height: number, width: number): Promise<number> {
  const dir = fs.mkdtempSync(path.join(work, 'parity-'));
  await saveCheckpoint(path.join(dir, 'weights'), base, undefined, { epoch: 0, phase: 'test' });
  const x = tf.randomUniform([2, height, width, 3], -1, 1, 'float32', 5);
  fs.writeFileSync(path.join(dir, 'x.f32'), Buffer.from((x.dataSync() as Float32Array).buffer));
  await kerasReference(['features', path.join(dir, 'weights'), String(alpha), String(height), String(width), path.join(dir, 'x.f32'), path.join(dir, 'y.f32')]);
  const theirs = new Float32Array(fs.readFileSync(path.join(dir, 'y.f32')).buffer.slice(0));
  const ours = base.predict(x) as Tensor;
  const values = ours.dataSync();
  assert.equal(values.length, theirs.length);
  let max = 0;
  for (let i = 0; i < values.length; i++) max = Math.max(max, Math.abs(values[i] - theirs[i]));
  tf.dispose([x, ours]);
  return max;
}

describe('MobileNetV2 as Keras builds it', () => {
  for (const [alpha, height, width] of [
    [1.0, 160, 160],
    [0.35, 96, 128],
  ] as const) {
    test(`every layer name by index equals Keras's (alpha ${alpha}, ${height}x${width})`, async () => {
      const reference = JSON.parse(await kerasReference(['layers', String(alpha), String(height), String(width)])) as { name: string; class: string; weights: [string, number[]][] }[];
      const ours = mobileNetV2({ alpha, inputShape: [height, width, 3] });
      assert.equal(ours.layers.length, reference.length);
      assert.equal(ours.layers.length, 154, 'Keras prints 154 layers for the base');
      ours.layers.forEach((layer, i) => {
        assert.equal(layer.name, reference[i].name, `layer ${i}`);
        const shapes = layer.weights.map((w) => w.shape.join('x'));
        assert.deepEqual(shapes, reference[i].weights.map(([, shape]) => shape.join('x')), `weights of layer ${i} (${layer.name})`);
      });
      assert.deepEqual(ours.outputs[0].shape.slice(1), [Math.ceil(height / 32), Math.ceil(width / 32), alpha > 1 ? 1792 : 1280]);
    });
  }

  test('fine_tune_at 100 leaves 56 trainable variables; feature extraction leaves 2', () => {
    const classifier = buildClassifier({ base: 'mobilenet_v2', alpha: 1.0, imageSize: [160, 160], classCount: 2, dropout: 0.2, seed: 1 });
    assert.equal(classifier.base.layers.length, 154);
    assert.equal(setPhaseTrainable(classifier, 'feature_extraction', 100), 2);
    assert.equal(setPhaseTrainable(classifier, 'fine_tune', 100), 56);
    assert.equal(setPhaseTrainable(classifier, 'fine_tune', 154), 2);
    assert.equal(setPhaseTrainable(classifier, 'fine_tune', 0), 158);
  });

  test('with the nsfwjs pretrained weights, outputs equal Keras MobileNetV2 on the same weights within 1e-4', async () => {
    const base = mobileNetV2({ alpha: 1.0, inputShape: [96, 96, 3] });
    const { assigned, missing } = assignWeights(base, await readNsfwjsMobileNetV2(), { requireAll: true, what: 'nsfwjs' });
    assert.equal(assigned, 260);
    assert.deepEqual(missing, []);
    const diff = await parityWithKeras(base, 1.0, 96, 96);
    assert.ok(diff < 1e-4, `max abs diff ${diff}`);
  });

  test('a rectangular input from 32 px works and matches Keras (alpha 0.5, 32x48)', async () => {
    const base = mobileNetV2({ alpha: 0.5, inputShape: [32, 48, 3] });
    base.weights.forEach((w, i) => {
      const value = w.name.includes('moving_variance') ? tf.randomUniform(w.shape as number[], 0.5, 1.5, 'float32', i) : tf.randomNormal(w.shape as number[], 0, 0.1, 'float32', i);
      w.write(value);
      value.dispose();
    });
    const diff = await parityWithKeras(base, 0.5, 32, 48);
    assert.ok(diff < 1e-4, `max abs diff ${diff}`);
  });
});

describe('weight loaders', () => {
  test('a legacy Keras .h5 loads by layer and weight name, and matches Keras', async () => {
    const file = path.join(work, 'random_0.35_96_no_top.h5');
    await kerasReference(['h5', '0.35', '96', file, '3']);
    const weights = await readKerasH5(file);
    assert.equal(weights.get('block_1_depthwise/depthwise_kernel')?.shape.join('x'), '3x3x96x1'.replace('96', '48'));
    const base = mobileNetV2({ alpha: 0.35, inputShape: [96, 96, 3] });
    const { assigned } = assignWeights(base, weights, { requireAll: true, what: 'h5' });
    assert.equal(assigned, 260);
    const conv = namedVariables(base).find(([key]) => key === 'Conv1/kernel')![1].read().dataSync();
    assert.deepEqual(Array.from(conv.slice(0, 5)), Array.from(weights.get('Conv1/kernel')!.values.slice(0, 5)));
  });

  test('a shape mismatch is an error naming the layer', async () => {
    const weights = await readKerasH5(path.join(work, 'random_0.35_96_no_top.h5'));
    const base = mobileNetV2({ alpha: 1.0, inputShape: [96, 96, 3] });
    assert.throws(() => assignWeights(base, weights, { requireAll: true, what: 'model.weights (x.h5)' }), /model\.weights \(x\.h5\): layer Conv1: weight Conv1\/kernel has shape \[3, 3, 3, 16\], the model expects \[3, 3, 3, 32\]/);
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
    const diff = tf.tidy(() => (base.predict(x) as Tensor).sub(fresh.predict(x) as Tensor).abs().max().dataSync()[0]);
    assert.equal(diff, 0);
    x.dispose();
  });

  test('imagenet resolves to the Keras application file, nearest resolution otherwise', () => {
    assert.deepEqual(imagenetWeightsUrl(1.0, 160, 160), {
      url: 'https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160_no_top.h5',
      resolution: 160,
      exact: true,
    });
    assert.equal(imagenetWeightsUrl(0.35, 100, 100).url.endsWith('_0.35_96_no_top.h5'), true);
    assert.equal(imagenetWeightsUrl(1.4, 200, 200).exact, false);
  });
});

describe('freezing as Keras does', () => {
  test('after each phase, BatchNorm moving statistics are unchanged and frozen kernels are unchanged bit for bit', async () => {
    await writeClassFolders(path.join(work, 'tiny'), ['a', 'b'], 12, { size: 32 });
    const samples = ['a', 'b'].flatMap((c, label) => fs.readdirSync(path.join(work, 'tiny', c)).map((f) => ({ file: path.join(work, 'tiny', c, f), label })));
    const { split } = ImageSplit.load(samples, [32, 32], 'memory');
    const classifier = buildClassifier({ base: 'mobilenet_v2', alpha: 0.35, imageSize: [32, 32], classCount: 2, dropout: 0.2, seed: 3 });
    const bases = namedVariables(classifier.base);
    // Non-trivial statistics, so that training-mode BN would visibly move them.
    bases.forEach(([key, variable], i) => {
      const value = key.endsWith('moving_variance') ? tf.randomUniform(variable.shape as number[], 0.5, 2, 'float32', i) : tf.randomNormal(variable.shape as number[], 0, 0.1, 'float32', i);
      variable.write(value);
      value.dispose();
    });
    const snapshot = () => new Map(bases.map(([key, v]) => [key, Buffer.from((v.read().dataSync() as Float32Array).buffer.slice(0))]));
    const fineTuneAt = 100;
    const trainableLayerNames = new Set(classifier.base.layers.slice(fineTuneAt).map((l) => l.name));
    for (const phase of ['feature_extraction', 'fine_tune'] as const) {
      const before = snapshot();
      setPhaseTrainable(classifier, phase, fineTuneAt);
      const optimizer = createOptimizer({ name: 'sgd', learning_rate: 0.5 });
      await runPhase(
        {
          model: classifier.model,
          objective: { head: classifier.head, classCount: 2, labelSmoothing: 0 },
          train: split,
          validation: split,
          batchSize: 8,
          seed: 1,
          augment: (images: Tensor4D) => images.clone(),
          onEpochEnd: async () => {},
          shouldStop: () => false,
          progress: false,
          log: () => {},
        },
        { phase, startEpoch: 0, endEpoch: 1, phaseStartEpoch: 0, optimizer, learningRateAt: () => 0.5 },
      );
      optimizer.dispose();
      const after = snapshot();
      let changed = 0;
      for (const [key, bytes] of before) {
        const layer = key.slice(0, key.lastIndexOf('/'));
        const same = bytes.equals(after.get(key)!);
        if (key.endsWith('moving_mean') || key.endsWith('moving_variance')) assert.ok(same, `${phase}: ${key} moved`);
        else if (phase === 'feature_extraction' || !trainableLayerNames.has(layer)) assert.ok(same, `${phase}: frozen ${key} changed`);
        else if (!same) changed++;
      }
      if (phase === 'fine_tune') assert.ok(changed > 20, `fine-tuning changed only ${changed} unfrozen variables`);
    }
  });
});
