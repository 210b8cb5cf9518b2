import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { baseLayerCount } from '../src/config/bases.ts';
import { buildBase } from '../src/models/base-builders.ts';
import { buildClassifier, setPhaseTrainable } from '../src/models/classifier.ts';
import { compileGraph } from '../src/engine/graph.ts';
import { kerasClassName } from '../src/models/layers.ts';
import { assignWeights, readKerasH5 } from '../src/models/weights.ts';
import type { RunSummary, TfliteRecord } from '../src/run-folder/records.ts';
import { runTlx } from './helpers/cli.ts';
import { writeClassFolders } from './helpers/images.ts';
import type { Tensor } from '@tensorflow/tfjs-node';
import {
  baseArgs,
  compareWithKeras,
  kerasBatch,
  writeParityInput,
  type BaseVariant,
  type KerasLayer,
} from './helpers/keras.ts';
import { runDirOf } from './helpers/runs.ts';
import { tempDir } from './helpers/tmp.ts';

/**
 * MobileNetV3 Small and Large (and their minimalistic variants) and EfficientNet-B0 against
 * keras.applications: every layer by index, outputs on weights Keras wrote and loaded
 * itself, trainable variables for a fine_tune_at, and each base through tlx run and all
 * four TFLite modes. (MobileNetV2's own tests are in model.test.ts.)
 */

const work = tempDir('tlx-bases-');

const variants: (BaseVariant & { size: number; fineTuneAt: number })[] = [
  { base: 'mobilenet_v3_small', alpha: 1.0, minimalistic: false, size: 96, fineTuneAt: 100 },
  { base: 'mobilenet_v3_small', alpha: 0.75, minimalistic: true, size: 64, fineTuneAt: 60 },
  { base: 'mobilenet_v3_large', alpha: 0.75, minimalistic: false, size: 64, fineTuneAt: 130 },
  { base: 'mobilenet_v3_large', alpha: 1.0, minimalistic: true, size: 48, fineTuneAt: 100 },
  { base: 'efficientnet_b0', alpha: 1.0, minimalistic: false, size: 64, fineTuneAt: 190 },
];

function label(v: BaseVariant & { size: number }): string {
  return `${v.base}${v.minimalistic ? ' minimalistic' : ''} (alpha ${v.alpha}, ${v.size} px)`;
}

/** Per variant, from one Keras process: its layers, a .h5 of random weights, Keras's outputs on that file, trainable counts. */
interface Reference {
  layers: KerasLayer[];
  h5: string;
  x: Tensor;
  kerasOutput: string;
  trainable: number;
}

const references: Reference[] = [];
const keras2File = path.join(work, 'keras2-names.h5');
const keras2Output = path.join(work, 'y-keras2.f32');
const otherBaseFile = path.join(work, 'other-base.h5');

before(async () => {
  const jobs: [string, string[]][] = [];
  for (const [i, variant] of variants.entries()) {
    const args = baseArgs(variant, variant.size);
    const h5 = path.join(work, `variant-${i}.h5`);
    const x = writeParityInput(path.join(work, `x-${i}.f32`), variant, variant.size);
    const kerasOutput = path.join(work, `y-${i}.f32`);
    jobs.push(
      ['layers', args],
      ['h5', [variant.base, String(variant.alpha), String(variant.size), args[4], h5, '7']],
      ['features', [h5, ...args, path.join(work, `x-${i}.f32`), kerasOutput]],
      ['trainable', [...args, String(variant.fineTuneAt)]],
    );
    references.push({ layers: [], h5, x, kerasOutput, trainable: 0 });
  }
  // Keras 2's names on variant 0's architecture, and a file of another base.
  const keras2Args = baseArgs(variants[0], variants[0].size);
  jobs.push(
    [
      'h5',
      [variants[0].base, String(variants[0].alpha), String(variants[0].size), '0', keras2File, '7', 'keras2-names'],
    ],
    ['features', [keras2File, ...keras2Args, path.join(work, 'x-0.f32'), keras2Output]],
    ['h5', ['mobilenet_v3_small', '1.0', '64', '1', otherBaseFile, '7']],
  );
  const printed = await kerasBatch(jobs);
  references.forEach((reference, i) => {
    reference.layers = JSON.parse(printed[4 * i]) as KerasLayer[];
    reference.trainable = Number(printed[4 * i + 3]);
  });
});

