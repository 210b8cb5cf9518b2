import { errorMessage, UserError } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import type { LayersModel, Optimizer, Tensor } from '@tensorflow/tfjs-node';
import { killPoint } from '../core/faults.ts';
import { loadCheckpointWeights, loadOptimizerState, readIntactCheckpoint } from '../run-folder/checkpoints.ts';
import type { CheckpointMeta, EpochRecord, PhaseOutcome } from '../run-folder/records.ts';
import type { RunFolder } from '../run-folder/run-folder.ts';
import type { Phase } from '../models/classifier.ts';
import { EarlyStopping, type EarlyStoppingState } from '../train/callbacks.ts';
import type { Callback, EpochRecord as EngineEpochRecord, PhaseEnd, PhaseSpan } from '../train/engine.ts';
import type { RunModel } from './model-stage.ts';
import type { RunContext } from './run.ts';

/**
 * Resume in one place, as Keras's BackupAndRestore keeps it in one callback: what is saved
 * and when (RunRecorder, below), where a run starts again (findResumePoint), and how the
 * state is put back (restoreCheckpoint, restoreOptimizer, earlyStoppingFor). The record
 * (metrics.jsonl) and the checkpoints are reconciled so that every epoch is recorded exactly once:
 *
 * - a torn last line of metrics.jsonl (power cut, full disk) is cut off, with a warning;
 * - training restarts from the newest intact checkpoint the record reaches: `last`, else the
 *   phase's (`feature_extraction`), else `best`, as BackupAndRestore restarts an epoch; a
 *   damaged one is named and passed over, and one beyond a hole in the record (a lost line)
 *   is passed over too, so the hole's epochs are trained again;
 * - a checkpoint whose metrics line a kill cut off gets the line back from the checkpoint;
 * - epochs recorded after the checkpoint are dropped and trained again (runs are bitwise
 *   reproducible, so the same numbers come back);
 * - when checkpoints exist but none is whole and reached by the record, training starts
 *   again from the beginning (said in a warning);
 * - epochs recorded with no checkpoint at all (the folder lost or was stripped of them)
 *   are refused (exit 2) rather than trained again silently.
 */

export interface ResumePoint {
  /** Recorded epochs, each once, in order (epoch 0 is the evaluation before training). */
  records: EpochRecord[];
  /** The last epoch whose weights the checkpoint holds (0: nothing trained yet). */
  lastEpoch: number;
  checkpoint?: { dir: string; meta: CheckpointMeta };
}

const phaseOrder = ['feature_extraction', 'fine_tune'] as const;

/** The checkpoints a run restarts from, by preference: `last` carries the optimizer's and callbacks' state, the others only weights. */
const fallbackOrder = ['last', 'feature_extraction', 'best'] as const;

interface Candidate {
  name: (typeof fallbackOrder)[number];
  dir: string;
  meta: CheckpointMeta;
}

/** The run's records, each epoch once, a torn tail cut off; `rewrite` when metrics.jsonl must be written again. */
function readRecords(folder: RunFolder, log: Logger): { records: EpochRecord[]; rewrite: boolean } {
  const torn = folder.repairMetrics();
  if (torn > 0)
    log.warn(
      { run: folder.id, bytes: torn },
      `metrics.jsonl ended with a torn line (${torn} bytes, from a crash or a full disk); it was cut off, and its epoch comes back from its checkpoint or is trained again`,
    );
  const read = folder.readMetrics();
  for (const problem of read.problems) log.warn({ run: folder.id }, problem);
  const seen = new Set<number>();
  const records = read.records.filter((record) => !seen.has(record.epoch) && seen.add(record.epoch));
  if (records.length !== read.records.length)
    log.warn({ run: folder.id }, 'metrics.jsonl recorded some epochs twice; the first record of each is kept');
  return { records, rewrite: records.length !== read.records.length || read.problems.length > 0 };
}

/** Every whole checkpoint of the run, in fallback order; a damaged one is named in a warning and left out. */
function intactCheckpoints(folder: RunFolder, log: Logger): { intact: Candidate[]; damaged: string[] } {
  const intact: Candidate[] = [];
  const damaged: string[] = [];
  for (const name of fallbackOrder) {
    const dir = folder.findCheckpoint(name);
    if (!dir) continue;
    try {
      intact.push({ name, dir, meta: readIntactCheckpoint(dir) });
    } catch (error) {
      const reason = folder.withinFolder(errorMessage(error));
      damaged.push(`checkpoints/${name} (${reason})`);
      log.warn({ run: folder.id, checkpoint: name }, `checkpoint ${name} is damaged and is passed over: ${reason}`);
    }
  }
  return { intact, damaged };
}

