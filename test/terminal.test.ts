import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { before, describe, test } from 'node:test';
import { execa } from 'execa';
import { runTlx, tlxBin } from './helpers/cli.ts';
import { writeClassFolders } from './helpers/images.ts';
import { runDirOf, tinyDataAndModel, waitForEpoch, writeExperiment } from './helpers/runs.ts';
import { tempDir } from './helpers/tmp.ts';

/**
 * What a person sees in a terminal: each command run under a pseudo-terminal (util-linux's
 * `script`), stdout and stderr together as the screen shows them; and the same commands in
 * a pipe, where they print JSON.
 */

const work = tempDir('tlx-term-');
const runsDir = path.join(work, 'runs');

/** Runs tlx in a pseudo-terminal of 80 columns; returns what the terminal received. */
async function inTerminal(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ screen: string; exitCode: number }> {
  const command = [process.execPath, tlxBin, ...args].map((a) => `'${a.replace(/'/g, "'\\''")}'`).join(' ');
  // The screen of a colour terminal, whatever this process's own environment says (CI runners often set NO_COLOR).
  const { NO_COLOR: _inherited, ...inherited } = process.env;
  const screenEnv = { ...inherited, TERM: 'xterm-256color', ...env };
  const result = await execa('script', ['-qfec', `stty cols 80 rows 40; ${command}`, '/dev/null'], {
    cwd: work,
    env: screenEnv,
    extendEnv: false,
    reject: false,
    timeout: 600_000,
  });
  return { screen: String(result.stdout), exitCode: result.exitCode ?? -1 };
}

