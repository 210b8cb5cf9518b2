import { Command, CommanderError, Option } from 'commander';
import { ConfigError, UserError, errorMessage } from './errors.ts';
import { createLogger, type LogOptions, type Logger } from './log.ts';
import { version } from './version.ts';

/** Exit codes (DESIGN.md): 0 success, 2 invalid config or input, 1 anything else. */
export const exitCodes = { ok: 0, failure: 1, invalidInput: 2, interrupted: 130 } as const;

interface GlobalOptions extends LogOptions {
  runsDir: string;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

const setOption = () => new Option('--set <key.path=value>', 'override a config key (repeatable), e.g. --set train.fine_tune.epochs=5').argParser(collect).default([]);

function globals(command: Command): GlobalOptions {
  return command.optsWithGlobals<GlobalOptions>();
}

function logger(command: Command): Logger {
  return createLogger(globals(command));
}

function print(line: string): void {
  process.stdout.write(`${line}\n`);
}

export function buildProgram(): Command {
  const program = new Command('tlx')
    .description('Transfer learning for image classifiers, declared in one YAML file and shipped to a phone as TFLite.')
    .version(version)
    .option('--json', 'logs as JSON lines (the default when stderr is not a terminal)')
    .option('-q, --quiet', 'only warnings and errors')
    .option('-v, --verbose', 'debug logs and stack traces')
    .option('--runs-dir <dir>', 'where run folders are written', process.env.TLX_RUNS_DIR ?? 'runs')
    .showSuggestionAfterError(true)
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();

  program
    .command('validate')
    .description('check experiment files against the schema; prints ok or every problem with file:line:col')
    .argument('<files...>', 'experiment YAML files')
    .addOption(setOption())
    .action(async (files: string[], options: { set: string[] }) => {
      const { loadExperiment } = await import('./config/load.ts');
      const failures: ConfigError[] = [];
      for (const file of files) {
        try {
          loadExperiment(file, { overrides: options.set });
          print(`${file}: ok`);
        } catch (error) {
          if (!(error instanceof ConfigError)) throw error;
          failures.push(error);
          process.stderr.write(`${error.message}\n`);
        }
      }
      if (failures.length > 0) throw new UserError(`${failures.length} of ${files.length} file(s) invalid`);
    });

  program
    .command('data')
    .description('fetch, extract, scan and split the dataset exactly as `run` would, write the data pictures; no training')
    .argument('<experiment>', 'experiment YAML file')
    .addOption(setOption())
    .option('--out <dir>', 'folder for the pictures (default: a new folder under the runs dir)')
    .option('--cache-dir <dir>', 'download/extraction cache (default $TLX_CACHE_DIR or ~/.cache/tlx)')
    .action(async (file: string, options: { set: string[]; out?: string; cacheDir?: string }, command: Command) => {
      const { dataCommand } = await import('./commands/data.ts');
      await dataCommand({ file, overrides: options.set, out: options.out, cacheDir: options.cacheDir, runsDir: globals(command).runsDir, json: Boolean(globals(command).json), log: logger(command) });
    });

  program
    .command('run')
    .description('train an experiment (feature extraction, then fine-tuning), record it, export TFLite')
    .argument('[experiment]', 'experiment YAML file')
    .addOption(setOption())
    .option('--resume <run-dir>', 'continue a stopped or killed run from its last completed epoch')
    .option('--cache-dir <dir>', 'download/extraction cache (default $TLX_CACHE_DIR or ~/.cache/tlx)')
    .action(async (file: string | undefined, options: { set: string[]; resume?: string; cacheDir?: string }, command: Command) => {
      if (!file && !options.resume) throw new UserError('run: expected an experiment file, or --resume runs/<run-id>');
      const { runCommand } = await import('./commands/run.ts');
      await runCommand({ file, overrides: options.set, resume: options.resume, cacheDir: options.cacheDir, runsDir: globals(command).runsDir, log: logger(command) });
    });

  program
    .command('convert')
    .description('export a finished run to TFLite again, without retraining')
    .argument('<run-dir>', 'run folder, e.g. runs/<run-id>')
    .addOption(new Option('--quantization <mode>', 'TFLite quantization').choices(['none', 'dynamic', 'float16', 'int8']))
    .option('--cache-dir <dir>', 'download/extraction cache (default $TLX_CACHE_DIR or ~/.cache/tlx)')
    .action(async (runDir: string, options: { quantization?: string; cacheDir?: string }, command: Command) => {
      const { convertCommand } = await import('./commands/convert.ts');
      await convertCommand({ runDir, quantization: options.quantization, cacheDir: options.cacheDir, log: logger(command) });
    });

  program
    .command('sweep')
    .description('run an experiment over a grid of values and name the best trial')
    .argument('[experiment]', 'experiment YAML file with a sweep: block, or use --grid')
    .addOption(setOption())
    .option('--grid <key=v1,v2,...>', 'a swept key and its values (repeatable)', collect, [])
    .option('--resume <sweep-id>', 'continue a sweep: finished trials are skipped')
    .option('--max-trials <n>', 'run at most n trials', (v) => Number.parseInt(v, 10))
    .option('--parallel <n>', 'trials run at once (TensorFlow already uses every core)', (v) => Number.parseInt(v, 10), 1)
    .option('--cache-dir <dir>', 'download/extraction cache')
    .action(async (file: string | undefined, options: { set: string[]; grid: string[]; resume?: string; maxTrials?: number; parallel: number; cacheDir?: string }, command: Command) => {
      const { sweepCommand } = await import('./commands/sweep.ts');
      await sweepCommand({ file, ...options, runsDir: globals(command).runsDir, log: logger(command) });
    });

  program
    .command('predict')
    .description('classify images with an exported model.tflite (or a run folder)')
    .argument('<model>', 'model.tflite or a run folder')
    .argument('<images...>', 'image files or folders')
    .option('-k, --top-k <k>', 'labels shown per image', (v) => Number.parseInt(v, 10), 3)
    .addOption(new Option('--resize <mode>', 'bilinear matches training; nearest reproduces Android Bitmap.createScaledBitmap(..., false)').choices(['bilinear', 'nearest']).default('bilinear'))
    .option('--out <file>', 'write the table for a folder as .csv or .json')
    .action(async (model: string, images: string[], options: { topK: number; resize: 'bilinear' | 'nearest'; out?: string }, command: Command) => {
      const { predictCommand } = await import('./commands/predict.ts');
      await predictCommand({ model, images, ...options, json: Boolean(globals(command).json), log: logger(command) });
    });

  program
    .command('ui')
    .description('start a local MLflow dashboard over every local run (127.0.0.1)')
    .option('--port <n>', 'port', (v) => Number.parseInt(v, 10), 5000)
    .action(async (options: { port: number }, command: Command) => {
      const { uiCommand } = await import('./commands/ui.ts');
      await uiCommand({ port: options.port, runsDir: globals(command).runsDir, log: logger(command) });
    });

  program
    .command('sync')
    .description('push local runs to $MLFLOW_TRACKING_URI, idempotently')
    .argument('[run-dirs...]', 'run folders (default: every run under the runs dir)')
    .option('--tracking-uri <url>', 'MLflow server (default $MLFLOW_TRACKING_URI)')
    .action(async (runDirs: string[], options: { trackingUri?: string }, command: Command) => {
      const { syncCommand } = await import('./commands/sync.ts');
      await syncCommand({ runDirs, trackingUri: options.trackingUri, runsDir: globals(command).runsDir, log: logger(command) });
    });

  return program;
}

/** Runs the CLI; returns the exit code instead of exiting, so tests can call it. */
export async function main(argv: readonly string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync([...argv], { from: 'user' });
    // A command may report partial failure (e.g. a sweep with failed trials) through exitCode.
    return typeof process.exitCode === 'number' && process.exitCode !== 0 ? process.exitCode : exitCodes.ok;
  } catch (error) {
    if (error instanceof CommanderError) {
      const benign = ['commander.helpDisplayed', 'commander.help', 'commander.version', 'commander.executeSubCommandAsync'];
      return benign.includes(error.code) ? exitCodes.ok : exitCodes.invalidInput;
    }
    const verbose = process.argv.includes('--verbose') || process.argv.includes('-v') || argv.includes('--verbose');
    if (error instanceof Error && error.name === 'InterruptedRun') {
      process.stderr.write(`tlx: ${error.message}\n`);
      return exitCodes.interrupted;
    }
    if (error instanceof UserError) {
      process.stderr.write(`tlx: ${error.message}\n`);
      return exitCodes.invalidInput;
    }
    process.stderr.write(`tlx: ${verbose && error instanceof Error && error.stack ? error.stack : errorMessage(error)}\n`);
    if (!verbose) process.stderr.write('(run with --verbose for the stack trace)\n');
    return exitCodes.failure;
  }
}
