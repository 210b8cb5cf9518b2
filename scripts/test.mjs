#!/usr/bin/env node
// `npm test`: every test file under test/, six at a time, the slowest first (as Jest orders
// them: by the duration each file took in the last run on this machine, else by the seconds
// test/durations.json gives it, measured on a 2-core machine, else by file size),
// so that a long file never starts last and holds the suite up alone. The spec reporter
// shows each test; test/reporters/timing.mjs prints where the time went and records the
// durations for the next run. Extra arguments go to node --test (e.g. a file to run alone).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const durationsFile = path.join(root, 'node_modules', '.cache', 'tlx', 'test-durations.json');
// Six: the files wait on processes, servers and timers for part of their time, and four left the
// 2 cores idle for a fifth of the suite (fresh clone, 2 cores: four 657 s, six 544 s).
const concurrency = process.env.TLX_TEST_CONCURRENCY ?? '6';

function testFiles(dir) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) return entry.name === 'helpers' || entry.name === 'reporters' ? [] : testFiles(full);
    return entry.name.endsWith('.test.ts') ? [path.relative(root, full)] : [];
  });
}

function readDurations(file) {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    return {};
  }
}

// Milliseconds each file took here last time; else the committed seconds (a fresh clone has no record).
const durations = readDurations(durationsFile);
const committedSeconds = readDurations(path.join(root, 'test', 'durations.json'));
// A file never timed is weighed by size: ~1 ms per byte, about what the suite's files take.
const weight = (file) =>
  durations[file] ??
  (committedSeconds[file] !== undefined ? committedSeconds[file] * 1000 : fs.statSync(path.join(root, file)).size);
const files =
  process.argv.length > 2
    ? process.argv.slice(2)
    : testFiles(path.join(root, 'test')).sort((a, b) => weight(b) - weight(a));

const result = spawnSync(
  process.execPath,
  [
    '--import',
    'tsx',
    '--test',
    `--test-concurrency=${concurrency}`,
    '--test-reporter=spec',
    '--test-reporter-destination=stdout',
    '--test-reporter=./test/reporters/timing.mjs',
    '--test-reporter-destination=stdout',
    ...files,
  ],
  // Several files at a time already fill the cores: each TensorFlow (and oneDNN's OpenMP) runs one
  // thread, instead of every process spinning a pool per core over the others (measured on 2
  // cores, four runs at once: 22% less wall, 19% less CPU). Tests never depend on thread counts.
  {
    cwd: root,
    stdio: 'inherit',
    env: {
      TF_NUM_INTRAOP_THREADS: '1',
      TF_NUM_INTEROP_THREADS: '1',
      OMP_NUM_THREADS: '1',
      ...process.env,
      TLX_TEST_DURATIONS: durationsFile,
    },
  },
);
process.exit(result.status ?? 1);
