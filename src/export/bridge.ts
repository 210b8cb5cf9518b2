import fs from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { projectRoot } from '../version.ts';

/**
 * The bridge to python/: one script, argv only (no shell), a JSON request file in and a
 * JSON report file out, a timeout, and stderr kept for the run log and for errors.
 */

export class PythonBridgeError extends Error {
  override name = 'PythonBridgeError';
  constructor(
    message: string,
    readonly command: string,
    readonly exitCode: number | undefined,
    readonly stderrTail: string,
  ) {
    super(message);
  }
}

export function venvPython(): string {
  return process.env.TLX_PYTHON ?? path.join(projectRoot, '.venv', 'bin', 'python');
}

function tail(text: string, lines = 20): string {
  return text.split('\n').filter(Boolean).slice(-lines).join('\n');
}

export interface PythonCall {
  script: string;
  request: unknown;
  /** Folder for the request and report files. */
  workDir: string;
  timeoutMs?: number;
  /** Receives stderr lines as they come (the run log). */
  onStderr?: (line: string) => void;
}

export async function callPython<Report>(call: PythonCall): Promise<{ report: Report; stderr: string }> {
  const python = venvPython();
  if (!fs.existsSync(python)) {
    throw new PythonBridgeError(`the Python environment is missing (${python}); run \`npm install\` (scripts/setup.mjs creates .venv)`, python, undefined, '');
  }
  fs.mkdirSync(call.workDir, { recursive: true });
  const requestFile = path.join(call.workDir, `${path.basename(call.script, '.py')}-request.json`);
  const reportFile = path.join(call.workDir, `${path.basename(call.script, '.py')}-report.json`);
  fs.rmSync(reportFile, { force: true });
  fs.writeFileSync(requestFile, JSON.stringify({ ...(call.request as object), report: reportFile }, null, 2));
  const script = path.join(projectRoot, 'python', call.script);
  const subprocess = execa(python, [script, requestFile], {
    reject: false,
    timeout: call.timeoutMs ?? 30 * 60_000,
    env: { TF_CPP_MIN_LOG_LEVEL: '2', PYTHONUNBUFFERED: '1' },
    stdin: 'ignore',
    all: false,
  });
  subprocess.stderr?.on('data', (chunk: Buffer) => {
    for (const line of chunk.toString('utf8').split('\n')) if (line.trim()) call.onStderr?.(line);
  });
  const result = await subprocess;
  const command = `${python} ${script} ${requestFile}`;
  if (result.timedOut) throw new PythonBridgeError(`${call.script} timed out after ${call.timeoutMs ?? 1_800_000} ms`, command, undefined, tail(String(result.stderr)));
  if (result.exitCode !== 0 || !fs.existsSync(reportFile)) {
    throw new PythonBridgeError(`${call.script} failed (exit code ${result.exitCode}):\n${tail(String(result.stderr))}`, command, result.exitCode, tail(String(result.stderr)));
  }
  return { report: JSON.parse(fs.readFileSync(reportFile, 'utf8')) as Report, stderr: String(result.stderr) };
}
