import fs from 'node:fs';
import path from 'node:path';
import { execa, type ResultPromise } from 'execa';
import { freePort } from '../../src/track/mlflow-server.ts';

export interface RedisServer {
  /** redis://:<password>@127.0.0.1:<port> */
  url: string;
  port: number;
  password: string;
  stop(): Promise<void>;
  /** Stops and starts the same server again (same port, same data folder: AOF replays the jobs). */
  restart(): Promise<void>;
}

async function ready(port: number, password: string, child: ResultPromise): Promise<void> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const ping = await execa('redis-cli', ['-p', String(port), 'ping'], {
      reject: false,
      env: { REDISCLI_AUTH: password },
    });
    if (String(ping.stdout).trim() === 'PONG') return;
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`redis-server did not start on port ${port}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/**
 * A real Debian redis-server on a free loopback port, set up as the README says a queue's
 * Redis should be: a password (requirepass), append-only file on (jobs survive a restart),
 * maxmemory-policy noeviction (Redis never drops a job to make room).
 */
export async function startRedis(dataDir: string): Promise<RedisServer> {
  fs.mkdirSync(dataDir, { recursive: true });
  const port = await freePort();
  const password = `test-${Math.random().toString(36).slice(2)}`;
  // The password goes in a config file, not on the command line (where `ps` would show it).
  const config = path.join(dataDir, 'redis.conf');
  fs.writeFileSync(config, `requirepass ${password}\n`, { mode: 0o600 });
  const args = [
    config,
    '--port',
    String(port),
    '--bind',
    '127.0.0.1',
    '--dir',
    path.resolve(dataDir),
    '--appendonly',
    'yes',
    '--appendfsync',
    'always',
    '--maxmemory-policy',
    'noeviction',
    '--save',
    '',
    '--protected-mode',
    'yes',
  ];
  let child: ResultPromise = execa('redis-server', args, { reject: false, stdio: 'ignore' });
  await ready(port, password, child);
  const stop = async () => {
    child.kill('SIGTERM');
    await child;
  };
  return {
    url: `redis://:${password}@127.0.0.1:${port}`,
    port,
    password,
    stop,
    async restart() {
      await stop();
      child = execa('redis-server', args, { reject: false, stdio: 'ignore' });
      await ready(port, password, child);
    },
  };
}
