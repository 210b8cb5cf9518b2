import fs from 'node:fs';
import path from 'node:path';
import { UserError, errorMessage } from '../errors.ts';
import type { Logger } from '../log.ts';
import { RunFolder } from '../track/run-store.ts';
import { redactUri, syncRun } from '../track/sync.ts';

export interface SyncCommandOptions {
  runDirs: string[];
  trackingUri?: string;
  runsDir: string;
  log: Logger;
}

/** Every run folder under the runs dir (sweep and data folders excluded). */
export function localRuns(runsDir: string): string[] {
  if (!fs.existsSync(runsDir)) return [];
  return fs
    .readdirSync(runsDir)
    .map((name) => path.join(runsDir, name))
    .filter((dir) => fs.existsSync(path.join(dir, 'run.json')))
    .sort();
}

export async function syncRuns(dirs: string[], trackingUri: string, log: Logger): Promise<{ dir: string; runId?: string; complete: boolean; error?: string }[]> {
  const results = [];
  for (const dir of dirs) {
    try {
      const result = await syncRun(RunFolder.open(dir), { trackingUri, log });
      results.push({ dir, runId: result.runId, complete: result.complete });
    } catch (error) {
      log.error({ run: dir, error: errorMessage(error) }, 'sync failed');
      results.push({ dir, complete: false, error: errorMessage(error) });
    }
  }
  return results;
}

export async function syncCommand(options: SyncCommandOptions): Promise<void> {
  const trackingUri = options.trackingUri ?? process.env.MLFLOW_TRACKING_URI;
  if (!trackingUri) throw new UserError('sync: no MLflow server: set MLFLOW_TRACKING_URI or pass --tracking-uri');
  const dirs = options.runDirs.length > 0 ? options.runDirs : localRuns(options.runsDir);
  const results = await syncRuns(dirs, trackingUri, options.log);
  for (const r of results) process.stdout.write(`${JSON.stringify({ run: path.basename(r.dir), mlflow_run_id: r.runId, server: redactUri(trackingUri), complete: r.complete, ...(r.error ? { error: r.error } : {}) })}\n`);
  if (results.some((r) => r.error)) throw new Error(`${results.filter((r) => r.error).length} run(s) could not be synced`);
}
