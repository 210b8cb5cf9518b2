import fs from 'node:fs';
import { errorMessage } from '../core/errors.ts';
import { writeJsonAtomic } from '../core/files.ts';
import { listenForInterrupt } from '../core/interrupt.ts';
import type { Logger } from '../core/log.ts';
import { runQueuedTrial, type QueuedTrial } from '../sweep/trial.ts';

/**
 * `tlx __trial <trial.json> <result.json>` (not for people): one queued trial, run by
 * `tlx worker` in a child process. It exits when the worker does (its stdin closes), and
 * stops after the current batch on SIGINT (checkpointed; the worker gives the job back).
 */
export async function trialCommand(options: { request: string; result: string; cacheDir?: string; log: Logger }): Promise<void> {
  process.stdin.on('end', () => process.exit(75));
  process.stdin.resume();
  const trial = JSON.parse(fs.readFileSync(options.request, 'utf8')) as QueuedTrial;
  const interrupt = listenForInterrupt(options.log);
  try {
    const row = await runQueuedTrial(trial, { log: options.log, interrupt, cacheDir: options.cacheDir });
    writeJsonAtomic(options.result, { row });
  } catch (error) {
    writeJsonAtomic(options.result, { error: errorMessage(error).split('\n')[0] });
    throw error;
  } finally {
    interrupt.release();
    process.stdin.pause();
  }
}
