import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { chromium, type Browser } from 'playwright-core';
import { runTlx } from './helpers/cli.ts';
import { writeClassFolders } from './helpers/images.ts';
import { startMlflowServer, type MlflowServer } from './helpers/mlflow.ts';
import { mlflowState, runDirOf, tinyDataAndModel, writeExperiment } from './helpers/runs.ts';
import { tempDir } from './helpers/tmp.ts';

// Debian's chromium; .ci/run installs it, so this only skips on a machine without it.
const chromiumPath = '/usr/bin/chromium';
const work = tempDir('tlx-ui-');
let server: MlflowServer;
let browser: Browser;

before(async () => {
  if (!fs.existsSync(chromiumPath)) return;
  await writeClassFolders(path.join(work, 'data'), ['ants', 'bees'], 12, { size: 32 });
  server = await startMlflowServer({ dataDir: path.join(work, 'mlflow') });
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test('the dashboard lists the run in its experiment and opens its val_accuracy chart', { skip: !fs.existsSync(chromiumPath) && 'chromium is not installed' }, async () => {
  const file = writeExperiment(work, 'dashboard', `${tinyDataAndModel}train: { feature_extraction: { epochs: 2 }, fine_tune: { epochs: 0 } }\ntracking: { mlflow: { experiment: tlx-dashboard } }\n`);
  const result = await runTlx(['--runs-dir', path.join(work, 'runs'), 'run', file], { cwd: work, env: { MLFLOW_TRACKING_URI: server.url } });
  assert.equal(result.exitCode, 0, result.stderr.slice(-2000));
  const dir = runDirOf(result.stdout);
  const state = mlflowState(dir, server.url);
  const page = await browser.newPage();
  await page.goto(`${server.url}/#/experiments/${state.experiment_id}/runs`);
  await page.getByText(path.basename(dir)).first().waitFor({ timeout: 60_000 });
  await page.goto(`${server.url}/#/experiments/${state.experiment_id}/runs/${state.run_id}/model-metrics`);
  await page.getByText('val_accuracy').first().waitFor({ timeout: 60_000 });
  await page.screenshot({ path: path.join(work, 'run.png') });
  assert.ok(fs.statSync(path.join(work, 'run.png')).size > 1000);
});