describe('bases layer for layer as keras.applications builds them', () => {
  for (const [i, variant] of variants.entries()) {
    const { size } = variant;

    test(`${label(variant)}: every layer's name, Keras class, weight shapes and output shape by index`, () => {
      const reference = references[i].layers;
      const ours = buildBase(variant.base, {
        alpha: variant.alpha,
        minimalistic: variant.minimalistic,
        inputShape: [size, size, 3],
      });
      assert.equal(ours.layers.length, reference.length);
      assert.equal(ours.layers.length, baseLayerCount(variant), 'the range the schema allows for fine_tune_at');
      ours.layers.forEach((layer, index) => {
        const theirs = reference[index];
        const what = `layer ${index} (${theirs.name})`;
        assert.equal(layer.name, theirs.name, what);
        assert.equal(kerasClassName(layer), theirs.class, what);
        assert.deepEqual(
          layer.weights.map((w) => w.shape),
          theirs.weights.map(([, shape]) => shape),
          `weights of ${what}`,
        );
        assert.deepEqual((layer.outputShape as number[]).slice(1), theirs.output, `output of ${what}`);
      });
      ours.dispose();
    });

    test(`${label(variant)}: on a .h5 Keras wrote and loads itself, outputs equal Keras's within 1e-4 (layer by layer and folded)`, async () => {
      const reference = references[i];
      const base = buildBase(variant.base, {
        alpha: variant.alpha,
        minimalistic: variant.minimalistic,
        inputShape: [size, size, 3],
      });
      const { missing, byOrder } = assignWeights(base, await readKerasH5(reference.h5), {
        requireAll: true,
        what: 'h5',
      });
      assert.deepEqual(missing, []);
      assert.equal(byOrder, false, 'matched by name');
      const { maxDiff, maxAbs } = compareWithKeras(base, reference.x, reference.kerasOutput);
      assert.ok(maxAbs > 0.1, `Keras's features are not near zero (max ${maxAbs})`);
      assert.ok(maxDiff < 1e-4, `max abs diff ${maxDiff}`);
      base.dispose();
    });

    test(`${label(variant)}: fine_tune_at ${variant.fineTuneAt} leaves as many trainable variables as in Keras`, () => {
      const classifier = buildClassifier({ ...variant, imageSize: [size, size], classCount: 2, dropout: 0.2, seed: 1 });
      assert.equal(setPhaseTrainable(classifier, 'fine_tune', variant.fineTuneAt), references[i].trainable);
      assert.ok(references[i].trainable > 2);
      assert.equal(setPhaseTrainable(classifier, 'feature_extraction', variant.fineTuneAt), 2);
      classifier.model.dispose();
    });
  }

  test("a .h5 with Keras 2's layer names (expanded_conv/depthwise) loads by order, as Keras's load_weights does", async () => {
    const variant = variants[0];
    const weights = await readKerasH5(keras2File);
    assert.ok(weights.has('expanded_conv/depthwise/kernel'), 'the file uses Keras 2 names');
    const base = buildBase(variant.base, { alpha: variant.alpha, inputShape: [variant.size, variant.size, 3] });
    const { byOrder, assigned } = assignWeights(base, weights, { requireAll: true, what: 'h5' });
    assert.equal(byOrder, true);
    assert.equal(assigned, base.weights.length);
    const { maxDiff } = compareWithKeras(base, references[0].x, keras2Output);
    assert.ok(maxDiff < 1e-4, `max abs diff ${maxDiff}`);
    base.dispose();
  });

  test('a .h5 of another base is refused with the first missing weights named', async () => {
    const weights = await readKerasH5(otherBaseFile);
    const base = buildBase('efficientnet_b0', { alpha: 1.0, inputShape: [64, 64, 3] });
    assert.throws(
      () => assignWeights(base, weights, { requireAll: true, what: 'model.weights (x.h5)' }),
      /model\.weights \(x\.h5\): no weights for \d+ variable\(s\), e\.g\. normalization\/mean/,
    );
    base.dispose();
  });

  test('the folded path: every Conv -> BatchNorm is one fused kernel, and the ReLU, hard-swish or swish after it joins it', () => {
    for (const [base, withRelu, other, preprocessing] of [
      ['mobilenet_v3_small', 5, 'HardSwish', 1],
      ['efficientnet_b0', 0, 'Swish', 3],
    ] as const) {
      const classifier = buildClassifier({
        base,
        alpha: 1.0,
        imageSize: [96, 96],
        classCount: 3,
        dropout: 0.2,
        seed: 1,
      });
      const steps = compileGraph(classifier.model).steps;
      const fused = steps.filter((step) => step.kind === 'conv_bn');
      assert.deepEqual(
        [steps[0].kind, steps[0].layers.length],
        ['affine', preprocessing],
        `${base}: the preprocessing layers are one affine pass`,
      );
      const batchNorms = classifier.base.layers.filter(
        (layer) => kerasClassName(layer) === 'BatchNormalization',
      ).length;
      assert.ok(batchNorms > 30);
      assert.equal(fused.length, batchNorms, `${base}: every BatchNorm folded`);
      assert.equal(
        fused.filter((step) => step.kind === 'conv_bn' && step.options.activation === 'Relu').length,
        withRelu,
        `${base}: ReLU fused`,
      );
      assert.ok(
        fused.filter((step) => step.kind === 'conv_bn' && step.options.activation === other).length >= 10,
        `${base}: ${other} fused`,
      );
      assert.equal(
        steps.some((step) =>
          step.layers.some((layer) => kerasClassName(layer) === 'Dropout' && layer.name !== 'dropout'),
        ),
        false,
        `${base}: the base's dropouts are not steps`,
      );
      classifier.model.dispose();
    }
  });
});

