import { UserError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { findCheckpoint, readCheckpointMeta } from '../run-folder/checkpoints.ts';
import type { CheckpointMeta, EpochRecord } from '../run-folder/records.ts';
import type { RunFolder } from '../run-folder/run-folder.ts';
import type { PhaseSpan } from '../train/engine.ts';

/**
 * Resume in one place: what a run folder says was done -> where training starts. Keras's
 * BackupAndRestore plays this role; here the record (metrics.jsonl) and the `last`
 * checkpoint are reconciled so that every epoch is recorded exactly once:
 *
 * - a torn last line of metrics.jsonl (power cut, full disk) is cut off, with a warning;
 * - a checkpoint whose metrics line a kill cut off gets the line back from the checkpoint;
 * - epochs recorded after the checkpoint (its successor was lost) are dropped and trained
 *   again (runs are bitwise reproducible, so the same numbers come back);
 * - epochs recorded with no checkpoint at all cannot be resumed without training and
 *   recording them twice: that is refused (exit 2).
 */

export interface ResumePoint {
  /** Recorded epochs, each once, in order (epoch 0 is the evaluation before training). */
  records: EpochRecord[];
  /** The last epoch whose weights the checkpoint holds (0: nothing trained yet). */
  lastEpoch: number;
  checkpoint?: { dir: string; meta: CheckpointMeta };
}

export const phaseOrder = ['feature_extraction', 'fine_tune'] as const;

export function findResumePoint(folder: RunFolder, log: Logger): ResumePoint {
  const torn = folder.repairMetrics();
  if (torn > 0) log.warn({ run: folder.id, bytes: torn }, `metrics.jsonl ended with a torn line (${torn} bytes, from a crash or a full disk); it was cut off and its epoch will be trained again`);
  const read = folder.readMetrics();
  for (const problem of read.problems) log.warn({ run: folder.id }, problem);
  const seen = new Set<number>();
  let records = read.records.filter((record) => !seen.has(record.epoch) && seen.add(record.epoch));
  let rewrite = records.length !== read.records.length || read.problems.length > 0;
  if (records.length !== read.records.length) log.warn({ run: folder.id }, 'metrics.jsonl recorded some epochs twice; the first record of each is kept');

  const dir = findCheckpoint(folder.checkpoint('last'));
  const meta = dir ? readCheckpointMeta(dir) : undefined;
  const trained = records.filter((record) => record.epoch > 0);
  if (!meta) {
    if (trained.length > 0) {
      throw new UserError(
        `${folder.id}: metrics.jsonl records epochs ${trained[0].epoch}..${trained.at(-1)!.epoch} but the run has no checkpoint (checkpoints/last); resuming would train those epochs again and record them twice. Start a new run from its experiment file.`,
      );
    }
  } else {
    if (meta.record && !records.some((record) => record.epoch === meta.epoch)) {
      records.push(meta.record);
      rewrite = true;
    }
    const after = records.filter((record) => record.epoch > meta.epoch);
    if (after.length > 0) {
      log.warn({ run: folder.id, epochs: after.map((r) => r.epoch) }, `epochs ${after.map((r) => r.epoch).join(', ')} are recorded but their checkpoint was lost; they are trained again`);
      records = records.filter((record) => record.epoch <= meta.epoch);
      rewrite = true;
    }
  }
  records.sort((a, b) => a.epoch - b.epoch);
  if (rewrite) folder.rewriteMetrics(records);
  return { records, lastEpoch: meta?.epoch ?? 0, checkpoint: dir && meta ? { dir, meta } : undefined };
}

/** Whether the resume point is past a phase (all its epochs, or it ended early and was marked complete). */
export function phaseDone(span: Pick<PhaseSpan, 'phase' | 'last'>, point: ResumePoint): boolean {
  const meta = point.checkpoint?.meta;
  if (!meta) return false;
  if (meta.epoch >= span.last) return true;
  const at = phaseOrder.indexOf(meta.phase as (typeof phaseOrder)[number]);
  const current = phaseOrder.indexOf(span.phase as (typeof phaseOrder)[number]);
  return at > current || (at === current && meta.phase_complete);
}

/** The last trained epoch of a phase at the resume point (first - 1 when the phase has not started). */
export function resumeAfter(span: Pick<PhaseSpan, 'phase' | 'first' | 'last'>, point: ResumePoint): number {
  if (phaseDone(span, point)) return span.last;
  return Math.min(span.last, Math.max(span.first - 1, point.lastEpoch));
}

/** Whether the optimizer state of the checkpoint belongs to this phase (continuing inside it). */
export function continuesInside(span: Pick<PhaseSpan, 'phase' | 'first' | 'last'>, point: ResumePoint): boolean {
  const meta = point.checkpoint?.meta;
  return Boolean(meta && meta.phase === span.phase && !phaseDone(span, point) && meta.epoch >= span.first);
}
