import fs from 'node:fs';
import path from 'node:path';
import type { EpochRecord } from '../../src/train/engine.ts';

/** The epoch records of a run folder's metrics.jsonl. */
export function readMetrics(dir: string): EpochRecord[] {
  return fs
    .readFileSync(path.join(dir, 'metrics.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => JSON.parse(line) as EpochRecord);
}

/** Waits until a run folder whose name contains `fragment` has recorded `epoch`; returns it. */
export async function waitForEpoch(
  runsDir: string,
  fragment: string,
  epoch: number,
  timeoutMs = 240_000,
): Promise<string | undefined> {
  const deadline = Date.now() + timeoutMs;
  let dir: string | undefined;
  while (Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 200));
    const candidates = fs.existsSync(runsDir) ? fs.readdirSync(runsDir).filter((d) => d.includes(fragment)) : [];
    if (candidates.length === 1) dir = path.join(runsDir, candidates[0]);
    if (dir && fs.existsSync(path.join(dir, 'metrics.jsonl')) && readMetrics(dir).length > epoch) return dir;
  }
  return dir;
}

/** The small data and model most CLI tests train: 32 px class folders under data/, alpha 0.35, random weights. */
export const tinyDataAndModel =
  'dataset: { path: data, validation_split: 0.3, image_size: [32, 32], batch_size: 8 }\nmodel: { alpha: 0.35, weights: none }\n';

/** The small experiment the fault tests train (crash-safety, sync faults, processes): 3 + 2 epochs from seed 9, fine-tuning from layer 120. */
export const faultTestBody = `seed: 9
${tinyDataAndModel}train:
  feature_extraction: { epochs: 3, optimizer: { name: adam, learning_rate: 0.001 } }
  fine_tune: { fine_tune_at: 120, epochs: 2 }
`;

/** The run folder under runsDir whose name contains `-<fragment>-`. */
export function runFolderNamed(runsDir: string, fragment: string): string {
  return fs
    .readdirSync(runsDir)
    .map((d) => path.join(runsDir, d))
    .find((d) => d.includes(`-${fragment}-`))!;
}

/** Writes <dir>/<name>.yaml as `name: <name>` followed by body; returns its path. */
export function writeExperiment(dir: string, name: string, body: string): string {
  const file = path.join(dir, `${name}.yaml`);
  fs.writeFileSync(file, `name: ${name}\n${body}`);
  return file;
}

/** The run folder from `tlx run`'s JSON result line. */
export function runDirOf(stdout: string): string {
  const line = stdout.split('\n').find((l) => l.startsWith('{'));
  if (!line) throw new Error(`no result line in: ${stdout}`);
  return (JSON.parse(line) as { dir: string }).dir;
}

/** What a run folder's mlflow.json records for one tracking server. */
export function mlflowState(dir: string, uri: string): { experiment_id: string; run_id: string } {
  return (
    JSON.parse(fs.readFileSync(path.join(dir, 'mlflow.json'), 'utf8')) as {
      servers: Record<string, { experiment_id: string; run_id: string }>;
    }
  ).servers[uri];
}
