import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { batchLimits, chunkBatch, sanitizeKey } from '../../src/track/mlflow-client.ts';
import { flattenParams } from '../../src/track/sync.ts';

describe('MLflow client (pure parts)', () => {
  test('log-batch chunks respect MLflow limits', () => {
    const metrics = Array.from({ length: 2500 }, (_, i) => ({ key: 'm', value: i, timestamp: i, step: i }));
    const params = Array.from({ length: 150 }, (_, i) => ({ key: `p${i}`, value: 'v' }));
    const chunks = chunkBatch(metrics, params, []);
    for (const c of chunks) {
      assert.ok(c.metrics.length <= batchLimits.metrics && c.params.length <= batchLimits.params);
      assert.ok(c.metrics.length + c.params.length + c.tags.length <= batchLimits.total);
    }
    assert.equal(
      chunks.reduce((n, c) => n + c.metrics.length, 0),
      2500,
    );
    assert.equal(
      chunks.reduce((n, c) => n + c.params.length, 0),
      150,
    );
  });

  test('keys follow MLflow rules and the config flattens to dotted params', () => {
    assert.equal(sanitizeKey('a:b*c'), 'a_b_c');
    assert.deepEqual(
      flattenParams({ train: { fine_tune: { fine_tune_at: 100 } }, dataset: { image_size: [160, 160] } }),
      [
        { key: 'train.fine_tune.fine_tune_at', value: '100' },
        { key: 'dataset.image_size', value: '[160,160]' },
      ],
    );
  });
});