/** The last epoch up to which the record has no hole (epoch 0, the evaluation before training, aside). */
function recordedWithoutHole(records: EpochRecord[]): number {
  const epochs = new Set(records.map((record) => record.epoch));
  let epoch = 0;
  while (epochs.has(epoch + 1)) epoch++;
  return epoch;
}

export function findResumePoint(folder: RunFolder, log: Logger): ResumePoint {
  let { records, rewrite } = readRecords(folder, log);
  const { intact, damaged } = intactCheckpoints(folder, log);
  // A checkpoint restores its own epoch's line, so it may be one past the record's end, not further.
  const reach = recordedWithoutHole(records) + 1;
  const chosen = intact
    .filter((candidate) => candidate.meta.epoch <= reach)
    .sort((a, b) => b.meta.epoch - a.meta.epoch)[0];
  const trained = records.filter((record) => record.epoch > 0);
  if (!chosen) {
    if (trained.length > 0 && intact.length + damaged.length === 0) {
      throw new UserError(
        `${folder.id}: metrics.jsonl records epochs ${trained[0].epoch}..${trained.at(-1)!.epoch} but the run has no checkpoint (checkpoints/last); resuming would train those epochs again and record them twice. Start a new run from its experiment file.`,
      );
    }
    if (trained.length > 0) {
      // Checkpoints exist but none is whole and reached by the record: a fault, not a choice; start over.
      log.warn(
        { run: folder.id },
        `no intact checkpoint at or before epoch ${reach}${damaged.length ? ` (damaged: ${damaged.join(', ')})` : ''}: training starts again from the beginning, and its epochs are recorded once (runs are reproducible: the same numbers come back)`,
      );
      records = records.filter((record) => record.epoch === 0);
      rewrite = true;
    }
    if (rewrite) folder.rewriteMetrics(records);
    return { records, lastEpoch: 0 };
  }
  const { meta, dir, name } = chosen;
  if (name !== 'last') {
    const why = intact.some((c) => c.name === 'last')
      ? `the record has no epoch ${reach} (a lost line), so epochs from there are trained again`
      : 'the last checkpoint is damaged or missing';
    log.warn(
      { run: folder.id, checkpoint: name, epoch: meta.epoch },
      `resuming from the ${name} checkpoint (epoch ${meta.epoch}): ${why}; the optimizer's state starts anew`,
    );
  }
  if (meta.record && !records.some((record) => record.epoch === meta.epoch)) {
    records.push(meta.record);
    rewrite = true;
  }
  const after = records.filter((record) => record.epoch > meta.epoch);
  if (after.length > 0) {
    log.warn(
      { run: folder.id, epochs: after.map((r) => r.epoch) },
      `epochs ${after.map((r) => r.epoch).join(', ')} are recorded after the checkpoint resumed from; they are trained again`,
    );
    records = records.filter((record) => record.epoch <= meta.epoch);
    rewrite = true;
  }
  records.sort((a, b) => a.epoch - b.epoch);
  if (rewrite) folder.rewriteMetrics(records);
  return { records, lastEpoch: meta.epoch, checkpoint: { dir, meta } };
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

// ---- what is saved, and when -------------------------------------------------------

export interface RecorderState {
  bestValAccuracy: number;
}

/**
 * After each epoch: the `last` checkpoint (model, optimizer, early-stopping state), then the
 * epoch's line in metrics.jsonl, then `best` when validation accuracy improved. When a
 * phase completes: `last` again, marked complete with how the phase ended (after early
 * stopping restored the best weights), and after feature extraction its own checkpoint,
 * the state every fine-tuning variant starts from (sweeps share it).
 */
export class RunRecorder implements Callback {
  private lastRecord?: EngineEpochRecord;

  constructor(
    private readonly folder: RunFolder,
    private readonly model: LayersModel,
    private readonly optimizer: Optimizer,
    private readonly state: RecorderState,
    private readonly earlyStopping?: EarlyStopping,
    private readonly onOutcome?: (phase: string, outcome: PhaseOutcome) => void,
  ) {}

  private callbackState(): Record<string, unknown> {
    return this.earlyStopping ? { early_stopping: this.earlyStopping.state() } : {};
  }

  async onEpochEnd(record: EngineEpochRecord): Promise<void> {
    await this.folder.saveCheckpoint('last', this.model, this.optimizer, {
      epoch: record.epoch,
      phase: record.phase,
      record,
      callbacks: this.callbackState(),
    });
    killPoint('epoch.checkpointed');
    this.folder.appendMetric(record);
    killPoint('epoch.recorded');
    this.lastRecord = record;
    if (record.val_accuracy > this.state.bestValAccuracy) {
      this.state.bestValAccuracy = record.val_accuracy;
      await this.folder.saveCheckpoint('best', this.model, undefined, {
        epoch: record.epoch,
        phase: record.phase,
        record,
      });
    }
  }

  async onPhaseEnd(end: PhaseEnd): Promise<void> {
    if (!end.complete || end.lastTrained < end.first) return;
    const outcome: PhaseOutcome = {
      stopped_early: end.stopReason === 'early_stopping',
      last_epoch: end.lastTrained,
      ...(this.earlyStopping?.restoredEpoch !== undefined
        ? { restored_best_epoch: this.earlyStopping.restoredEpoch }
        : {}),
    };
    // The weights as the phase leaves them (the best epoch's when early stopping restored them).
    await this.folder.saveCheckpoint('last', this.model, undefined, {
      epoch: end.lastTrained,
      phase: end.phase,
      record: this.lastRecord,
      phase_complete: true,
      outcome,
      callbacks: this.callbackState(),
    });
    killPoint('phase.complete');
    this.onOutcome?.(end.phase, outcome);
    if (end.phase === 'feature_extraction') this.folder.copyCheckpoint('last', 'feature_extraction');
  }
}

// ---- how it is put back --------------------------------------------------------------

/** The resume point's weights into the model, and the outcome of the phase it ended (when it ended one). */
export function restoreCheckpoint(context: RunContext, model: RunModel, point: ResumePoint): void {
  if (!point.checkpoint) return;
  loadCheckpointWeights(point.checkpoint.dir, model.classifier.model);
  context.log.info(
    { epoch: point.lastEpoch, phase: point.checkpoint.meta.phase },
    `continuing from the checkpoint of epoch ${point.lastEpoch}`,
  );
  const { outcome, phase } = point.checkpoint.meta;
  if (outcome && !context.run.phase_outcomes[phase])
    context.setRun({ phase_outcomes: { ...context.run.phase_outcomes, [phase]: outcome } });
}

/** The optimizer's moments and step count, when the run continues inside this phase; true when it does. */
export async function restoreOptimizer(point: ResumePoint, span: PhaseSpan, optimizer: Optimizer): Promise<boolean> {
  const inside = continuesInside(span, point);
  if (inside) await loadOptimizerState(point.checkpoint!.dir, optimizer);
  return inside;
}

/** Early stopping for a phase, continuing a saved state when the run resumes inside the phase. */
export function earlyStoppingFor(
  context: RunContext,
  model: RunModel,
  phase: Phase,
  point: ResumePoint,
  inside: boolean,
): EarlyStopping | undefined {
  const settings = context.config.train[phase].early_stopping;
  if (!settings) return undefined;
  const { folder } = context;
  const callback = new EarlyStopping(settings, model.classifier.model, async (epoch) => {
    await folder.saveCheckpoint('early_stopping', model.classifier.model, undefined, { epoch, phase });
  });
  const saved = inside
    ? (point.checkpoint?.meta.callbacks.early_stopping as EarlyStoppingState | undefined)
    : undefined;
  if (saved) {
    let bestWeights: Tensor[] | undefined;
    const bestDir = folder.findCheckpoint('early_stopping');
    if (bestDir && settings.restore_best_weights) {
      // Read the best epoch's weights through the model, then put the resume point's back.
      loadCheckpointWeights(bestDir, model.classifier.model);
      bestWeights = model.classifier.model.weights.map((weight) => weight.read().clone());
      loadCheckpointWeights(point.checkpoint!.dir, model.classifier.model);
    }
    callback.restore(saved, bestWeights);
  }
  return callback;
}
