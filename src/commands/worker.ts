import path from 'node:path';
import type { Logger } from '../core/log.ts';
import { queueUrlOf, runWorker } from '../sweep/queue.ts';

export interface WorkerCommandOptions {
  queue?: string | boolean;
  concurrency: number;
  copyEvery: number;
  runsDir: string;
  cacheDir?: string;
  log: Logger;
}

/** `tlx worker [--queue redis://host:6379]`: runs queued sweep trials until stopped. */
export async function workerCommand(options: WorkerCommandOptions): Promise<void> {
  await runWorker({
    queueUrl: queueUrlOf(options.queue),
    concurrency: options.concurrency,
    copyEverySeconds: options.copyEvery,
    runsDir: path.resolve(options.runsDir),
    cacheDir: options.cacheDir,
    log: options.log,
  });
  // The worker is closed, but BullMQ's watchdog on its blocking read (up to drainDelay + 1 s)
  // and a reconnect timer against an unreachable Redis can still hold the event loop: leave
  // shortly even then (an unref'd timer: it never delays a process that can end by itself).
  setTimeout(() => process.exit(), 300).unref();
}
