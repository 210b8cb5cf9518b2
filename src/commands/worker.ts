import type { Logger } from '../core/log.ts';
import { runWorker } from '../sweep/queue.ts';

export interface WorkerCommandOptions {
  queue: string;
  concurrency: number;
  cacheDir?: string;
  log: Logger;
}

/** `tlx worker --queue redis://host:6379`: runs queued sweep trials until stopped. */
export async function workerCommand(options: WorkerCommandOptions): Promise<void> {
  await runWorker({ queueUrl: options.queue, concurrency: options.concurrency, cacheDir: options.cacheDir, log: options.log });
}
