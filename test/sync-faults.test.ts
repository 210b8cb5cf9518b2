import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runTlx } from './helpers/cli.ts';
import { writeClassFolders } from './helpers/images.ts';
import { hangingServer, readRunWithMlflow, ruleProxy, startMlflowServer, type MlflowServer } from './helpers/mlflow.ts';
import { faultTestBody, runDirOf, writeExperiment } from './helpers/runs.ts';
import { tempDir } from './helpers/tmp.ts';

/**
 * MLflow under faults a real server cannot be made to produce on demand, injected by a proxy
 * in front of a real one (or a server that never answers): refusals for good, a black hole,
 * repeated syncs. The run always finishes; what was refused is recorded and said.
 */

const work = tempDir('tlx-sync-faults-');
const runsDir = path.join(work, 'runs');
let server: MlflowServer;

function experiment(name: string): string {
  return writeExperiment(work, name, faultTestBody);
}

before(async () => {
  await writeClassFolders(path.join(work, 'data'), ['ants', 'bees'], 16, { size: 32 });
  server = await startMlflowServer({ dataDir: path.join(work, 'mlflow') });
});

after(() => server?.stop());

describe('MLflow sync', () => {
  test("a proxy's 413 on one artifact and a 400 on one param: the rest arrives, the run is FINISHED in MLflow, and both refusals are recorded and printed", async () => {
    const proxy = await ruleProxy(server.url, (request) => {
      if (request.method === 'PUT' && request.url.endsWith('/artifacts/config.yaml'))
        return { status: 413, body: '<html>Request Entity Too Large</html>' };
      if (request.url.includes('log-batch') && request.body.includes('"key":"seed"'))
        return {
          status: 400,
          body: '{"error_code":"INVALID_PARAMETER_VALUE","message":"Changing param values is not allowed"}',
        };
      return undefined;
    });
    try {
      const result = await runTlx(['--runs-dir', runsDir, 'run', experiment('refused')], {
        cwd: work,
        env: { MLFLOW_TRACKING_URI: proxy.url },
      });
      assert.equal(result.exitCode, 0, result.stderr.slice(-2000));
      const dir = runDirOf(result.stdout);
      const state = JSON.parse(fs.readFileSync(path.join(dir, 'mlflow.json'), 'utf8')) as {
        servers: Record<string, { refused: { kind: string; item: string; status: number }[]; run_id: string }>;
      };
      const refused = state.servers[proxy.url].refused.map((r) => [r.kind, r.item.split('@')[0], r.status]);
      assert.deepEqual(refused.sort(), [
        ['artifact', 'config.yaml', 413],
        ['param', 'seed=9', 400],
      ]);
      const remote = await readRunWithMlflow(server.url, state.servers[proxy.url].run_id, ['val_loss']);
      assert.equal(remote.status, 'FINISHED');
      assert.equal(remote.params['train.fine_tune.fine_tune_at'], '120', 'the other params arrived');
      assert.equal(remote.params.seed, undefined);
      assert.ok(remote.artifacts.includes('metrics.jsonl') && !remote.artifacts.includes('config.yaml'));
      assert.equal(remote.histories.val_loss.length, 6);
      const sync = await runTlx(['--runs-dir', runsDir, 'sync', dir], {
        cwd: work,
        env: { MLFLOW_TRACKING_URI: proxy.url },
      });
      assert.equal(sync.exitCode, 0, sync.stderr);
      const line = JSON.parse(sync.stdout.trim()) as { refused: { kind: string }[] };
      assert.deepEqual(
        line.refused.map((r) => r.kind).sort(),
        ['artifact', 'param'],
        'tlx sync says what could not be sent',
      );
    } finally {
      await proxy.stop();
    }
  });

  test('a server that never answers: at most one probe per epoch, and the run finishes not synced', async () => {
    const hanging = await hangingServer();
    try {
      // The final sync waits MLflow's request timeout per attempt (30 s by default): 2 s here, the property is the count.
      const result = await runTlx(['--runs-dir', runsDir, 'run', experiment('blackhole')], {
        cwd: work,
        env: { MLFLOW_TRACKING_URI: hanging.url, MLFLOW_HTTP_REQUEST_TIMEOUT: '2' },
        timeout: 300_000,
      });
      assert.equal(result.exitCode, 0, result.stderr.slice(-2000));
      const dir = runDirOf(result.stdout);
      // 5 epochs + epoch 0 + the data: at most one bounded probe each, plus the final attempt with its retries.
      assert.ok(hanging.connections() <= 12, `${hanging.connections()} connections`);
      assert.match(fs.readFileSync(path.join(dir, 'mlflow.json'), 'utf8'), /"synced": false/);
    } finally {
      await hanging.stop();
    }
  });

  test('final metrics go to a server once, however often the run is synced', async () => {
    const proxy = await ruleProxy(server.url, () => undefined);
    try {
      const result = await runTlx(['--runs-dir', runsDir, 'run', experiment('once')], {
        cwd: work,
        env: { MLFLOW_TRACKING_URI: proxy.url },
      });
      assert.equal(result.exitCode, 0, result.stderr.slice(-2000));
      for (let i = 0; i < 2; i++)
        assert.equal(
          (
            await runTlx(['--runs-dir', runsDir, 'sync', runDirOf(result.stdout)], {
              cwd: work,
              env: { MLFLOW_TRACKING_URI: proxy.url },
            })
          ).exitCode,
          0,
        );
      const finals = proxy.requests.filter(
        (r) => r.url.includes('log-batch') && r.body.includes('"key":"final_val_accuracy"'),
      );
      assert.equal(finals.length, 1, `final metrics were sent ${finals.length} times`);
      assert.doesNotMatch(
        fs.readFileSync(path.join(runDirOf(result.stdout), 'mlflow.json'), 'utf8'),
        /"pending": \{\s*"/,
      );
    } finally {
      await proxy.stop();
    }
  });
});
