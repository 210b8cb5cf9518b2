import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compileGraph, frozenOutputBytesPerSample, prefixSplit, splitGraph } from '../../src/engine/graph.ts';
import { cachePassBatch } from '../../src/engine/frozen-outputs.ts';
import { cheapestPrefix, recomputesCheaply, stepMacs } from '../../src/engine/recompute.ts';
import { buildClassifier, setPhaseTrainable } from '../../src/models/classifier.ts';

test("MobileNetV2 at 96 px from layer 100: fine-tuning keeps block 10's 96 channels, not block 11's 576-channel expansion, and runs that expansion every step", () => {
  const classifier = buildClassifier({
    base: 'mobilenet_v2',
    alpha: 1,
    imageSize: [96, 96],
    classCount: 10,
    dropout: 0.2,
    seed: 1,
  });
  const graph = compileGraph(classifier.model);
  setPhaseTrainable(classifier, 'fine_tune', 100);
  const fineTune = splitGraph(graph);
  const below = classifier.base.layers.slice(0, 100);
  const whole = prefixSplit(graph, new Set(below));
  const kept = cheapestPrefix(graph, below);
  // Layer 100 is block_11_expand_relu: its 6x6x576 input and block 10's 6x6x96 output (for the residual add).
  assert.equal(frozenOutputBytesPerSample(graph, whole), 4 * 36 * (576 + 96));
  assert.equal(frozenOutputBytesPerSample(graph, kept), 4 * 36 * 96);
  const recomputed = whole.frozen.filter((step) => !kept.frozen.includes(step));
  assert.deepEqual(
    recomputed.map((step) => step.layers.map((layer) => layer.name)),
    [['block_11_expand', 'block_11_expand_BN', 'block_11_expand_relu']],
  );
  assert.equal(stepMacs(graph, recomputed[0]), 36 * 96 * 576);
  assert.equal(recomputesCheaply(graph, fineTune, kept), true);
  // Feature extraction's own rows (the pooled base output) are far above the cut: kept, not recomputed.
  setPhaseTrainable(classifier, 'feature_extraction', 100);
  assert.equal(recomputesCheaply(graph, splitGraph(graph), kept), false);
  classifier.model.dispose();
});

test('a caching pass runs 64 samples at once where the widest tensor allows (96 px), the training batch where it does not (224 px), never fewer', () => {
  const widestOf = (size: number) => {
    const classifier = buildClassifier({
      base: 'mobilenet_v2',
      alpha: 1,
      imageSize: [size, size],
      classCount: 2,
      dropout: 0.2,
      seed: 1,
    });
    setPhaseTrainable(classifier, 'feature_extraction', 100);
    const graph = compileGraph(classifier.model);
    const frozen = splitGraph(graph).frozen;
    const batches = [32, 100].map((batch) => cachePassBatch(graph, frozen, batch));
    classifier.model.dispose();
    return batches;
  };
  // The widest: block 1's expansion, 48x48x96 floats (0.84 MiB) at 96 px, 112x112x96 (4.6 MiB) at 224 px.
  assert.deepEqual(widestOf(96), [64, 100]);
  assert.deepEqual(widestOf(224), [32, 100]);
});
