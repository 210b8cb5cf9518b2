import path from 'node:path';
import { UserError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { redactUrl } from '../core/redact.ts';
import { RunFolder } from '../run-folder/run-folder.ts';
import { MlflowClient } from '../track/mlflow-client.ts';
import { startMlflowServer } from '../track/mlflow-server.ts';
import { syncFolders } from '../track/sync.ts';

export interface UiOptions {
  port: number;
  runsDir: string;
  experiment?: string;
  open: boolean;
  log: Logger;
}

/**
 * The page a trainer wants: the experiment's Training runs table (`#/experiments/<id>/runs`),
 * for the experiment named with --experiment, else the one of the newest local run.
 */
export async function runsPageUrl(serverUrl: string, folders: RunFolder[], experiment?: string): Promise<string> {
  const client = new MlflowClient({ trackingUri: serverUrl, retries: 2 });
  if (experiment) {
    const id = await client.getExperimentByName(experiment);
    if (!id) throw new UserError(`ui: no experiment named "${experiment}" on ${redactUrl(serverUrl)}`);
    return `${serverUrl}/#/experiments/${id}/runs`;
  }
  const key = redactUrl(serverUrl);
  const newest = [...folders].reverse().find((folder) => folder.readMlflow().servers[key]);
  const id = newest?.readMlflow().servers[key]?.experiment_id;
  return id ? `${serverUrl}/#/experiments/${id}/runs` : `${serverUrl}/#/experiments`;
}

/** `tlx ui`: a local MLflow dashboard over runs/.mlflow, every local run synced into it. */
export async function uiCommand(options: UiOptions): Promise<void> {
  const dataDir = path.resolve(options.runsDir, '.mlflow');
  options.log.info({ dataDir }, 'starting the MLflow server');
  const server = await startMlflowServer({ dataDir, port: options.port, onOutput: (line) => options.log.debug({ mlflow: line }) });
  try {
    const folders = RunFolder.list(options.runsDir);
    const results = await syncFolders(folders, server.url, options.log);
    options.log.info({ runs: results.length }, `synced ${results.filter((r) => !r.error && !r.skipped).length} local run(s)`);
    const url = await runsPageUrl(server.url, folders, options.experiment);
    process.stdout.write(`MLflow UI: ${url}\n`);
    if (options.open) {
      const { default: open } = await import('open');
      await open(url).catch((error: unknown) => options.log.warn({ error: String(error) }, 'could not open a browser; open the link above'));
    }
    await new Promise<void>((resolve) => {
      process.once('SIGINT', () => resolve());
      process.once('SIGTERM', () => resolve());
    });
  } finally {
    await server.stop();
  }
}
