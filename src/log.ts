import { pino, type Logger } from 'pino';
import pretty from 'pino-pretty';

export type { Logger };

export interface LogOptions {
  json?: boolean;
  quiet?: boolean;
  verbose?: boolean;
}

/**
 * Logs go to stderr (stdout carries command results): human-readable on a terminal,
 * JSON lines with --json or when stderr is not a terminal.
 */
export function createLogger(options: LogOptions = {}): Logger {
  const level = options.quiet ? 'warn' : options.verbose ? 'debug' : 'info';
  if (options.json || !process.stderr.isTTY) return pino({ level, base: undefined }, pino.destination({ fd: 2, sync: true }));
  const stream = pretty({ destination: 2, sync: true, colorize: true, ignore: 'pid,hostname', translateTime: 'HH:MM:ss' });
  return pino({ level, base: undefined }, stream);
}

/** A logger that drops everything: for library use and tests. */
export const silentLogger: Logger = pino({ level: 'silent' });
