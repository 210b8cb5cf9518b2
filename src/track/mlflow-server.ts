import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { projectRoot } from '../version.ts';

/**
 * A real MLflow tracking server from the project's .venv: SQLite backend, local artifact
 * store served through the server's artifact proxy, bound to 127.0.0.1. Used by `tlx ui`
 * and by the tests.
 */

export interface MlflowServer {
  url: string;
  port: number;
  stop(): Promise<void>;
}

export interface ServerOptions {
  /** Folder for mlflow.db and artifacts/. */
  dataDir: string;
  port?: number;
  startTimeoutMs?: number;
  onOutput?: (line: string) => void;
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

export async function startMlflowServer(options: ServerOptions): Promise<MlflowServer> {
  const executable = mlflowExecutable();
  if (!fs.existsSync(executable)) throw new Error(`MLflow is not installed in .venv (${executable}); run \`npm install\``);
  fs.mkdirSync(path.join(options.dataDir, 'artifacts'), { recursive: true });
  const port = options.port ?? (await freePort());
  const url = `http://127.0.0.1:${port}`;
  if (await healthy(url)) throw new Error(`port ${port} is already in use by another server`);
  const child: ResultPromise = execa(
    executable,
    ['server', '--host', '127.0.0.1', '--port', String(port), '--workers', '1', '--backend-store-uri', `sqlite:///${path.resolve(options.dataDir, 'mlflow.db')}`, '--artifacts-destination', path.resolve(options.dataDir, 'artifacts')],
    { reject: false, stdin: 'ignore', env: { MLFLOW_DISABLE_TELEMETRY: 'true', DO_NOT_TRACK: 'true' }, cleanup: true, detached: false },
  );
  const output: string[] = [];
  const collect = (chunk: Buffer) => {
    for (const line of chunk.toString().split('\n').filter(Boolean)) {
      output.push(line);
      if (output.length > 50) output.shift();
      options.onOutput?.(line);
    }
  };
  child.stdout?.on('data', collect);
  child.stderr?.on('data', collect);
  let exited = false;
  void child.then(() => {
    exited = true;
  });
  const deadline = Date.now() + (options.startTimeoutMs ?? 90_000);
  while (!(await healthy(url))) {
    if (exited || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`mlflow server did not start on ${url}:\n${output.slice(-15).join('\n')}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return {
    url,
    port,
    async stop() {
      if (exited) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await child;
      clearTimeout(timer);
    },
  };
}
