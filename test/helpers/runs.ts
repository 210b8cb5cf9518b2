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
export async function waitForEpoch(runsDir: string, fragment: string, epoch: number, timeoutMs = 240_000): Promise<string | undefined> {
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
