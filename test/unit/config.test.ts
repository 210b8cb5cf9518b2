import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { loadExperiment } from '../../src/config/load.ts';
import { ConfigError } from '../../src/core/errors.ts';
import { projectRoot } from '../../src/core/project.ts';
import { tempDir, writeFiles } from '../helpers/tmp.ts';

const valid = `name: flowers
dataset:
  path: data
  validation_split: 0.2
  image_size: [96, 96]
train:
  fine_tune:
    fine_tune_at: 100
    epochs: 2
`;

const dir = tempDir();

function load(yaml: string, overrides: string[] = [], extraFiles: Record<string, string> = {}) {
  writeFiles(dir, { 'experiment.yaml': yaml, ...extraFiles });
  return loadExperiment(path.join(dir, 'experiment.yaml'), { overrides });
}

function problemsOf(yaml: string, overrides: string[] = [], extraFiles: Record<string, string> = {}): string[] {
  try {
    load(yaml, overrides, extraFiles);
  } catch (error) {
    assert.ok(error instanceof ConfigError, `expected a ConfigError, got ${String(error)}`);
    assert.equal(error.exitCode, 2);
    return error.message.split('\n').map((line) => line.replace(`${dir}${path.sep}`, ''));
  }
  assert.fail('expected the config to be rejected');
}

describe('valid experiment files', () => {
  test('every shipped config validates', () => {
    const configs = fs.readdirSync(path.join(projectRoot, 'configs')).filter((f) => f.endsWith('.yaml'));
    assert.ok(configs.length >= 2);
    for (const file of configs) loadExperiment(path.join(projectRoot, 'configs', file));
  });

  test('every shipped config has a yaml-language-server modeline', () => {
    for (const file of fs.readdirSync(path.join(projectRoot, 'configs')).filter((f) => f.endsWith('.yaml'))) {
      const first = fs.readFileSync(path.join(projectRoot, 'configs', file), 'utf8').split('\n')[0];
      assert.equal(first, '# yaml-language-server: $schema=../schemas/experiment.schema.json', file);
    }
  });

  test('configs/finetune.yaml is the tutorial, value for value', () => {
    const { config } = loadExperiment(path.join(projectRoot, 'configs', 'finetune.yaml'));
    assert.deepEqual(config.dataset.image_size, [160, 160]);
    assert.equal(config.dataset.batch_size, 32);
    assert.deepEqual(config.augmentation, [{ random_flip: 'horizontal' }, { random_rotation: 0.2 }]);
    assert.equal(config.model.base, 'mobilenet_v2');
    assert.equal(config.model.dropout, 0.2);
    assert.deepEqual(config.train.feature_extraction.optimizer, { name: 'adam', learning_rate: 0.0001 });
    assert.equal(config.train.feature_extraction.epochs, 10);
    assert.equal(config.train.fine_tune.fine_tune_at, 100);
    assert.equal(config.train.fine_tune.epochs, 10);
    assert.deepEqual(config.train.fine_tune.optimizer, { name: 'rmsprop', learning_rate: 0.00001 });
    assert.equal(config.export.tflite?.quantization, 'int8');
  });

  test('defaults from the schema are filled in the resolved config', () => {
    const { config } = load(valid);
    assert.equal(config.seed, 42);
    assert.equal(config.dataset.batch_size, 32);
    assert.equal(config.dataset.test_fraction_of_validation, 0.2);
    assert.equal(config.train.feature_extraction.epochs, 10);
    assert.deepEqual(config.train.feature_extraction.optimizer, { name: 'adam', learning_rate: 0.0001 });
    assert.deepEqual(config.train.fine_tune.optimizer, { name: 'rmsprop', learning_rate: 0.00001 });
    assert.equal(config.train.fine_tune.epochs, 2);
  });

  test('--set overrides are typed by the schema', () => {
    const { config } = load(valid, [
      'train.fine_tune.epochs=5',
      'dataset.image_size=[128, 64]',
      'name=123',
      'model.dropout=0.5',
    ]);
    assert.equal(config.train.fine_tune.epochs, 5);
    assert.deepEqual(config.dataset.image_size, [128, 64]);
    assert.equal(config.name, '123');
    assert.equal(config.model.dropout, 0.5);
  });

  test('extends composes files; the child wins and the resolved config drops extends', () => {
    const { config, files } = load(`extends: base.yaml\nname: child\ntrain:\n  fine_tune:\n    epochs: 1\n`, [], {
      'base.yaml': valid,
    });
    assert.equal(config.name, 'child');
    assert.equal(config.train.fine_tune.epochs, 1);
    assert.equal(config.train.fine_tune.fine_tune_at, 100);
    assert.equal(config.dataset.validation_split, 0.2);
    assert.equal('extends' in config, false);
    assert.equal(files.length, 2);
  });

  test('the config hash changes with the config and not with formatting', () => {
    const a = load(valid).configSha256;
    const b = load(`${valid}\n# a comment\n`).configSha256;
    const c = load(valid, ['seed=7']).configSha256;
    assert.equal(a, b);
    assert.notEqual(a, c);
  });
});

