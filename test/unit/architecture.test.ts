import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { checkTfjsInternals, graphOf, TfjsInternalsError } from '../../src/tfjs/internals.ts';
import { tf } from '../../src/tfjs/tf.ts';

/**
 * The shape ARCHITECTURE.md draws: folders in layers, imports only pointing down, and every
 * private part of tfjs reached through one adapter that fails loudly when tfjs changes.
 */

const src = path.join(import.meta.dirname, '..', '..', 'src');

/** Lowest first; a folder may import from its own folder and from any folder listed before it. */
const layers: string[][] = [
  ['core'],
  ['tfjs', 'net', 'ui', 'plots'],
  ['config'],
  ['data', 'models'],
  ['engine'],
  ['train'],
  ['run-folder'],
  ['export', 'track'],
  ['run'],
  ['sweep'],
  ['commands'],
  ['.'], // src/cli.ts
];

function rankOf(folder: string): number {
  const rank = layers.findIndex((names) => names.includes(folder));
  assert.ok(
    rank >= 0,
    `src/${folder}/ is not placed in the layers of test/unit/architecture.test.ts (and ARCHITECTURE.md)`,
  );
  return rank;
}

function sourceFiles(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return sourceFiles(full);
    return entry.name.endsWith('.ts') ? [full] : [];
  });
}

/** Relative imports of a file: static `from '...'` and dynamic `import('...')`. */
export function importsOf(text: string): string[] {
  return [...text.matchAll(/(?:\bfrom\s+|\bimport\s*\(\s*)'(\.{1,2}\/[^']+)'/g)].map((m) => m[1]);
}

/**
 * A line that composes a path inside a run folder: joins onto a folder's `.dir`, builds one in a
 * template, or names a file of the on-disk contract (ARCHITECTURE.md) as a string of its own.
 */
function composesInsideRunFolder(line: string): boolean {
  const own = line.replace(/\.pathOf\('[^']*'\)/g, ''); // RunFolder.pathOf composes it: the folder's own method
  if (/path\.(join|resolve)\(\s*[\w.]*\.dir\s*,/.test(own)) return true;
  if (/\$\{[\w.]*\.dir\}\//.test(own)) return true;
  return /'(checkpoints|plots|metrics\.jsonl|summary\.json|run\.json|mlflow\.json|dataset\.json|classifier\.json)'/.test(
    own,
  );
}

describe('architecture', () => {
  test('every import points to the same folder or a lower one', () => {
    const upward: string[] = [];
    for (const file of sourceFiles(src)) {
      const from = path.relative(src, path.dirname(file)) || '.';
      for (const spec of importsOf(fs.readFileSync(file, 'utf8'))) {
        const target = path.resolve(path.dirname(file), spec);
        const to = path.relative(src, path.dirname(target)) || '.';
        assert.ok(!to.startsWith('..'), `${path.relative(src, file)} imports ${spec}, outside src/`);
        if (to !== from && rankOf(to) >= rankOf(from)) upward.push(`src/${path.relative(src, file)} -> ${spec}`);
      }
    }
    assert.deepEqual(upward, [], 'imports that point sideways or up');
  });

  test('only src/run-folder/ composes a path inside a run folder', () => {
    const composing: string[] = [];
    for (const file of sourceFiles(src).filter((f) => !path.relative(src, f).startsWith(`run-folder${path.sep}`))) {
      const lines = fs.readFileSync(file, 'utf8').split('\n');
      lines.forEach((line, i) => {
        if (composesInsideRunFolder(line)) composing.push(`src/${path.relative(src, file)}:${i + 1}: ${line.trim()}`);
      });
    }
    assert.deepEqual(
      composing,
      [],
      'paths inside a run folder composed outside src/run-folder/ (use a RunFolder method)',
    );
  });

  test('the run-folder scan sees a joined path, a template path and a file of the contract named', () => {
    assert.ok(composesInsideRunFolder("fs.writeFileSync(path.join(folder.dir, 'classifier.json'), text);"));
    assert.ok(composesInsideRunFolder('const plots = `${run.dir}/plots`;'));
    assert.ok(composesInsideRunFolder("artifacts: { metrics: 'metrics.jsonl' },"));
    assert.ok(!composesInsideRunFolder('const final = path.join(path.dirname(folder.dir), runId);'));
    assert.ok(!composesInsideRunFolder("lines.push(`  plots   ${folder.pathOf('plots')}`);"));
  });

  test('the import scan sees static and dynamic imports (so the check above can fail)', () => {
    assert.deepEqual(
      importsOf(`import { a } from '../run/run.ts';\nconst m = await import('./x.ts');\nimport fs from 'node:fs';`),
      ['../run/run.ts', './x.ts'],
    );
  });

  test('tfjs internals are where src/tfjs/internals.ts expects them; a moved one names that file', () => {
    checkTfjsInternals();
    const plain = tf.sequential({ layers: [tf.layers.dense({ units: 1, inputShape: [2] })] });
    const withoutGraph = Object.assign(Object.create(Object.getPrototypeOf(plain) as object) as object, {
      inputs: plain.inputs,
      outputs: plain.outputs,
    });
    assert.throws(
      () => graphOf(withoutGraph as typeof plain),
      (error: unknown) => error instanceof TfjsInternalsError && /src\/tfjs\/internals\.ts/.test(error.message),
    );
    plain.dispose();
  });

  test('no file outside src/tfjs/ reaches into tfjs by a private path', () => {
    const offenders = sourceFiles(src)
      .filter((file) => !file.includes(`${path.sep}tfjs${path.sep}`))
      .filter((file) => /@tensorflow\/tfjs-[a-z-]+\/(dist|src)\//.test(fs.readFileSync(file, 'utf8')));
    assert.deepEqual(
      offenders.map((f) => path.relative(src, f)),
      [],
    );
  });
});
