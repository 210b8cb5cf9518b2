import { loadExperiment } from '../config/load.ts';
import type { Logger } from '../log.ts';
import { executeRun } from '../run.ts';

export interface RunCommandOptions {
  file?: string;
  overrides: string[];
  resume?: string;
  cacheDir?: string;
  runsDir: string;
  log: Logger;
}

/** Ctrl-C once: finish the current batch, save, mark the run KILLED. Twice: exit now. */
function interruptFlag(log: Logger): { stop: () => boolean; release: () => void } {
  let requested = false;
  const onSignal = () => {
    if (requested) process.exit(130);
    requested = true;
    log.warn('interrupt: stopping after the current batch (Ctrl-C again to quit at once)');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    stop: () => requested,
    release: () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
    },
  };
}

export async function runCommand(options: RunCommandOptions): Promise<void> {
  const experiment = options.file ? loadExperiment(options.file, { overrides: options.overrides }) : undefined;
  const interrupt = interruptFlag(options.log);
  try {
    const { folder, summary } = await executeRun(experiment, { runsDir: options.runsDir, cacheDir: options.cacheDir, log: options.log, resume: options.resume, shouldStop: interrupt.stop });
    const final = summary.metrics.final;
    process.stdout.write(
      `${JSON.stringify({ run_id: summary.run_id, dir: folder.dir, status: summary.status, val_accuracy: final?.val_accuracy, test_accuracy: final?.test_accuracy, ...(summary.export ? { export: summary.export } : {}) })}\n`,
    );
  } finally {
    interrupt.release();
  }
}
