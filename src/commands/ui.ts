import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../core/errors.ts';
import { stopSignals } from '../core/interrupt.ts';
import type { Logger } from '../core/log.ts';
import { redactUrl } from '../core/redact.ts';
import { RunFolder } from '../run-folder/run-folder.ts';
import { SweepFolder } from '../run-folder/sweep-folder.ts';
import { MlflowClient } from '../track/mlflow-client.ts';
import { startMlflowServer } from '../track/mlflow-server.ts';
import { syncFolders } from '../track/sync.ts';
import { runsPageUrl, sweepViewKey } from '../track/views.ts';

export interface UiOptions {
  port: number;
  runsDir: string;
  experiment?: string;
  open: boolean;
  log: Logger;
}

/**
 * The page a trainer wants: the Training runs table of the experiment named with
 * --experiment, else of the newest local run, in the UI's model-training mode with tlx's
 * columns.
 */
async function landingUrl(serverUrl: string, folders: RunFolder[], experiment?: string): Promise<string> {
  if (experiment) {
    const id = await new MlflowClient({ trackingUri: serverUrl, retries: 2 }).getExperimentByName(experiment);
    if (!id) throw new UserError(`ui: no experiment named "${experiment}" on ${redactUrl(serverUrl)}`);
    return runsPageUrl(serverUrl, id);
  }
  const key = redactUrl(serverUrl);
  const newest = [...folders].reverse().find((folder) => folder.readMlflow().servers[key]);
  const id = newest?.readMlflow().servers[key]?.experiment_id;
  return id ? runsPageUrl(serverUrl, id) : `${serverUrl}/#/experiments`;
}

/** Each local sweep's view (children unfolded, swept keys and metric as columns) on this server. */
function sweepUrls(serverUrl: string, runsDir: string): { id: string; url: string }[] {
  const sweepsDir = path.join(runsDir, 'sweeps');
  if (!fs.existsSync(sweepsDir)) return [];
  return fs
    .readdirSync(sweepsDir)
    .map((id) => SweepFolder.at(runsDir, id))
    .filter((sweep) => sweep.exists())
    .flatMap((sweep) => {
      const state = sweep.readMlflow().servers[redactUrl(serverUrl)];
      return state ? [{ id: sweep.id, url: runsPageUrl(serverUrl, state.experiment_id, sweepViewKey(sweep.id)) }] : [];
    });
}

/** `tlx ui`: a local MLflow dashboard over runs/.mlflow, every local run synced into it. */
export async function uiCommand(options: UiOptions): Promise<void> {
  // Listening from the start: a stop signal during start-up ends the dashboard once it is up,
  // rather than killing tlx by the signal's default action.
  const stopped = new Promise<void>((resolve) => {
    for (const signal of stopSignals) process.once(signal, () => resolve());
  });
  const dataDir = path.resolve(options.runsDir, '.mlflow');
  options.log.info({ dataDir }, 'starting the MLflow server');
  const server = await startMlflowServer({
    dataDir,
    port: options.port,
    onOutput: (line) => options.log.debug({ mlflow: line }),
  });
  try {
    const folders = RunFolder.list(options.runsDir);
    const results = await syncFolders(folders, server.url, options.log);
    options.log.info(
      { runs: results.length },
      `synced ${results.filter((r) => !r.error && !r.skipped).length} local run(s)`,
    );
    const url = await landingUrl(server.url, folders, options.experiment);
    process.stdout.write(`MLflow UI: ${url}\n`);
    for (const sweep of sweepUrls(server.url, options.runsDir))
      process.stdout.write(`sweep ${sweep.id}: ${sweep.url}\n`);
    if (options.open) {
      const { default: open } = await import('open');
      await open(url).catch((error: unknown) =>
        options.log.warn({ error: String(error) }, 'could not open a browser; open the link above'),
      );
    }
    await stopped;
  } finally {
    await server.stop();
  }
}
