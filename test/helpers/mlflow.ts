import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { sha256Hex } from '../../src/core/hash.ts';
import { projectRoot } from '../../src/core/project.ts';
import {
  mlflowExecutable,
  startMlflowServer as startServer,
  type MlflowServer,
  type ServerOptions,
} from '../../src/track/mlflow-server.ts';
import assert from 'node:assert/strict';
import type { EpochRecord } from '../../src/train/engine.ts';
import { python } from './python.ts';
import { mlflowState, readMetrics } from './runs.ts';

export type { MlflowServer };

/**
 * An empty MLflow database with every migration applied, made once per MLflow schema (keyed
 * by the migrations MLflow ships) and copied for each test server: a server on a fresh file
 * spends seconds migrating it, and the suite starts a dozen servers.
 */
async function migratedDatabase(): Promise<string> {
  const lib = path.join(projectRoot, '.venv', 'lib');
  const sitePackages = path.join(
    lib,
    fs.readdirSync(lib).find((name) => name.startsWith('python'))!,
    'site-packages',
  );
  const migrations = fs.readdirSync(path.join(sitePackages, 'mlflow', 'store', 'db_migrations', 'versions')).sort();
  const file = path.join(os.tmpdir(), `tlx-test-mlflow-${sha256Hex(migrations.join('\n')).slice(0, 12)}.db`);
  if (fs.existsSync(file)) return file;
  const temp = `${file}.tmp-${process.pid}`;
  await execa(mlflowExecutable(), ['db', 'upgrade', `sqlite:///${temp}`], {
    env: { MLFLOW_DISABLE_TELEMETRY: 'true' },
  });
  fs.renameSync(temp, file);
  return file;
}

/** A real MLflow server for a test, its database started from the migrated copy. */
export async function startMlflowServer(options: ServerOptions): Promise<MlflowServer> {
  const database = path.join(options.dataDir, 'mlflow.db');
  if (!fs.existsSync(database)) {
    fs.mkdirSync(options.dataDir, { recursive: true });
    fs.copyFileSync(await migratedDatabase(), database);
  }
  return startServer(options);
}

export interface RemoteRun {
  status: string;
  name: string;
  params: Record<string, string>;
  tags: Record<string, string>;
  histories: Record<string, { step: number; value: number; timestamp: number }[]>;
  artifacts: string[];
}

/** Reads a run back with MLflow's own Python client (mlflow.tracking.MlflowClient). */
export async function readRunWithMlflow(trackingUri: string, runId: string, keys: string[]): Promise<RemoteRun> {
  const out = await python(
    `import json, sys
from mlflow.tracking import MlflowClient
uri, run_id, keys = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
c = MlflowClient(uri)
r = c.get_run(run_id)
def walk(path=None):
    out = []
    for a in c.list_artifacts(run_id, path):
        out.extend(walk(a.path) if a.is_dir else [a.path])
    return out
print(json.dumps({
  "status": r.info.status, "name": r.info.run_name, "params": r.data.params, "tags": r.data.tags,
  "histories": {k: [{"step": m.step, "value": m.value, "timestamp": m.timestamp} for m in c.get_metric_history(run_id, k)] for k in keys},
  "artifacts": sorted(walk()),
}))`,
    [trackingUri, runId, JSON.stringify(keys)],
  );
  return JSON.parse(out) as RemoteRun;
}

/**
 * A fault a real server cannot be made to produce on demand: a proxy in front of the real
 * MLflow server that answers 500 to the n-th matching request and forwards everything else.
 */