// Each case: the YAML (or flags), and the lines of the expected messages: `line:col: key: text`.
const malformed: { name: string; yaml: string; set?: string[]; files?: Record<string, string>; expect: RegExp[] }[] = [
  {
    name: 'wrong type: epochs as a string',
    yaml: valid.replace('epochs: 2', 'epochs: two'),
    expect: [/^experiment\.yaml:9:13: train\.fine_tune\.epochs: found "two", expected an integer$/],
  },
  {
    name: 'wrong type: fractional epochs',
    yaml: valid.replace('epochs: 2', 'epochs: 2.5'),
    expect: [/:9:13: train\.fine_tune\.epochs: found 2\.5, expected an integer$/],
  },
  {
    name: 'unknown top-level key with a suggestion',
    yaml: `${valid}augmentations: []\n`,
    expect: [/:10:1: augmentations: unknown key; did you mean "augmentation"\?$/],
  },
  {
    name: 'unknown nested key with a suggestion',
    yaml: valid.replace('  image_size', '  batch_sise: 8\n  image_size'),
    expect: [/:5:3: dataset\.batch_sise: unknown key; did you mean "batch_size"\?$/],
  },
  {
    name: 'unknown key with nothing close lists the keys',
    yaml: valid.replace('name: flowers', 'name: flowers\ncolour: red'),
    expect: [/:2:1: colour: unknown key; expected one of: .*dataset/],
  },
  {
    name: 'out of range: negative fine_tune_at',
    yaml: valid.replace('fine_tune_at: 100', 'fine_tune_at: -3'),
    expect: [/:8:19: train\.fine_tune\.fine_tune_at: found -3, expected an integer >= 0$/],
  },
  {
    name: 'out of range: fine_tune_at past the base layers',
    yaml: valid.replace('fine_tune_at: 100', 'fine_tune_at: 200'),
    expect: [/:8:19: train\.fine_tune\.fine_tune_at: found 200, expected at most 154 \(mobilenet_v2 has 154 layers\)$/],
  },
  {
    name: 'fine_tune_at past MobileNetV3Small',
    yaml: valid.replace('fine_tune_at: 100', 'fine_tune_at: 158') + 'model: { base: mobilenet_v3_small }\n',
    expect: [
      /:8:19: train\.fine_tune\.fine_tune_at: found 158, expected at most 157 \(mobilenet_v3_small has 157 layers\)$/,
    ],
  },
  {
    name: 'minimalistic on a base without that variant',
    yaml: `${valid}model: { base: efficientnet_b0, minimalistic: true }\n`,
    expect: [/:10:\d+: model\.minimalistic: found true, but efficientnet_b0 has no minimalistic variant/],
  },
  {
    name: 'alpha on EfficientNet-B0',
    yaml: `${valid}model: { base: efficientnet_b0, alpha: 0.75 }\n`,
    expect: [
      /:10:\d+: model\.alpha: found 0\.75, but efficientnet_b0 has no width multiplier; expected 1\.0 or no alpha$/,
    ],
  },
  {
    name: 'MobileNetV3 ImageNet weights at an alpha Keras has none for',
    yaml: `${valid}model: { base: mobilenet_v3_large, alpha: 0.5 }\n`,
    expect: [
      /:10:\d+: model\.alpha: found 0\.5, but Keras has ImageNet weights for MobileNetV3Large only at alpha 0\.75 or 1\.0; use one of those or weights: none$/,
    ],
  },
  {
    name: 'npm:nsfwjs with another base',
    yaml: `${valid}model: { base: mobilenet_v3_small, weights: npm:nsfwjs }\n`,
    expect: [
      /:10:\d+: model\.weights: npm:nsfwjs is a MobileNetV2 with alpha 1\.0; found base mobilenet_v3_small, alpha 1$/,
    ],
  },
  {
    name: 'out of range: learning rate 0',
    yaml: `${valid}    optimizer: { name: sgd, learning_rate: 0 }\n`,
    expect: [/:10:44: train\.fine_tune\.optimizer\.learning_rate: found 0, expected a number > 0$/],
  },
  {
    name: 'out of range: image size below 32',
    yaml: valid.replace('[96, 96]', '[16, 96]'),
    expect: [/:5:16: dataset\.image_size\.0: found 16, expected an integer >= 32$/],
  },
  {
    name: 'wrong length: image size with 3 numbers',
    yaml: valid.replace('[96, 96]', '[96, 96, 96]'),
    expect: [/:5:15: dataset\.image_size: found a list of 3, expected a list of exactly 2 items$/],
  },
  {
    name: 'bad enum: optimizer name, with a suggestion',
    yaml: `${valid}    optimizer: { name: rmsprob, learning_rate: 0.1 }\n`,
    expect: [
      /:10:24: train\.fine_tune\.optimizer\.name: found "rmsprob", expected one of: adam, rmsprop, sgd \(did you mean "rmsprop"\?\)$/,
    ],
  },
  {
    name: 'bad enum: quantization mode',
    yaml: `${valid}export:\n  tflite: { quantization: int4 }\n`,
    expect: [/:11:27: export\.tflite\.quantization: found "int4", expected one of: none, dynamic, float16, int8/],
  },
  {
    name: 'bad augmentation op value',
    yaml: `${valid}augmentation:\n  - random_rotation: 2\n`,
    expect: [/:11:22: augmentation\.0\.random_rotation: found 2, expected a number <= 1$/],
  },
  {
    name: 'two ops in one augmentation item',
    yaml: `${valid}augmentation:\n  - random_flip: horizontal\n    random_zoom: 0.1\n`,
    expect: [/:11:5: augmentation\.0: found 2 keys, expected exactly one augmentation op/],
  },
  {
    name: 'missing required name',
    yaml: valid.replace('name: flowers\n', ''),
    expect: [/:1:1: missing required key "name"$/],
  },
  {
    name: 'missing optimizer learning rate',
    yaml: `${valid}    optimizer: { name: adam }\n`,
    expect: [/:10:5: train\.fine_tune\.optimizer: missing required key "learning_rate"$/],
  },
  {
    name: 'dataset without url or path',
    yaml: valid.replace('  path: data\n', ''),
    expect: [/:2:1: dataset: expected either url: or path:$/],
  },
  {
    name: 'bad YAML syntax: unclosed flow list',
    yaml: valid.replace('[96, 96]', '[96, 96'),
    expect: [/^experiment\.yaml:\d+:\d+: invalid YAML: /],
  },
  {
    name: 'bad YAML syntax: duplicate key',
    yaml: `${valid}name: again\n`,
    expect: [/^experiment\.yaml:10:1: invalid YAML: Map keys must be unique/],
  },
  {
    name: 'a document that is not a mapping',
    yaml: '- just\n- a list\n',
    expect: [/^experiment\.yaml:1:1: found a list, expected a mapping/],
  },
  {
    name: 'bad extends: missing file',
    yaml: `extends: nowhere.yaml\n${valid}`,
    expect: [/^experiment\.yaml:1:10: extends: cannot use "nowhere\.yaml": file not found$/],
  },
  {
    name: 'bad extends: a cycle',
    yaml: `extends: experiment.yaml\n${valid}`,
    expect: [/:1:10: extends: "experiment\.yaml" is already in the chain of extended files \(a cycle\)$/],
  },
  {
    name: 'error inside an extended file points into that file',
    yaml: `extends: base.yaml\nname: child\n`,
    files: { 'base.yaml': valid.replace('epochs: 2', 'epochs: -1') },
    expect: [/^base\.yaml:9:13: train\.fine_tune\.epochs: found -1, expected an integer >= 0$/],
  },
  {
    name: 'bad --set: no equals sign',
    yaml: valid,
    set: ['train.fine_tune.epochs'],
    expect: [/^--set train\.fine_tune\.epochs: expected key\.path=value/],
  },
  {
    name: 'bad --set: value of the wrong type',
    yaml: valid,
    set: ['train.fine_tune.epochs=many'],
    expect: [/^--set train\.fine_tune\.epochs=many: train\.fine_tune\.epochs: found "many", expected an integer$/],
  },
  {
    name: 'bad --set: unknown key',
    yaml: valid,
    set: ['train.fine_tune.epoch=3'],
    expect: [/^--set train\.fine_tune\.epoch=3: train\.fine_tune\.epoch: unknown key; did you mean "epochs"\?$/],
  },
  {
    name: 'all errors at once, in file order',
    yaml: valid.replace('name: flowers', 'name: "bad name"').replace('epochs: 2', 'epochs: -2'),
    expect: [/:1:7: name: found "bad name", expected Experiment name/, /:9:13: train\.fine_tune\.epochs: found -2/],
  },
];

describe('malformed experiment files get one clear line per problem', () => {
  for (const testCase of malformed) {
    test(testCase.name, () => {
      const lines = problemsOf(testCase.yaml, testCase.set ?? [], testCase.files ?? {});
      assert.equal(lines.length, testCase.expect.length, `got:\n${lines.join('\n')}`);
      testCase.expect.forEach((pattern, i) => assert.match(lines[i], pattern));
      for (const line of lines) assert.doesNotMatch(line, /^\s+at \S+ \(/, 'no stack traces');
    });
  }
});
