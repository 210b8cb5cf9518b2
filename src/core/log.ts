import fs from 'node:fs';
import { pino, type Logger, type LoggerOptions } from 'pino';
import { redactText } from './redact.ts';

export type { Logger };

export interface LogOptions {
  json?: boolean;
  quiet?: boolean;
  verbose?: boolean;
}

/** Every string in a log record with its URLs' secrets removed (user-info, query strings). */
function redactDeep(value: unknown, depth = 0): unknown {
  if (typeof value === 'string') return redactText(value);
  if (depth > 6 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((item) => redactDeep(item, depth + 1));
  return Object.fromEntries(
    Object.entries(value as Record<string, unknown>).map(([key, item]) => [key, redactDeep(item, depth + 1)]),
  );
}

const redacting: Pick<LoggerOptions, 'hooks' | 'formatters'> = {
  hooks: {
    logMethod(args, method) {
      method.apply(
        this,
        args.map((arg) => (typeof arg === 'string' ? redactText(arg) : arg)) as Parameters<typeof method>,
      );
    },
  },
  formatters: { log: (record) => redactDeep(record) as Record<string, unknown> },
};

const levelNames: Record<number, string> = {
  10: 'trace',
  20: 'debug',
  30: 'info',
  40: 'warn',
  50: 'error',
  60: 'fatal',
};

/** A number for a person: 4 significant digits at most, integers as they are. */
function humanNumber(value: number): string {
  if (!Number.isFinite(value) || Number.isInteger(value)) return String(value);
  return String(Number(value.toPrecision(4)));
}

function humanValue(value: unknown): string {
  if (typeof value === 'number') return humanNumber(value);
  if (typeof value === 'string') return /\s/.test(value) ? JSON.stringify(value) : value;
  return JSON.stringify(value, (_key, v: unknown) => (typeof v === 'number' ? Number(humanNumber(v)) : v));
}

export interface HumanStyle {
  dim(text: string): string;
  yellow(text: string): string;
  red(text: string): string;
}

const plainStyle: HumanStyle = { dim: (t) => t, yellow: (t) => t, red: (t) => t };

/** One log record as one line for a person: time, the message, and (verbose) the fields. */
function humanLine(record: Record<string, unknown>, verbose: boolean, style: HumanStyle): string {
  const { level, time, msg, ...fields } = record;
  const date = new Date(typeof time === 'number' ? time : Date.now());
  const clock = style.dim(date.toTimeString().slice(0, 8));
  const name = levelNames[level as number] ?? 'info';
  const tag =
    name === 'warn'
      ? style.yellow('warning: ')
      : name === 'error' || name === 'fatal'
        ? style.red('error: ')
        : name === 'debug'
          ? style.dim('debug: ')
          : '';
  const extra =
    verbose && Object.keys(fields).length > 0
      ? ` ${style.dim(
          Object.entries(fields)
            .map(([key, value]) => `${key}=${humanValue(value)}`)
            .join(' '),
        )}`
      : '';
  return `${clock} ${tag}${typeof msg === 'string' ? msg : ''}${extra}`;
}

interface LogTarget {
  /** Where human lines go (a terminal, around its progress bars); undefined: JSON lines to stderr. */
  human?: (line: string) => void;
  style: HumanStyle;
  verbose: boolean;
  /** A run's own log file (JSON lines, every field), while a run is open. */
  file?: string;
}

const targets = new WeakMap<Logger, LogTarget>();

/**
 * Logs go to stderr (stdout carries command results): one line per event for a person on
 * a terminal (the message only; --verbose adds the fields and debug lines), JSON lines with
 * --json or when stderr is not a terminal. A run's folder also gets its JSON log (log.jsonl).
 * No log line carries a secret of a URL, whoever wrote it.
 */
export function createLogger(
  options: LogOptions & { human?: (line: string) => void; style?: HumanStyle } = {},
): Logger {
  const level = options.quiet ? 'warn' : options.verbose ? 'debug' : 'info';
  const target: LogTarget = {
    human: options.json ? undefined : options.human,
    style: options.style ?? plainStyle,
    verbose: Boolean(options.verbose),
  };
  const sink = {
    write(chunk: string) {
      if (target.file) {
        try {
          fs.appendFileSync(target.file, chunk);
        } catch {
          // the run's log is a copy; stderr still has the line
        }
      }
      if (!target.human) {
        fs.writeSync(2, chunk);
        return;
      }
      for (const line of chunk.split('\n')) {
        if (!line) continue;
        try {
          target.human(humanLine(JSON.parse(line) as Record<string, unknown>, target.verbose, target.style));
        } catch {
          target.human(line);
        }
      }
    },
  };
  const logger = pino({ level, base: undefined, ...redacting }, sink);
  targets.set(logger, target);
  return logger;
}

/** While a run is open, its log lines are also appended to its folder's log file. */
export function setLogFile(logger: Logger, file: string | undefined): void {
  const target = targets.get(logger);
  if (target) target.file = file;
}

/** A logger that drops everything: for library use and tests. */
export const silentLogger: Logger = pino({ level: 'silent' });
