import fs from 'node:fs';
import path from 'node:path';
import { UserError, errorMessage } from '../core/errors.ts';
import { writeJsonAtomic } from '../core/files.ts';
import { listenForInterrupt } from '../core/interrupt.ts';
import type { Logger } from '../core/log.ts';
import { checkJob } from '../sweep/job.ts';
import { runQueuedTrial, trialFailureOf } from '../sweep/trial.ts';
import { MlflowClient } from '../track/mlflow-client.ts';

/**
 * `tlx __trial <request.json> <result.json>` (not for people): one queued trial, run by
 * `tlx worker` in a child process. The job is checked again here, as the worker checked it.
 * It exits when the worker does (its stdin closes), and stops after the current batch on
 * SIGINT (checkpointed; the worker gives the job back). The result says how it ended.
 */
export async function trialCommand(options: {
  request: string;
  result: string;
  runsDir: string;
  cacheDir?: string;
  log: Logger;
}): Promise<void> {
  process.stdin.on('end', () => process.exit(75));
  process.stdin.resume();
  const request = JSON.parse(fs.readFileSync(options.request, 'utf8')) as {
    jobId: string;
    data: unknown;
    copyEverySeconds?: number;
  };
  const interrupt = listenForInterrupt(options.log);
  try {
    const runsDir = path.resolve(options.runsDir);
    const { task } = checkJob(request.data, request.jobId, runsDir);
    const trackingUri = process.env.MLFLOW_TRACKING_URI;
    if (!trackingUri)
      throw new UserError(
        "tlx worker: MLFLOW_TRACKING_URI is not set; a queued trial keeps its copy in the tracking server's artifact store",
      );
    const row = await runQueuedTrial(task, {
      runsDir,
      cacheDir: options.cacheDir,
      log: options.log,
      signal: interrupt.signal,
      client: new MlflowClient({ trackingUri }),
      jobId: request.jobId,
      copyEverySeconds: request.copyEverySeconds,
    });
    writeJsonAtomic(options.result, { row });
  } catch (error) {
    writeJsonAtomic(options.result, { error: errorMessage(error).split('\n')[0], failure: trialFailureOf(error) });
    throw error;
  } finally {
    interrupt.release();
    process.stdin.pause();
  }
}
