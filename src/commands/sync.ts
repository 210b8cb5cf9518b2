import path from 'node:path';
import { UserError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { redactUrl } from '../core/redact.ts';
import { RunFolder } from '../run-folder/run-folder.ts';
import { syncFolders } from '../track/sync.ts';

export interface SyncCommandOptions {
  runDirs: string[];
  trackingUri?: string;
  runsDir: string;
  log: Logger;
}

/** `tlx sync`: push local runs to an MLflow server; prints per run what arrived and what the server refused. */
export async function syncCommand(options: SyncCommandOptions): Promise<void> {
  const trackingUri = options.trackingUri ?? process.env.MLFLOW_TRACKING_URI;
  if (!trackingUri) throw new UserError('sync: no MLflow server: set MLFLOW_TRACKING_URI or pass --tracking-uri');
  const folders =
    options.runDirs.length > 0 ? options.runDirs.map((dir) => RunFolder.open(dir)) : RunFolder.list(options.runsDir);
  const results = await syncFolders(folders, trackingUri, options.log);
  for (const r of results) {
    for (const refusal of r.refused)
      options.log.warn(
        { run: path.basename(r.dir), kind: refusal.kind, item: refusal.item, status: refusal.status },
        `not sent: ${refusal.kind} ${refusal.item}: ${refusal.message}`,
      );
    if (r.skipped) options.log.warn({ run: path.basename(r.dir) }, `skipped: ${r.skipped}`);
    process.stdout.write(
      `${JSON.stringify({ run: path.basename(r.dir), mlflow_run_id: r.runId, server: redactUrl(trackingUri), complete: r.complete, ...(r.refused.length ? { refused: r.refused.map((x) => ({ kind: x.kind, item: x.item, status: x.status, message: x.message })) } : {}), ...(r.skipped ? { skipped: r.skipped } : {}), ...(r.error ? { error: r.error } : {}) })}\n`,
    );
  }
  const failed = results.filter((r) => r.error);
  if (failed.length > 0) throw new Error(`${failed.length} run(s) could not be synced`);
}
