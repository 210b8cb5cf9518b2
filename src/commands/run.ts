import { loadExperiment } from '../config/load.ts';
import { listenForInterrupt } from '../core/interrupt.ts';
import type { Logger } from '../core/log.ts';
import { executeRun } from '../run/run.ts';
import { TerminalRunProgress } from '../run/terminal-progress.ts';
import type { Terminal } from '../ui/terminal.ts';
import { runBlock } from './result-blocks.ts';

export interface RunCommandOptions {
  file?: string;
  overrides: string[];
  resume?: string;
  cacheDir?: string;
  runsDir: string;
  log: Logger;
  terminal: Terminal;
  json: boolean;
  progress: boolean;
}

/**
 * `tlx run`: train an experiment (or continue one); Ctrl-C stops after the batch, resumable.
 * Ends with the run's block for a person, or one JSON line for scripts.
 */
export async function runCommand(options: RunCommandOptions): Promise<void> {
  const start = options.file
    ? { experiment: loadExperiment(options.file, { overrides: options.overrides }) }
    : { resume: options.resume! };
  const interrupt = listenForInterrupt(options.log);
  const { terminal } = options;
  try {
    const { folder, summary } = await executeRun(start, {
      runsDir: options.runsDir,
      cacheDir: options.cacheDir,
      log: options.log,
      signal: interrupt.signal,
      progress: options.progress ? (config) => new TerminalRunProgress(terminal, config) : undefined,
    });
    if (!options.json) {
      terminal.print(runBlock(folder, summary, terminal.outputStyle));
      return;
    }
    const final = summary.metrics.final;
    terminal.print(
      JSON.stringify({
        run_id: summary.run_id,
        dir: folder.dir,
        status: summary.status,
        val_accuracy: final?.val_accuracy,
        test_accuracy: final?.test_accuracy,
        ...(summary.export ? { export: summary.export } : {}),
      }),
    );
  } finally {
    interrupt.release();
  }
}
