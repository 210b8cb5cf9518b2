import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, test } from 'node:test';
import { runTlx } from './helpers/cli.ts';
import { tempDir, writeFiles } from './helpers/tmp.ts';

const designCommands = ['validate', 'data', 'run', 'convert', 'sweep', 'predict', 'ui', 'sync'];

describe('the tlx command line', () => {
  test('--help lists every command of the design, and each command has --help', async () => {
    const help = await runTlx(['--help']);
    assert.equal(help.exitCode, 0);
    for (const command of designCommands) assert.match(help.stdout, new RegExp(`^  ${command} `, 'm'), command);
    for (const command of designCommands) {
      const sub = await runTlx([command, '--help']);
      assert.equal(sub.exitCode, 0, command);
      assert.match(sub.stdout, new RegExp(`Usage: tlx ${command}`));
    }
  });

  test('an unknown command exits 2 with a suggestion', async () => {
    const result = await runTlx(['valdate', 'configs/finetune.yaml']);
    assert.equal(result.exitCode, 2);
    assert.match(result.stderr, /unknown command 'valdate'/);
    assert.match(result.stderr, /Did you mean validate\?/);
  });

  test('an unknown flag exits 2 with a suggestion', async () => {
    const result = await runTlx(['validate', '--sett', 'a=1', 'configs/finetune.yaml']);
    assert.equal(result.exitCode, 2);
    assert.match(result.stderr, /unknown option '--sett'/);
    assert.match(result.stderr, /Did you mean --set\?/);
  });

  test('validate prints ok for the shipped configs and exits 0', async () => {
    const result = await runTlx(['validate', 'configs/finetune.yaml', 'configs/sweep-fine-tune-at.yaml']);
    assert.equal(result.exitCode, 0, result.stderr);
    assert.equal(result.stdout, 'configs/finetune.yaml: ok\nconfigs/sweep-fine-tune-at.yaml: ok');
  });

  test('validate of a bad file prints file:line:col problems, no stack trace, and exits 2', async () => {
    const dir = tempDir();
    writeFiles(dir, { 'bad.yaml': 'name: x\ndataset:\n  path: d\n  validation_split: 1.5\n' });
    const result = await runTlx(['validate', path.join(dir, 'bad.yaml')]);
    assert.equal(result.exitCode, 2);
    assert.match(result.stderr, /bad\.yaml:4:21: dataset\.validation_split: found 1\.5, expected a number < 1/);
    assert.doesNotMatch(result.stderr, /^\s+at /m);
  });
});
