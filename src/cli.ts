import { Command, CommanderError, Option } from 'commander';
import { ConfigError, InterruptedError, UserError, errorMessage } from './core/errors.ts';
import { createLogger, type LogOptions, type Logger } from './core/log.ts';
import { Terminal } from './ui/terminal.ts';
import { version } from './core/project.ts';
import { redactText } from './core/redact.ts';

/**
 * Exit codes: 0 success; 2 invalid config or input, or a run/sweep already in use (a clear
 * message, no stack trace); 130 stopped by Ctrl-C (resumable); 1 anything else.
 */
export const exitCodes = { ok: 0, failure: 1, invalidInput: 2, interrupted: 130 } as const;

interface GlobalOptions extends LogOptions {
  runsDir: string;
  cacheDir?: string;
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

const resizeOption = () =>
  new Option(
    '--resize <mode>',
    'bilinear matches training; nearest reproduces Android Bitmap.createScaledBitmap(..., false)',
  )
    .choices(['bilinear', 'nearest'])
    .default('bilinear');

const setOption = () =>
  new Option('--set <key.path=value>', 'override a config key (repeatable), e.g. --set train.fine_tune.epochs=5')
    .argParser(collect)
    .default([]);

function globals(command: Command): GlobalOptions {
  return command.optsWithGlobals<GlobalOptions>();
}

/** What every command gets: the logger and the terminal (bars, result blocks), set up from the global flags. */
export interface Session {
  log: Logger;
  terminal: Terminal;
  /** Results as JSON for scripts: --json, or stdout is not a terminal. */
  json: boolean;
  /** --json itself (tlx sweep prints its table to a pipe too, as it always has, and JSON only when asked). */
  jsonFlag: boolean;
  /** Progress bars: on a terminal, unless --quiet. */
  progress: boolean;
}

function session(command: Command): Session {
  const options = globals(command);
  const terminal = new Terminal();
  const human = terminal.interactive && !options.json;
  const log = createLogger({
    ...options,
    human: human ? (line) => terminal.printLine(line) : undefined,
    style: terminal.style,
  });
  return {
    log,
    terminal,
    json: Boolean(options.json) || !terminal.humanOutput,
    jsonFlag: Boolean(options.json),
    progress: terminal.interactive && !options.quiet,
  };
}

function logger(command: Command): Logger {
  return session(command).log;
}

/** The cache and runs folders from the global flags. */
function folders(command: Command): { cacheDir?: string; runsDir: string } {
  const { cacheDir, runsDir } = globals(command);
  return { cacheDir, runsDir };
}

/** The folders and the session: what most commands take. */
function withFolders(command: Command): Session & { cacheDir?: string; runsDir: string } {
  return { ...folders(command), ...session(command) };
}

function print(line: string): void {
  process.stdout.write(`${line}\n`);
}

export function buildProgram(): Command {
  const program = new Command('tlx')
    .description('Transfer learning for image classifiers, declared in one YAML file and shipped to a phone as TFLite.')
    .version(version)
    .option('--json', 'results and logs as JSON (the default when stdout / stderr is not a terminal)')
    .option('-q, --quiet', 'only warnings, errors and the result')
    .option('-v, --verbose', 'log fields, debug lines and stack traces')
    .option('--runs-dir <dir>', 'where run folders are written', process.env.TLX_RUNS_DIR ?? 'runs')
    .option('--cache-dir <dir>', 'download/extraction cache (default $TLX_CACHE_DIR or ~/.cache/tlx)')
    // --runs-dir and --cache-dir are the program's, parsed wherever they appear; each command's help shows them too.
    .configureHelp({ showGlobalOptions: true })
    .showSuggestionAfterError(true)
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();

  addInspectionCommands(program);
  addTrainingCommands(program);
  addSweepCommand(program);
  addWorkerCommands(program);
  addRecordCommands(program);
  return program;
}

/** `tlx validate`: ok or every problem per file; fails when any file is invalid. */
async function validateFiles(files: string[], overrides: string[]): Promise<void> {
  const { loadExperiment } = await import('./config/load.ts');
  const failures: ConfigError[] = [];
  for (const file of files) {
    try {
      loadExperiment(file, { overrides });
      print(`${file}: ok`);
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      failures.push(error);
      process.stderr.write(`${error.message}\n`);
    }
  }
  if (failures.length > 0) throw new UserError(`${failures.length} of ${files.length} file(s) invalid`);
}

/** Commands that read an experiment or a base without training: validate, data, model. */
function addInspectionCommands(program: Command): void {
  program
    .command('validate')
    .description('check experiment files against the schema; prints ok or every problem with file:line:col')
    .argument('<files...>', 'experiment YAML files')
    .addOption(setOption())
    .action((files: string[], options: { set: string[] }) => validateFiles(files, options.set));

  program
    .command('data')
    .description(
      'fetch, extract, scan and split the dataset exactly as `run` would, write the data pictures; no training',
    )
    .argument('<experiment>', 'experiment YAML file')
    .addOption(setOption())
    .option('--out <dir>', 'folder for the pictures (default: a new folder under the runs dir)')
    .action(async (file: string, options: { set: string[]; out?: string }, command: Command) => {
      const { dataCommand } = await import('./commands/data.ts');
      await dataCommand({
        file,
        overrides: options.set,
        out: options.out,
        ...withFolders(command),
      });
    });

  program
    .command('model')
    .description(
      "a base's layers as Keras lists them (index, name, type, output, parameters), blocks marked: to choose fine_tune_at",
    )
    .argument('<base>', 'mobilenet_v2, mobilenet_v3_small, mobilenet_v3_large or efficientnet_b0')
    .option('--alpha <alpha>', 'width multiplier (MobileNets)', Number.parseFloat, 1.0)
    .option('--minimalistic', "MobileNetV3's minimalistic variant", false)
    .option(
      '--size <pixels>',
      'input height and width (output shapes depend on it)',
      (v) => Number.parseInt(v, 10),
      224,
    )
    .action(async (base: string, options: { alpha: number; minimalistic: boolean; size: number }, command: Command) => {
      const { modelCommand } = await import('./commands/model.ts');
      await modelCommand({ base, ...options, ...session(command) });
    });
}

/** Commands that train, export and use a model: run, convert, predict. */
function addTrainingCommands(program: Command): void {
  program
    .command('run')
    .description('train an experiment (feature extraction, then fine-tuning), record it, export TFLite')
    .argument('[experiment]', 'experiment YAML file')
    .addOption(setOption())
    .option('--resume <run-dir>', 'continue a stopped or killed run from its last completed epoch')
    .action(async (file: string | undefined, options: { set: string[]; resume?: string }, command: Command) => {
      if (!file && !options.resume) throw new UserError('run: expected an experiment file, or --resume runs/<run-id>');
      const { runCommand } = await import('./commands/run.ts');
      await runCommand({
        file,
        overrides: options.set,
        resume: options.resume,
        ...withFolders(command),
      });
    });

  program
    .command('convert')
    .description('export a finished run to TFLite again, without retraining')
    .argument('<run-dir>', 'run folder, e.g. runs/<run-id>')
    .option(
      '--quantization <modes>',
      'TFLite quantization: none, dynamic, float16 or int8; several comma-separated (one Python start for all)',
    )
    .action(async (runDir: string, options: { quantization?: string }, command: Command) => {
      const { convertCommand } = await import('./commands/convert.ts');
      await convertCommand({
        runDir,
        quantization: options.quantization,
        cacheDir: globals(command).cacheDir,
        ...session(command),
      });
    });

  program
    .command('predict')
    .description('classify images with an exported model.tflite (or a run folder)')
    .argument('<model>', 'model.tflite or a run folder')
    .argument('<images...>', 'image files or folders')
    .option('-k, --top-k <k>', 'labels shown per image', (v) => Number.parseInt(v, 10), 3)
    .addOption(resizeOption())
    .option('--out <file>', 'write the table for a folder as .csv or .json')
    .action(
      async (
        model: string,
        images: string[],
        options: { topK: number; resize: 'bilinear' | 'nearest'; out?: string },
        command: Command,
      ) => {
        const { predictCommand } = await import('./commands/predict.ts');
        await predictCommand({ model, images, ...options, ...session(command) });
      },
    );
}

interface SweepFlags {
  set: string[];
  grid: string[];
  resume?: string;
  maxTrials?: number;
  parallel: number;
  queue?: string | boolean;
  wait?: boolean;
}

/** `tlx sweep <experiment>`, or `tlx sweep status <sweep-id>`. */
async function sweepAction(
  file: string | undefined,
  sweepId: string | undefined,
  options: SweepFlags,
  command: Command,
): Promise<void> {
  if (file === 'status') {
    if (!sweepId) throw new UserError('sweep status: expected a sweep id');
    const { sweepStatusCommand } = await import('./commands/sweep.ts');
    await sweepStatusCommand({ sweepId, queue: options.queue, ...withFolders(command) });
    return;
  }
  const { sweepCommand } = await import('./commands/sweep.ts');
  await sweepCommand({ file, ...options, ...withFolders(command) });
}

/** Sweeps, locally or on a queue. */
function addSweepCommand(program: Command): void {
  program
    .command('sweep')
    .description(
      'run an experiment over a grid of values and name the best trial; `sweep status <id> --queue URL` shows a queued one',
    )
    .argument('[experiment]', 'experiment YAML file with a sweep: block, or use --grid')
    .argument('[sweep-id]', 'with `status`: the sweep to show')
    .addOption(setOption())
    .option('--grid <key=v1,v2,...>', 'a swept key and its values (repeatable)', collect, [])
    .option('--resume <sweep-id>', 'continue a sweep: finished trials are skipped')
    .option('--max-trials <n>', 'run at most n trials', (v) => Number.parseInt(v, 10))
    .option(
      '--parallel <n>',
      'trials run at once (TensorFlow already uses every core)',
      (v) => Number.parseInt(v, 10),
      1,
    )
    .option(
      '--queue [redis-url]',
      'run the trials on `tlx worker` processes through this Redis (BullMQ); default URL: $TLX_QUEUE_URL',
    )
    .option('--wait', 'with --queue: follow the sweep to its end, then write its results and bring its best model here')
    .action(sweepAction);
}

/** The queue's workers, and the hidden command a worker runs each trial in. */
function addWorkerCommands(program: Command): void {
  program
    .command('worker')
    .description('run queued sweep trials (from `tlx sweep --queue`) until stopped; Ctrl-C finishes the current trial')
    .option(
      '--queue [redis-url]',
      'the Redis the sweeps are queued on, e.g. rediss://:password@host:6379 (default: $TLX_QUEUE_URL)',
    )
    .option('--concurrency <n>', 'trials at once (each in its own process)', (v) => Number.parseInt(v, 10), 1)
    .option(
      '--copy-every <seconds>',
      "save a training trial's copy in the artifact store after its first epoch, then at most this often (0: every epoch); MLflow gets its epochs with each save",
      (v) => Number(v),
      30,
    )
    .action(async (options: { queue?: string | boolean; concurrency: number; copyEvery: number }, command: Command) => {
      const { workerCommand } = await import('./commands/worker.ts');
      await workerCommand({
        ...options,
        ...folders(command),
        log: logger(command),
      });
    });

  program
    .command('__trial', { hidden: true })
    .argument('<request>')
    .argument('<result>')
    .action(async (request: string, result: string, _options: unknown, command: Command) => {
      const { trialCommand } = await import('./commands/run-trial.ts');
      await trialCommand({
        request,
        result,
        ...folders(command),
        log: logger(command),
      });
    });
}

/** Commands over the records: runs, show, sync to MLflow, the MLflow UI. */
function addRecordCommands(program: Command): void {
  program
    .command('runs')
    .description('list the runs under the runs folder, newest first (from the run folders; no server)')
    .option('--status <status>', 'only runs with this status (FINISHED, FAILED, KILLED, RUNNING)')
    .option('--name <text>', 'only runs whose experiment name contains this')
    .option('-n, --limit <n>', 'at most this many', (v) => Number.parseInt(v, 10))
    .action(async (options: { status?: string; name?: string; limit?: number }, command: Command) => {
      const { runsCommand } = await import('./commands/runs.ts');
      await runsCommand({ ...options, runsDir: globals(command).runsDir, ...session(command) });
    });

  program
    .command('show')
    .description("a run's summary: status, metrics, per-class table, export, where its files are")
    .argument('<run>', 'run folder, run id, or the end of one')
    .action(async (run: string, _options: unknown, command: Command) => {
      const { showCommand } = await import('./commands/runs.ts');
      await showCommand({ run, runsDir: globals(command).runsDir, ...session(command) });
    });

  program
    .command('sync')
    .description('push local runs to $MLFLOW_TRACKING_URI, idempotently')
    .argument('[run-dirs...]', 'run folders (default: every run under the runs dir)')
    .option('--tracking-uri <url>', 'MLflow server (default $MLFLOW_TRACKING_URI)')
    .action(async (runDirs: string[], options: { trackingUri?: string }, command: Command) => {
      const { syncCommand } = await import('./commands/sync.ts');
      await syncCommand({
        runDirs,
        trackingUri: options.trackingUri,
        runsDir: globals(command).runsDir,
        log: logger(command),
      });
    });

  program
    .command('ui')
    .description('start a local MLflow dashboard over every local run (127.0.0.1)')
    .option('--port <n>', 'port', (v) => Number.parseInt(v, 10), 5000)
    .option('--experiment <name>', "open this experiment (default: the newest run's)")
    .option('--open', 'open the page in a browser')
    .action(async (options: { port: number; experiment?: string; open?: boolean }, command: Command) => {
      const { uiCommand } = await import('./commands/ui.ts');
      await uiCommand({
        port: options.port,
        experiment: options.experiment,
        open: Boolean(options.open),
        runsDir: globals(command).runsDir,
        log: logger(command),
      });
    });
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
      const benign = [
        'commander.helpDisplayed',
        'commander.help',
        'commander.version',
        'commander.executeSubCommandAsync',
      ];
      return benign.includes(error.code) ? exitCodes.ok : exitCodes.invalidInput;
    }
    const verbose = process.argv.includes('--verbose') || process.argv.includes('-v') || argv.includes('--verbose');
    if (error instanceof InterruptedError) {
      process.stderr.write(`tlx: ${redactText(error.message)}\n`);
      return exitCodes.interrupted;
    }
    if (error instanceof UserError) {
      process.stderr.write(`tlx: ${redactText(error.message)}\n`);
      return exitCodes.invalidInput;
    }
    process.stderr.write(
      `tlx: ${redactText(verbose && error instanceof Error && error.stack ? error.stack : errorMessage(error))}\n`,
    );
    if (!verbose) process.stderr.write('(run with --verbose for the stack trace)\n');
    return exitCodes.failure;
  }
}
