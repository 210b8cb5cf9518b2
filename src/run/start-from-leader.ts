import fs from 'node:fs';
import path from 'node:path';
import type { LoadedExperiment } from '../config/load.ts';
import { UserError } from '../core/errors.ts';
import { fsyncDir, tempPathFor } from '../core/files.ts';
import { readCheckpointMeta } from '../run-folder/checkpoints.ts';
import { RunFolder } from '../run-folder/run-folder.ts';
import { createRunFolder, type TrialOf } from './run.ts';

/**
 * A new run that starts where another run's feature extraction ended: its records of
 * epochs 0..N, the checkpoint of that moment (marked as a finished phase) and its data
 * pictures are copied in, so resuming it trains only the fine-tuning phase, exactly as
 * the run would have continued (sweep trials that differ only after feature extraction).
 * With a fixed `runId` (queued trials) the folder is assembled under a temp name and renamed
 * into place, so a retry finds either nothing or a complete start.
 */
export function startFromFeatureExtraction(
  experiment: LoadedExperiment,
  runsDir: string,
  source: RunFolder,
  trial?: TrialOf,
  runId?: string,
): RunFolder {
  const checkpoint = source.findCheckpoint('feature_extraction');
  if (!checkpoint) throw new UserError(`${source.dir}: no feature-extraction checkpoint to start from`);
  const meta = readCheckpointMeta(checkpoint);
  const folder = createRunFolder(
    experiment,
    runsDir,
    trial,
    runId ? path.basename(tempPathFor(path.join(runsDir, runId))) : undefined,
  );
  for (const record of source.readMetrics().records.filter((r) => r.epoch <= meta.epoch)) folder.appendMetric(record);
  folder.copyCheckpoint('feature_extraction', 'feature_extraction', source);
  folder.copyCheckpoint('feature_extraction', 'last', source);
  const best = source.findCheckpoint('best');
  if (best && readCheckpointMeta(best).epoch <= meta.epoch) folder.copyCheckpoint('best', 'best', source);
  const run = folder.readRun();
  const sourceRun = source.readRun();
  folder.writeRun({
    ...run,
    ...(sourceRun.weights ? { weights: sourceRun.weights } : {}),
    phase_outcomes: meta.outcome ? { [meta.phase]: meta.outcome } : {},
  });
  for (const picture of ['samples.png', 'augmentation.png']) {
    if (source.hasPlot(picture)) folder.writePlot(picture, source.readPlot(picture));
  }
  if (!runId) return folder;
  folder.writeRun({ ...folder.readRun(), run_id: runId });
  const final = path.join(path.dirname(folder.dir), runId);
  fs.renameSync(folder.dir, final);
  fsyncDir(path.dirname(final));
  return RunFolder.open(final);
}
