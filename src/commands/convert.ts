import { UserError } from '../core/errors.ts';
import { listenForInterrupt } from '../core/interrupt.ts';
import type { Logger } from '../core/log.ts';
import type { ResolvedExperiment } from '../config/resolved.ts';
import { prepareDataset, type PreparedDataset } from '../data/dataset.ts';
import { PythonWorker } from '../export/python.ts';
import { exportFinishedRun } from '../run/export-finished.ts';
import type { Quantization } from '../run/export-stage.ts';
import type { TfliteRecord } from '../run-folder/records.ts';
import { RunFolder } from '../run-folder/run-folder.ts';
import type { Terminal } from '../ui/terminal.ts';
import { exportBlock } from './result-blocks.ts';

export interface ConvertOptions {
  runDir: string;
  /** One mode, or several comma-separated; none: the configured one. */
  quantization?: string;
  cacheDir?: string;
  log: Logger;
  terminal: Terminal;
  json: boolean;
}

const modes: Quantization[] = ['none', 'dynamic', 'float16', 'int8'];

function modesOf(flag: string | undefined): (Quantization | undefined)[] {
  if (flag === undefined) return [undefined];
  const asked = flag.split(',').map((mode) => mode.trim());
  const unknown = asked.filter((mode) => !modes.includes(mode as Quantization));
  if (unknown.length > 0 || asked.length === 0)
    throw new UserError(`--quantization ${flag}: expected ${modes.join(', ')}, or several of them comma-separated`);
  return [...new Set(asked)] as Quantization[];
}

/**
 * `tlx convert`: export a finished run again (other quantization modes), no retraining.
 * Several modes share one Python process and one decoded dataset. Each file is made in a
 * staging folder and moved into place only once verified, so a failed conversion never
 * replaces a verified export.
 */
export async function convertCommand(options: ConvertOptions): Promise<void> {
  const wanted = modesOf(options.quantization);
  const folder = RunFolder.open(options.runDir);
  folder.lock();
  const interrupt = listenForInterrupt(options.log, 'stopping the conversion');
  const exporter = PythonWorker.start((line) => options.log.debug({ python: line }));
  let data: Promise<PreparedDataset> | undefined;
  const prepareData = (config: ResolvedExperiment, baseDir: string, knownArchiveSha256?: string) =>
    (data ??= prepareDataset(config, { baseDir, cacheDir: options.cacheDir, log: options.log, knownArchiveSha256 }));
  const failed: TfliteRecord[] = [];
  try {
    for (const mode of wanted) {
      if (interrupt.signal.aborted) break;
      const record = await exportFinishedRun(folder, {
        mode,
        cacheDir: options.cacheDir,
        log: options.log,
        signal: interrupt.signal,
        exporter,
        prepareData,
      });
      if (options.json)
        options.terminal.print(
          JSON.stringify({
            run_id: folder.id,
            quantization: record.quantization,
            status: record.status,
            bytes: record.bytes,
            accuracy: record.accuracy,
            median_latency_ms: record.median_latency_ms,
          }),
        );
      else options.terminal.print(exportBlock(folder, record, options.terminal.outputStyle));
      if (record.status !== 'verified') failed.push(record);
    }
    if (failed.length > 0)
      throw new Error(
        failed
          .map(
            (record) =>
              `export ${record.quantization} failed verification: ${record.problems.join('; ')} (the previous export, if any, is unchanged)`,
          )
          .join('\n'),
      );
  } finally {
    await exporter.close();
    interrupt.release();
    folder.unlock();
  }
}
