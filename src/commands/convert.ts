import { listenForInterrupt } from '../core/interrupt.ts';
import type { Logger } from '../core/log.ts';
import { exportFinishedRun } from '../run/export-finished.ts';
import type { Quantization } from '../run/export-stage.ts';
import { RunFolder } from '../run-folder/run-folder.ts';
import type { Terminal } from '../ui/terminal.ts';
import { exportBlock } from './blocks.ts';

export interface ConvertOptions {
  runDir: string;
  quantization?: string;
  cacheDir?: string;
  log: Logger;
  terminal: Terminal;
  json: boolean;
}

/**
 * `tlx convert`: export a finished run again (another quantization mode), no retraining.
 * The new file is made in a staging folder and moved into place only once verified, so a
 * failed conversion never replaces a verified export.
 */
export async function convertCommand(options: ConvertOptions): Promise<void> {
  const folder = RunFolder.open(options.runDir);
  folder.lock();
  const interrupt = listenForInterrupt(options.log, 'stopping the conversion');
  try {
    const record = await exportFinishedRun(folder, { mode: options.quantization as Quantization | undefined, cacheDir: options.cacheDir, log: options.log, interrupt });
    if (options.json) options.terminal.print(JSON.stringify({ run_id: folder.id, quantization: record.quantization, status: record.status, bytes: record.bytes, accuracy: record.accuracy, median_latency_ms: record.median_latency_ms }));
    else options.terminal.print(exportBlock(folder, record, options.terminal.outputStyle));
    if (record.status !== 'verified') throw new Error(`export ${record.quantization} failed verification: ${record.problems.join('; ')} (the previous export, if any, is unchanged)`);
  } finally {
    interrupt.release();
    folder.unlock();
  }
}
