import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { setTimeout as delay } from 'node:timers/promises';
import { minimalEnv, spawnChild, stopGroup } from '../core/child.ts';
import { projectRoot, venvPython } from '../core/project.ts';

/**
 * A real MLflow tracking server from the project's .venv: SQLite backend, local artifact
 * store served through the server's artifact proxy, bound to 127.0.0.1. Used by `tlx ui`
 * and by the tests. `mlflow server` runs through python/tlx_mlflow_server.py, which serves
 * from the launcher's own process instead of a second one (each start ~40% shorter). It runs
 * in its own process group, and stop() ends the whole group, so nothing keeps the port or the
 * database afterwards.
 */

export interface MlflowServer {
  url: string;
  port: number;
  /** Process group id (the server's pid). */
  pid?: number;
  stop(): Promise<void>;
}

export interface ServerOptions {
  /** Folder for mlflow.db and artifacts/. */
  dataDir: string;
  port?: number;
  startTimeoutMs?: number;
  onOutput?: (line: string) => void;
  /** Extra arguments of `mlflow server` (e.g. --app-name basic-auth). */
  extraArgs?: string[];
  env?: Record<string, string>;
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

async function healthy(url: string): Promise<boolean> {
  try {
    const response = await fetch(`${url}/health`, { signal: AbortSignal.timeout(1000) });
    return response.ok;
  } catch {
    return false;
  }
}

export function mlflowExecutable(): string {
  return path.join(projectRoot, '.venv', 'bin', 'mlflow');
}

/** MLflow's own `server` command line (run in one process by python/tlx_mlflow_server.py) for this data folder and port. */
function serverArgs(options: ServerOptions, port: number): string[] {
  return [
    path.join(projectRoot, 'python', 'tlx_mlflow_server.py'),
    ...['--host', '127.0.0.1', '--port', String(port), '--workers', '1'],
    ...['--backend-store-uri', `sqlite:///${path.resolve(options.dataDir, 'mlflow.db')}`],
    ...['--artifacts-destination', path.resolve(options.dataDir, 'artifacts')],
    ...(options.extraArgs ?? []),
  ];
}

/** Keeps the server's last 50 output lines (for the error when it does not start) and passes each on. */
function tailOf(child: ReturnType<typeof spawnChild>, onOutput?: (line: string) => void): string[] {
  const output: string[] = [];
  for (const stream of [child.stdout!, child.stderr!]) {
    readline.createInterface({ input: stream }).on('line', (line) => {
      output.push(line);
      if (output.length > 50) output.shift();
      onOutput?.(line);
    });
  }
  return output;
}

export async function startMlflowServer(options: ServerOptions): Promise<MlflowServer> {
  if (!fs.existsSync(mlflowExecutable()))
    throw new Error(`MLflow is not installed in .venv (${mlflowExecutable()}); run \`npm install\``);
  fs.mkdirSync(path.join(options.dataDir, 'artifacts'), { recursive: true });
  const port = options.port ?? (await freePort());
  const url = `http://127.0.0.1:${port}`;
  if (await healthy(url)) throw new Error(`port ${port} is already in use by another server`);
  const child = spawnChild(venvPython(), serverArgs(options, port), {
    // Job execution (MLflow's GenAI jobs) starts five more Python processes; tlx uses none of it.
    env: minimalEnv({
      MLFLOW_DISABLE_TELEMETRY: 'true',
      DO_NOT_TRACK: 'true',
      MLFLOW_SERVER_ENABLE_JOB_EXECUTION: 'false',
      ...options.env,
    }),
    buffer: false,
    cwd: options.dataDir,
    tiedToParent: true,
  });
  const output = tailOf(child, options.onOutput);
  let exited = false;
  void child.then(() => {
    exited = true;
  });
  const deadline = Date.now() + (options.startTimeoutMs ?? 90_000);
  while (!(await healthy(url))) {
    if (exited || Date.now() > deadline) {
      await stopGroup(child, 1000);
      throw new Error(`mlflow server did not start on ${url}:\n${output.slice(-15).join('\n')}`);
    }
    await delay(250);
  }
  return {
    url,
    port,
    pid: child.pid,
    async stop() {
      if (exited) return;
      await stopGroup(child);
    },
  };
}