export async function faultyProxy(
  target: string,
  fail: { pathIncludes: string; nth: number },
): Promise<{ url: string; failures: number; stop: () => Promise<void> }> {
  let seen = 0;
  const state = { failures: 0 };
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      if ((req.url ?? '').includes(fail.pathIncludes) && ++seen === fail.nth) {
        state.failures++;
        res
          .writeHead(500, { 'Content-Type': 'application/json' })
          .end('{"error_code":"INTERNAL_ERROR","message":"injected"}');
        return;
      }
      const response = await fetch(`${target}${req.url}`, {
        method: req.method,
        headers: { 'content-type': req.headers['content-type'] ?? 'application/json' },
        body: ['GET', 'HEAD'].includes(req.method ?? 'GET') ? undefined : Buffer.concat(chunks),
      });
      res
        .writeHead(response.status, { 'Content-Type': response.headers.get('content-type') ?? 'application/json' })
        .end(Buffer.from(await response.arrayBuffer()));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    get failures() {
      return state.failures;
    },
    stop: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

export interface ProxiedRequest {
  method: string;
  url: string;
  body: string;
}

/**
 * Faults a real server cannot be made to produce on demand, in front of the real MLflow
 * server: `rule` may answer a request itself (a proxy's 413, a 400 for one param);
 * everything else is forwarded. Every request is recorded.
 */
export async function ruleProxy(
  target: string,
  rule: (request: ProxiedRequest) => { status: number; body: string } | undefined,
): Promise<{ url: string; requests: ProxiedRequest[]; stop: () => Promise<void> }> {
  const requests: ProxiedRequest[] = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const body = Buffer.concat(chunks);
      const request = { method: req.method ?? 'GET', url: req.url ?? '/', body: body.toString('latin1') };
      requests.push(request);
      const answer = rule(request);
      if (answer) {
        res.writeHead(answer.status, { 'Content-Type': 'application/json' }).end(answer.body);
        return;
      }
      const response = await fetch(`${target}${req.url}`, {
        method: req.method,
        headers: { 'content-type': req.headers['content-type'] ?? 'application/json' },
        body: ['GET', 'HEAD'].includes(req.method ?? 'GET') ? undefined : body,
      });
      res
        .writeHead(response.status, { 'Content-Type': response.headers.get('content-type') ?? 'application/json' })
        .end(Buffer.from(await response.arrayBuffer()));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A server that accepts connections and never answers (a dead proxy, a black-holed host): counts connections. */
export async function hangingServer(): Promise<{ url: string; connections: () => number; stop: () => Promise<void> }> {
  let connections = 0;
  const server = http.createServer(() => {
    // never respond
  });
  server.on('connection', () => connections++);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    connections: () => connections,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export const metricKeys = ['loss', 'accuracy', 'val_loss', 'val_accuracy'];

/** Every local metric point is on the server exactly once, with its step and value. */
export async function assertExactlySynced(dir: string, uri: string): Promise<void> {
  const remote = await readRunWithMlflow(uri, mlflowState(dir, uri).run_id, metricKeys);
  const local = readMetrics(dir);
  for (const key of metricKeys) {
    const expected = local
      .filter(
        (r) =>
          typeof r[key as keyof EpochRecord] === 'number' && Number.isFinite(r[key as keyof EpochRecord] as number),
      )
      .map((r) => [r.epoch, r[key as keyof EpochRecord]]);
    const actual = remote.histories[key]
      .map((m) => [m.step, m.value])
      .sort((a, b) => (a[0] as number) - (b[0] as number));
    assert.equal(
      actual.length,
      expected.length,
      `${key}: ${actual.length} points on the server, ${expected.length} local`,
    );
    actual.forEach(([step, value], i) => {
      assert.equal(step, expected[i][0]);
      assert.ok(Math.abs((value as number) - (expected[i][1] as number)) < 1e-9, `${key} at step ${step}`);
    });
  }
  assert.equal(remote.status, 'FINISHED');
}

export interface ModelViews {
  inputs: { name: string; digest: string; source_type: string; source: string; context: string }[];
  models: { model_id: string; name: string; source_run_id: string; status: string; artifacts: string[] }[];
  versions: { version: string; source: string; run_id: string; tags: Record<string, string> }[];
  outputs: string[];
}

/** A run's dataset inputs, the experiment's logged models and a registered model's versions, read with MLflow's client. */
export async function modelViews(uri: string, runId: string, registered: string): Promise<ModelViews> {
  const out = await python(
    `import json, sys
from mlflow.tracking import MlflowClient
c = MlflowClient(sys.argv[1])
run = c.get_run(sys.argv[2])
inputs = [{"name": d.dataset.name, "digest": d.dataset.digest, "source_type": d.dataset.source_type, "source": d.dataset.source, "context": next((t.value for t in d.tags if t.key == "mlflow.data.context"), "")} for d in run.inputs.dataset_inputs]
models = [{"model_id": m.model_id, "name": m.name, "source_run_id": m.source_run_id, "status": str(m.status), "artifacts": sorted(a.path for a in c.list_logged_model_artifacts(m.model_id))} for m in c.search_logged_models(experiment_ids=[run.info.experiment_id]) if m.source_run_id == sys.argv[2]]
try:
    versions = [{"version": v.version, "source": v.source, "run_id": v.run_id, "tags": v.tags} for v in c.search_model_versions(f"name='{sys.argv[3]}'")]
except Exception:
    versions = []
outputs = [o.model_id for o in (run.outputs.model_outputs if run.outputs else [])]
print(json.dumps({"inputs": inputs, "models": models, "versions": versions, "outputs": outputs}))`,
    [uri, runId, registered],
  );
  return JSON.parse(out) as ModelViews;
}
