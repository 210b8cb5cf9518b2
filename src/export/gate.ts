import { fewestLossesDetectable, mcnemarWorsePValue } from '../core/stats.ts';
import type { ExportGate } from '../run-folder/records.ts';

/**
 * The export gate: is the exported model worse than the trained one it came from? Both
 * classify the same images, so the comparison is paired: only the images on which they
 * differ in correctness carry information (McNemar). The file fails when it lost more than
 * `max_accuracy_drop` of the images net AND that loss is unlikely to be chance (exact
 * one-sided test, p < alpha): one image more or less on a small split no longer decides it.
 */

/** Significance level of the gate's test: a drop this unlikely under "no worse" is believed. */
const gateAlpha = 0.05;

export function judgeExport(
  truth: ArrayLike<number>,
  trained: ArrayLike<number>,
  exported: ArrayLike<number>,
  maxAccuracyDrop: number,
  alpha = gateAlpha,
): ExportGate {
  const images = truth.length;
  if (trained.length !== images || exported.length !== images)
    throw new Error(
      `export gate: ${images} labels, ${trained.length} trained and ${exported.length} exported predictions`,
    );
  let lost = 0;
  let gained = 0;
  for (let i = 0; i < images; i++) {
    const trainedRight = trained[i] === truth[i];
    const exportedRight = exported[i] === truth[i];
    if (trainedRight && !exportedRight) lost++;
    if (!trainedRight && exportedRight) gained++;
  }
  const accuracyDrop = images > 0 ? (lost - gained) / images : 0;
  const pValue = mcnemarWorsePValue(lost, gained);
  return {
    images,
    lost,
    gained,
    accuracy_drop: accuracyDrop,
    p_value: pValue,
    max_accuracy_drop: maxAccuracyDrop,
    alpha,
    smallest_detectable_drop: images > 0 ? Math.min(1, fewestLossesDetectable(alpha) / images) : 1,
    passed: !(accuracyDrop > maxAccuracyDrop && pValue < alpha),
  };
}

/** The gate's verdict in one sentence, for a failed export's problems and the model card. */
export function gateSentence(gate: ExportGate): string {
  const points = (fraction: number) => `${(fraction * 100).toFixed(1)} points`;
  const counts = `${gate.lost} of ${gate.images} images lost, ${gate.gained} gained`;
  if (!gate.passed)
    return `accuracy drop ${points(gate.accuracy_drop)} > export.tflite.max_accuracy_drop ${points(gate.max_accuracy_drop)} (${counts}; p = ${gate.p_value.toFixed(3)} < ${gate.alpha})`;
  return `accuracy drop ${points(gate.accuracy_drop)} (${counts}; p = ${gate.p_value.toFixed(3)}); on ${gate.images} images the gate notices a drop of ${points(gate.smallest_detectable_drop)} or more`;
}