// eslint-disable-next-line no-control-regex
const escapes = /\u001b\[[0-9;?]*[A-Za-z]/g;
// eslint-disable-next-line no-control-regex
const colours = /\u001b\[(?:[0-9;]*;)?(?:2|3[0-9]|9[0-7])m/;

/** The lines a person reads at the end (escape codes and redrawn bar lines removed). */
function settled(screen: string): string[] {
  return screen
    .split(/\r?\n/)
    .map((line) => line.split('\r').pop()!.replace(escapes, ''))
    .filter((line) => line.trim().length > 0);
}

const body = `${tinyDataAndModel}train:\n  feature_extraction: { epochs: 2 }\n  fine_tune: { epochs: 1 }\n`;

before(async () => {
  await writeClassFolders(path.join(work, 'data'), ['ants', 'bees'], 12, { size: 32 });
});

describe('tlx run in a terminal', () => {
  let screen = '';

  test('one line per epoch (no field dump), the run-level progress line, and the final block with the per-class table', async () => {
    const result = await inTerminal(['--runs-dir', runsDir, 'run', writeExperiment(work, 'shown', body)]);
    screen = result.screen;
    assert.equal(result.exitCode, 0, screen.slice(-3000));
    const lines = settled(screen);
    const epochLines = lines.filter((l) =>
      /epoch \d \((feature_extraction|fine_tune)\): loss \d\.\d{4} acc \d\.\d{4} val_loss/.test(l),
    );
    assert.equal(epochLines.length, 3, 'one line per epoch');
    assert.ok(
      !lines.some((l) => /^\s*(epoch|phase|loss|val_loss|learning_rate): /.test(l)),
      'no field dump under the lines',
    );
    assert.match(screen, /feature_extraction epoch \d\/3 \[.*\] [\d.]+ s elapsed, ETA/, 'the run-level line');
    assert.match(screen, / {2}epoch \d \[.*\] \d+\/\d+ \| loss \d\.\d{4} \| acc/, 'the epoch bar');
    const block = lines.slice(lines.findIndex((l) => /^Run \S+ {2}FINISHED in /.test(l)));
    assert.ok(block.length > 5, lines.slice(-15).join('\n'));
    assert.match(block.join('\n'), /test accuracy|validation/);
    assert.match(
      block.join('\n'),
      /class\s+precision\s+recall\s+f1\s+support\n\s+ants\s+\d\.\d{4}\s+\d\.\d{4}\s+\d\.\d{4}\s+\d+\n\s+bees/,
    );
    assert.match(block.join('\n'), /plots {3}\S+\/plots\//);
    for (const line of block) assert.ok(line.length <= 80, `fits 80 columns: ${line}`);
  });

  test('colours on a terminal, none with NO_COLOR', async () => {
    assert.match(screen, colours, 'the first run was coloured');
    const plain = await inTerminal(['--runs-dir', runsDir, 'run', writeExperiment(work, 'plain', body)], {
      NO_COLOR: '1',
    });
    assert.equal(plain.exitCode, 0);
    assert.doesNotMatch(plain.screen, colours);
  });

  test('--quiet: only warnings, errors and the result; --verbose: the fields', async () => {
    const quiet = await inTerminal(['--quiet', '--runs-dir', runsDir, 'run', writeExperiment(work, 'quiet', body)]);
    assert.equal(quiet.exitCode, 0);
    assert.doesNotMatch(quiet.screen, /epoch \d \(feature_extraction\): loss/);
    assert.doesNotMatch(quiet.screen, /\[[█░]+\]/, 'no bars');
    assert.match(settled(quiet.screen).join('\n'), /FINISHED in /);
    const verbose = await inTerminal([
      '--verbose',
      '--runs-dir',
      runsDir,
      'run',
      writeExperiment(work, 'verbose', body),
    ]);
    assert.match(
      settled(verbose.screen).join('\n'),
      /epoch 1 \(feature_extraction\): loss .* epoch=1 phase=feature_extraction loss=\d\.\d{1,4} /,
    );
  });

  test('in a pipe: no bars, JSON logs, and the JSON result', async () => {
    const piped = await runTlx(['--runs-dir', runsDir, 'run', writeExperiment(work, 'piped', body)], { cwd: work });
    assert.equal(piped.exitCode, 0);
    const result = JSON.parse(piped.stdout) as { status: string; dir: string };
    assert.equal(result.status, 'FINISHED');
    for (const line of piped.stderr.split('\n').filter((l) => l.startsWith('{'))) JSON.parse(line);
    assert.doesNotMatch(piped.stderr, /\[[█░]+\]/);
  });
});

describe('runs from the terminal', () => {
  test('tlx runs lists a finished, a failed and a killed run, newest first; --json, --status and a limit', async () => {
    const failed = await runTlx(
      [
        '--runs-dir',
        runsDir,
        'run',
        writeExperiment(work, 'broken', `${body}`.replace('weights: none', 'weights: missing.h5')),
      ],
      { cwd: work },
    );
    assert.equal(failed.exitCode, 2);
    const child = execa(
      process.execPath,
      [
        tlxBin,
        '--runs-dir',
        runsDir,
        'run',
        writeExperiment(
          work,
          'stopped',
          `${tinyDataAndModel}train: { feature_extraction: { epochs: 30 }, fine_tune: { epochs: 1 } }\n`,
        ),
      ],
      { cwd: work, reject: false },
    );
    await waitForEpoch(runsDir, '-stopped-', 1);
    child.kill('SIGINT');
    assert.equal((await child).exitCode, 130);
    const listed = await runTlx(['--runs-dir', runsDir, '--json', 'runs'], { cwd: work });
    const runs = JSON.parse(listed.stdout) as { id: string; name: string; status: string; export?: string }[];
    assert.deepEqual(
      runs.slice(0, 3).map((r) => [r.name, r.status]),
      [
        ['stopped', 'KILLED'],
        ['broken', 'FAILED'],
        ['piped', 'FINISHED'],
      ],
    );
    const killed = JSON.parse(
      (await runTlx(['--runs-dir', runsDir, '--json', 'runs', '--status', 'killed'], { cwd: work })).stdout,
    ) as { name: string }[];
    assert.deepEqual(
      killed.map((r) => r.name),
      ['stopped'],
    );
    assert.equal(
      (
        JSON.parse(
          (await runTlx(['--runs-dir', runsDir, '--json', 'runs', '-n', '2'], { cwd: work })).stdout,
        ) as unknown[]
      ).length,
      2,
    );
    const table = settled((await inTerminal(['--runs-dir', runsDir, 'runs'])).screen);
    assert.match(table[0], /^run\s+status\s+started\s+time\s+best val\s+test\s+export/);
    assert.match(table[1], /^stopped-\S+\s+KILLED/);
    assert.match(table[2], /^broken-\S+\s+FAILED/);
    for (const line of table) assert.ok(line.length <= 80, line);
  });

  test("tlx show prints a run's block; a killed run says how to resume it", async () => {
    const dir = fs.readdirSync(runsDir).find((d) => d.includes('-piped-'))!;
    const shown = settled((await inTerminal(['--runs-dir', runsDir, 'show', dir])).screen).join('\n');
    assert.match(shown, /^Run \S+-piped-\S+ {2}FINISHED in /);
    assert.match(shown, /class\s+precision\s+recall/);
    const stopped = fs.readdirSync(runsDir).find((d) => d.includes('-stopped-'))!;
    assert.match(
      settled((await inTerminal(['--runs-dir', runsDir, 'show', stopped])).screen).join('\n'),
      /KILLED.*\n.*resume with: tlx run --resume/,
    );
  });
});

describe('the other commands in a terminal', () => {
  test('tlx sweep: the table with the best trial marked; tlx data: classes and counts', async () => {
    const sweep = await inTerminal([
      '--runs-dir',
      runsDir,
      'sweep',
      writeExperiment(work, 'swept', `${body}sweep:\n  grid:\n    train.fine_tune.fine_tune_at: [100, 140]\n`),
    ]);
    assert.equal(sweep.exitCode, 0, sweep.screen.slice(-2000));
    const lines = settled(sweep.screen);
    assert.ok(
      lines.some((l) => /^\* \d\s+\d+\s+finished/.test(l)),
      'the best trial is marked',
    );
    assert.ok(lines.some((l) => /^best: trial \d/.test(l)));
    const data = settled(
      (await inTerminal(['--runs-dir', runsDir, 'data', writeExperiment(work, 'dataview', body)])).screen,
    ).join('\n');
    assert.match(data, /classes \(2\): ants, bees\ntrain \d+, validation \d+, test \d+ images \(memory\)/);
  });

  test('tlx model: every layer with its index within 80 columns, each block marked with the fine_tune_at that starts it; JSON in a pipe', async () => {
    // oneDNN on, as TensorFlow turns it on by itself on an AVX-512 CPU: its start-up lines must not reach the screen.
    const screen = await inTerminal(['model', 'mobilenet_v3_small', '--size', '96'], { TF_ENABLE_ONEDNN_OPTS: '1' });
    assert.equal(screen.exitCode, 0, screen.screen.slice(-2000));
    const lines = settled(screen.screen);
    assert.match(lines[0], /^MobileNetV3Small, include_top=False/, 'the table starts the screen');
    assert.ok(
      lines.every((line) => line.length <= 80),
      lines.find((line) => line.length > 80),
    );
    assert.match(lines[1], /^157 layers \(fine_tune_at 0\.\.157\), [\d,]+ parameters$/);
    const rows = lines.filter((line) => /^\s*\d+\s{2}\S/.test(line));
    assert.equal(rows.length, 157);
    lines.forEach((line, i) => {
      const marker = /^── (block \d+|top) · fine_tune_at: (\d+) trains (\d+) layers/.exec(line);
      if (marker) assert.equal(lines[i + 1].trim().split(/\s+/)[0], marker[2], `${marker[1]} starts at the next row`);
    });
    assert.ok(lines.some((line) => line.startsWith('── block 10 · fine_tune_at: 139 ')));
    const verbose = await inTerminal(['--verbose', 'model', 'mobilenet_v3_small', '--size', '96'], {
      TF_ENABLE_ONEDNN_OPTS: '1',
    });
    assert.match(
      verbose.screen,
      /oneDNN custom operations are on/,
      '--verbose shows what TensorFlow printed at start-up',
    );
    const piped = await runTlx(['model', 'efficientnet_b0', '--size', '64'], { cwd: work });
    const json = JSON.parse(piped.stdout) as {
      layers: { name: string; type: string }[];
      blocks: { block: string; fine_tune_at: number }[];
      params: number;
    };
    assert.equal(json.layers.length, 238);
    assert.deepEqual(json.layers[3], { ...json.layers[3], name: 'rescaling_1', type: 'Rescaling' });
    assert.equal(json.params, 4049571, "Keras's EfficientNetB0(include_top=False).count_params()");
    assert.deepEqual(json.blocks[0], { ...json.blocks[0], block: 'block 1a', fine_tune_at: 8 });
    const refused = await runTlx(['model', 'resnet50'], { cwd: work });
    assert.equal(refused.exitCode, 2);
    assert.match(
      refused.stderr,
      /unknown base resnet50; expected one of mobilenet_v2, mobilenet_v3_small, mobilenet_v3_large, efficientnet_b0/,
    );
  });
});

describe("a run's own log", () => {
  test('the run folder keeps every log line as JSON with its fields', async () => {
    const dir = runDirOf(
      (await runTlx(['--runs-dir', runsDir, 'run', writeExperiment(work, 'logged', body)], { cwd: work })).stdout,
    );
    const records = fs
      .readFileSync(path.join(dir, 'log.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.ok(
      records.some((r) => r.epoch === 1 && typeof r.val_loss === 'number'),
      'the epoch record with its fields',
    );
  });
});
