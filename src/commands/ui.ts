import path from 'node:path';
import type { Logger } from '../log.ts';
import { startMlflowServer } from '../track/mlflow-server.ts';
import { localRuns, syncRuns } from './sync.ts';

export interface UiOptions {
  port: number;
  runsDir: string;
  log: Logger;
}

/** `tlx ui`: a local MLflow server over runs/.mlflow, every local run synced into it. */
export async function uiCommand(options: UiOptions): Promise<void> {
  const dataDir = path.resolve(options.runsDir, '.mlflow');
  options.log.info({ dataDir }, 'starting the MLflow server');
  const server = await startMlflowServer({ dataDir, port: options.port, onOutput: (line) => options.log.debug({ mlflow: line }) });
  const results = await syncRuns(localRuns(options.runsDir), server.url, options.log);
  options.log.info({ runs: results.length }, `synced ${results.filter((r) => !r.error).length} local run(s)`);
  process.stdout.write(`MLflow UI: ${server.url}/#/experiments (runs: open an experiment, then "Training runs")\n`);
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await server.stop();
}
