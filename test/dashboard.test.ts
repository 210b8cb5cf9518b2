import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { execa, type ResultPromise } from 'execa';
import { chromium, type Browser, type Page } from 'playwright-core';
import { freePort } from '../src/track/mlflow-server.ts';
import { runTlx, tlxBin } from './helpers/cli.ts';
import { writeClassFolders } from './helpers/images.ts';
import { waitForStderr } from './helpers/process.ts';
import { runDirOf, tinyDataAndModel, writeExperiment } from './helpers/runs.ts';
import { tempDir } from './helpers/tmp.ts';

/**
 * The dashboard as a trainer opens it: `tlx ui`, then the printed link, in Debian's
 * chromium (Playwright) against the real MLflow server `tlx ui` starts. Checks read the
 * DOM; screenshots are kept in the test's temp folder (TLX_SCREENSHOTS=<dir> keeps copies,
 * which is how the README's picture is made).
 */

const chromiumPath = '/usr/bin/chromium';
const work = tempDir('tlx-ui-');
const runsDir = path.join(work, 'runs');
let browser: Browser;
let ui: ResultPromise;
let landing = '';
let sweepView = '';
let runName = '';

async function screenshot(page: Page, name: string): Promise<void> {
  const file = path.join(work, name);
  await page.screenshot({ path: file });
  assert.ok(fs.statSync(file).size > 10_000, `${name} was taken`);
  if (process.env.TLX_SCREENSHOTS) fs.copyFileSync(file, path.join(process.env.TLX_SCREENSHOTS, name));
}

before(async () => {
  await writeClassFolders(path.join(work, 'data'), ['ants', 'bees'], 12, { size: 32 });
  const run = await runTlx(
    [
      '--runs-dir',
      runsDir,
      'run',
      writeExperiment(
        work,
        'dashboard',
        `${tinyDataAndModel}train: { feature_extraction: { epochs: 2 }, fine_tune: { epochs: 1 } }\nexport: { tflite: { quantization: float16, representative_images: 10, max_accuracy_drop: 1 } }\ntracking: { mlflow: { experiment: tlx-dashboard, register_model: dashboard-classifier } }\n`,
      ),
    ],
    { cwd: work, timeout: 600_000 },
  );
  assert.equal(run.exitCode, 0, run.stderr.slice(-2000));
  runName = path.basename(runDirOf(run.stdout)).replace(/^\d{8}-\d{6}-/, '');
  const sweep = await runTlx(
    [
      '--runs-dir',
      runsDir,
      'sweep',
      writeExperiment(
        work,
        'trials',
        `${tinyDataAndModel}train: { feature_extraction: { epochs: 1 }, fine_tune: { epochs: 1 } }\ntracking: { mlflow: { experiment: tlx-dashboard } }\nsweep:\n  grid:\n    train.fine_tune.fine_tune_at: [100, 140]\n`,
      ),
    ],
    { cwd: work },
  );
  assert.equal(sweep.exitCode, 0, sweep.stderr.slice(-2000));
  ui = execa(process.execPath, [tlxBin, '--runs-dir', runsDir, 'ui', '--port', String(await freePort())], {
    cwd: work,
    reject: false,
  });
  let out = '';
  ui.stdout!.on('data', (chunk: Buffer) => (out += chunk.toString()));
  await waitForStderr(ui, /synced \d+ local run/, 180_000);
  for (let i = 0; i < 50 && !/^sweep /m.test(out); i++) await new Promise((resolve) => setTimeout(resolve, 100));
  landing = /^MLflow UI: (\S+)$/m.exec(out)![1];
  sweepView = /^sweep trials-\S+: (\S+)$/m.exec(out)![1];
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});

after(async () => {
  await browser?.close();
  ui?.kill('SIGINT');
  await ui;
});

describe('tlx ui, as a trainer sees it', () => {
  test("the printed link opens the Training runs table in Model training mode, with the run's readable name and its datasets", async () => {
    assert.match(landing, /#\/experiments\/\d+\/runs\?workflowType=machine_learning&viewStateShareKey=tlx$/);
    const page = await browser.newPage({ viewport: { width: 2400, height: 1000 } });
    await page.goto(landing);
    await page.getByText(runName, { exact: true }).first().waitFor({ timeout: 60_000 });
    await page.getByText('dashboard-train', { exact: false }).first().waitFor();
    const body = await page.locator('body').innerText();
    assert.doesNotMatch(body, /Traces 0|No data available/, 'not the GenAI overview');
    assert.ok(
      (await page.getByRole('radio', { name: 'Model training', checked: true }).count()) || /Model training/.test(body),
    );
    for (const column of ['Dataset', 'Models', 'val_accuracy'])
      assert.ok(await page.getByText(column, { exact: true }).count(), `column ${column}`);
    await screenshot(page, 'mlflow-runs.png');
    await page.close();
  });

  test("a sweep's view: its trials named by the swept value, with fine_tune_at and val_accuracy as columns", async () => {
    const page = await browser.newPage({ viewport: { width: 2400, height: 1000 } });
    await page.goto(sweepView);
    await page.getByText('trials (sweep)').first().waitFor({ timeout: 60_000 });
    // Unfold the sweep's parent run: its children are the trials.
    await page
      .locator('[role="gridcell"]', { has: page.getByText('trials (sweep)') })
      .locator('button[data-component-id*="runnamecellrenderer"]')
      .first()
      .click();
    for (const name of ['fine_tune_at=100', 'fine_tune_at=140'])
      await page.getByText(name, { exact: true }).first().waitFor({ timeout: 30_000 });
    for (const column of ['train.fine_tune.fine_tune_at', 'val_accuracy'])
      assert.ok(await page.getByText(column, { exact: true }).count(), `column ${column}`);
    const cells = await page.locator('[role="gridcell"]').allInnerTexts();
    assert.ok(cells.includes('100') && cells.includes('140'), 'the swept values are in the table');
    await screenshot(page, 'mlflow-sweep.png');
    await page.close();
  });

  test('the exported model is a registered model version, and the run shows its logged model', async () => {
    const server = landing.slice(0, landing.indexOf('/#/'));
    const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
    await page.goto(`${server}/#/models/dashboard-classifier`);
    await page.getByText('Version 1', { exact: false }).first().waitFor({ timeout: 60_000 });
    assert.equal(
      await page.getByText('Version 2', { exact: false }).count(),
      0,
      'registered once, though tlx ui synced the run again',
    );
    await screenshot(page, 'mlflow-registry.png');
    await page.close();
  });
});
