import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { applyOverride, mergeConfigs, parseOverride } from '../../src/config/overrides.ts';
import type { Problem } from '../../src/core/errors.ts';

/** `--set key.path=value` and `extends`, without loading a file. */

function parsed(flag: string): { value?: unknown; keyPath?: string[]; problems: Problem[] } {
  const problems: Problem[] = [];
  const override = parseOverride(flag, problems);
  return { value: override?.value, keyPath: override?.keyPath, problems };
}

describe('--set values are typed by the schema', () => {
  test('numbers, lists and booleans are read as YAML', () => {
    assert.equal(parsed('train.fine_tune.epochs=5').value, 5);
    assert.deepEqual(parsed('dataset.image_size=[96, 128]').value, [96, 128]);
    assert.equal(parsed('sweep.grid.x=true').value, true);
    assert.deepEqual(parsed('train.fine_tune.epochs=5').keyPath, ['train', 'fine_tune', 'epochs']);
  });

  test('where the schema expects a string, the text stays a string', () => {
    assert.equal(parsed('name=123').value, '123');
    assert.equal(parsed('model.weights=none').value, 'none');
    assert.equal(parsed('dataset.path=data: with colon').value, 'data: with colon');
  });

  test('malformed flags are problems that say what was expected, not exceptions', () => {
    assert.match(parsed('no-equals').problems[0].message, /expected key\.path=value/);
    assert.match(parsed('train..epochs=1').problems[0].message, /expected a dotted key path/);
    assert.match(parsed('__proto__.polluted=1').problems[0].message, /the key "__proto__" is not allowed/);
    assert.match(parsed('train.constructor=1').problems[0].message, /"constructor" is not allowed/);
    assert.match(parsed('train.fine_tune.epochs=[1, 2').problems[0].message, /^invalid value: /);
    assert.equal(parsed('no-equals').problems[0].location.file, '--set no-equals');
  });
});

describe('applying overrides and merging files', () => {
  const base = { train: { fine_tune: { epochs: 10, fine_tune_at: 100 } }, dataset: { image_size: [160, 160] } };

  test('an override sets one key in a copy, creating the mappings on its way', () => {
    const problems: Problem[] = [];
    const result = applyOverride(
      base,
      { flag: 'train.fine_tune.epochs=2', keyPath: ['train', 'fine_tune', 'epochs'], value: 2 },
      problems,
    );
    assert.equal((result.train as { fine_tune: { epochs: number } }).fine_tune.epochs, 2);
    assert.equal(base.train.fine_tune.epochs, 10, 'the original is untouched');
    const created = applyOverride({}, { flag: 'a.b.c=1', keyPath: ['a', 'b', 'c'], value: 1 }, problems);
    assert.deepEqual(created, { a: { b: { c: 1 } } });
    assert.deepEqual(problems, []);
  });

  test('a key below a list or a number is a problem naming where it stops', () => {
    const problems: Problem[] = [];
    const result = applyOverride(
      base,
      { flag: 'dataset.image_size.x=1', keyPath: ['dataset', 'image_size', 'x'], value: 1 },
      problems,
    );
    assert.equal(result, base, 'nothing applied');
    assert.equal(problems[0].keyPath, 'dataset.image_size');
    assert.match(problems[0].message, /is a list, so it has no key "x"/);
    applyOverride(
      base,
      { flag: 'train.fine_tune.epochs.x=1', keyPath: ['train', 'fine_tune', 'epochs', 'x'], value: 1 },
      problems,
    );
    assert.match(problems[1].message, /is a number, so it has no key "x"/);
  });

  test('extends: mappings merge key by key, lists and values are replaced', () => {
    const child = { train: { fine_tune: { epochs: 3 } }, dataset: { image_size: [96, 96] } };
    assert.deepEqual(mergeConfigs(base, child), {
      train: { fine_tune: { epochs: 3, fine_tune_at: 100 } },
      dataset: { image_size: [96, 96] },
    });
    assert.deepEqual(mergeConfigs({ a: { b: 1 } }, { a: 5 }), { a: 5 });
  });
});
