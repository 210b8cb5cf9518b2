/**
 * Errors a user can act on: a bad experiment file, a bad flag, bad data. The CLI prints
 * their message (no stack trace) and exits with code 2. Anything else is a bug or an
 * environment failure and exits with 1.
 */
export class UserError extends Error {
  override name = 'UserError';
  readonly exitCode = 2;
}

/** Where in an input a problem is: a file position, or a command-line flag. */
export interface Location {
  file: string;
  line?: number;
  column?: number;
}

export interface Problem {
  location: Location;
  /** Dotted key path, e.g. train.fine_tune.fine_tune_at ('' for the whole document). */
  keyPath: string;
  message: string;
}

function formatLocation({ file, line, column }: Location): string {
  if (line === undefined) return file;
  return column === undefined ? `${file}:${line}` : `${file}:${line}:${column}`;
}

function formatProblem(problem: Problem): string {
  const where = formatLocation(problem.location);
  return problem.keyPath ? `${where}: ${problem.keyPath}: ${problem.message}` : `${where}: ${problem.message}`;
}

/** All the problems of one input at once, one line each. */
export class ConfigError extends UserError {
  override name = 'ConfigError';
  constructor(readonly problems: Problem[]) {
    super(problems.map(formatProblem).join('\n'));
  }
}

export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** A run or sweep stopped on request (Ctrl-C, SIGTERM, SIGHUP): resumable, exit code 130. */
export class InterruptedError extends Error {
  override name = 'InterruptedError';
}

/** At most `max` names of a list for a message ("a, b, c and 117 more"): a folder's listing never floods a log. */
export function someOf(names: readonly string[], max = 5, separator = ', '): string {
  if (names.length <= max) return names.join(separator);
  return `${names.slice(0, max).join(separator)} and ${names.length - max} more`;
}
