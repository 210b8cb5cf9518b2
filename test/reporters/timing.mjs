// A node:test reporter that prints, after the run, where the suite's time went: each test
// file's own wall time (its process, start to end, as the runner reports it) and test count,
// then the slowest tests. Used beside the spec reporter by `npm test`; with files running
// concurrently the files' times add up to more than the run's wall time.
// `TLX_TIMING_JSON=<file>` also writes the numbers as JSON.
import fs from 'node:fs';
import path from 'node:path';

const slowestShown = 15;

/** Adds this run's file durations to the record (a file not run this time keeps its last one). */
function recordDurations(file, rows) {
  let known = {};
  try {
    known = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch {
    // first run on this machine
  }
  for (const row of rows) if (row.ms > 0) known[row.file] = Math.round(row.ms);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(`${file}.tmp`, JSON.stringify(known, null, 1));
  fs.renameSync(`${file}.tmp`, file);
}

function seconds(ms) {
  return (ms / 1000).toFixed(1).padStart(7);
}

export default async function* timingReporter(source) {
  const files = new Map();
  const tests = [];
  const started = Date.now();
  const entryOf = (file) => {
    if (!files.has(file)) files.set(file, { ms: 0, tests: 0, failed: 0 });
    return files.get(file);
  };
  for await (const event of source) {
    const data = event.data ?? {};
    if (!data.file) continue;
    const isFileItself = data.nesting === 0 && data.name === data.file;
    if (event.type === 'test:complete' && isFileItself) entryOf(data.file).ms = data.details?.duration_ms ?? 0;
    if ((event.type === 'test:pass' || event.type === 'test:fail') && !isFileItself && data.details?.type !== 'suite') {
      const entry = entryOf(data.file);
      entry.tests++;
      if (event.type === 'test:fail') entry.failed++;
      tests.push({ file: path.basename(data.file), name: data.name, ms: data.details?.duration_ms ?? 0 });
    }
  }
  const rows = [...files.entries()]
    .map(([file, e]) => ({ file: path.relative(process.cwd(), file), ...e }))
    .sort((a, b) => b.ms - a.ms);
  tests.sort((a, b) => b.ms - a.ms);
  const wall = Date.now() - started;
  let out = `\n# timing: ${rows.length} files, ${tests.length} tests, wall ${(wall / 1000).toFixed(1)} s\n# ${'file'.padEnd(36)} ${'wall s'.padStart(7)} tests\n`;
  for (const row of rows)
    out += `# ${row.file.padEnd(36)} ${seconds(row.ms)} ${String(row.tests).padStart(5)}${row.failed ? `  (${row.failed} failed)` : ''}\n`;
  out += '# slowest tests\n';
  for (const t of tests.slice(0, slowestShown)) out += `# ${seconds(t.ms)}  ${t.file}: ${t.name.slice(0, 100)}\n`;
  if (process.env.TLX_TIMING_JSON)
    fs.writeFileSync(process.env.TLX_TIMING_JSON, JSON.stringify({ wall_ms: wall, files: rows, tests }, null, 1));
  // scripts/test.mjs starts the slowest files first next time: it reads what this run took.
  if (process.env.TLX_TEST_DURATIONS) recordDurations(process.env.TLX_TEST_DURATIONS, rows);
  yield out;
}