describe('each base through tlx run and every TFLite mode', () => {
  const modes = ['none', 'dynamic', 'float16', 'int8'] as const;
  const runs: Record<string, string> = {};
  const bases = ['mobilenet_v3_small', 'mobilenet_v3_large', 'efficientnet_b0'] as const;

  before(async () => {
    await writeClassFolders(path.join(work, 'data'), ['circles', 'squares', 'stripes'], 16, { size: 32 });
    // The three bases run side by side; each converts to the three other modes in one call (one Python start).
    await Promise.all(
      bases.map(async (base) => {
        const file = path.join(work, `${base}.yaml`);
        fs.writeFileSync(
          file,
          `name: ${base}
seed: 5
dataset: { path: data, validation_split: 0.5, image_size: [32, 32], batch_size: 8, test_fraction_of_validation: 0.5 }
model: { base: ${base}, alpha: 1.0, weights: none }
train:
  feature_extraction: { epochs: 1 }
  fine_tune: { epochs: 1, fine_tune_at: ${baseLayerCount({ base, minimalistic: false }) - 20} }
export:
  tflite: { quantization: dynamic, representative_images: 16, max_accuracy_drop: 1 }
`,
        );
        const result = await runTlx(['--runs-dir', path.join(work, 'runs'), 'run', file], {
          cwd: work,
          timeout: 900_000,
        });
        assert.equal(result.exitCode, 0, `${base}: ${result.stderr.slice(-3000)}`);
        runs[base] = runDirOf(result.stdout);
        const others = modes.filter((m) => m !== 'dynamic').join(',');
        const converted = await runTlx(['convert', runs[base], '--quantization', others], {
          cwd: work,
          timeout: 900_000,
        });
        assert.equal(converted.exitCode, 0, `${base} ${others}: ${converted.stderr.slice(-3000)}`);
      }),
    );
  });

  for (const base of bases) {
    test(`${base}: all four modes verified, MediaPipe names every result, the card says what preprocessing is inside`, () => {
      const summary = JSON.parse(fs.readFileSync(path.join(runs[base], 'summary.json'), 'utf8')) as RunSummary;
      const exports = summary.export as { tflite: TfliteRecord; tflite_modes?: Record<string, TfliteRecord> };
      for (const mode of modes) {
        const record = mode === 'dynamic' ? exports.tflite : exports.tflite_modes![mode];
        assert.equal(record.status, 'verified', `${base} ${mode}: ${record.problems.join('; ')}`);
        assert.deepEqual(record.output.shape, [1, 3]);
        const mediapipe = record.mediapipe as { named_results: number; images: number };
        assert.equal(mediapipe.named_results, mediapipe.images, `${base} ${mode}: MediaPipe names every result`);
        if (mode === 'none')
          assert.ok(
            record.max_abs_diff_vs_trained_model! < 1e-4,
            `${base}: float32 differs by ${record.max_abs_diff_vs_trained_model}`,
          );
      }
      const card = fs.readFileSync(path.join(runs[base], 'model-card.md'), 'utf8');
      assert.match(
        card,
        base === 'efficientnet_b0'
          ? /normalizes with the ImageNet mean and standard deviation, in EfficientNet-B0's own first layers/
          : /in MobileNetV3's own first layer/,
      );
    });
  }
});
