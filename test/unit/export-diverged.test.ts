import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { UserError } from '../../src/core/errors.ts';
import type { Logger } from '../../src/core/log.ts';
import type { ImageSplit } from '../../src/data/images.ts';
import { exportTflite, type ExportInputs } from '../../src/export/tflite.ts';

/**
 * A diverged model's export. Its NaN weights reach TensorFlow's converter fine, but
 * MediaPipe's classifier then never returns (seen with a MobileNetV3-Small whose fine-tuning
 * went to NaN: the sweep waited on it for good). The export refuses before the Python worker
 * is asked. The worker here is a stand-in that fails the test if called: within the schema's
 * limits (learning rate <= 10) training did not diverge to NaN with the real parts (ReLU6
 * clamps MobileNetV2's activations), and test/export.test.ts runs the real exports.
 */
test('a model whose outputs are NaN is not exported: a clear error, no file written, the converter never called', async () => {
  const outputDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tlx-export-nan-'));
  let called = false;
  const inputs = {
    outputDir,
    evaluation: {
      name: 'test',
      split: {} as ImageSplit,
      probabilities: Float32Array.from([0.5, 0.5, Number.NaN, Number.NaN]),
      predictions: Int32Array.from([0, 0]),
      accuracy: 0.5,
    },
    exporter: {
      call: () => {
        called = true;
        return Promise.reject(new Error('the converter must not be called'));
      },
    },
    log: { info: () => undefined, debug: () => undefined, error: () => undefined } as unknown as Logger,
  } as unknown as ExportInputs;
  await assert.rejects(
    exportTflite(inputs),
    (error: unknown) =>
      error instanceof UserError &&
      /outputs on the test split are not finite \(NaN\): training diverged/.test(error.message),
  );
  assert.equal(called, false);
  assert.deepEqual(fs.readdirSync(outputDir), [], 'nothing written');
  fs.rmSync(outputDir, { recursive: true, force: true });
});
