import type { TrialState } from '../run-folder/records.ts';
import type { RunFolder } from '../run-folder/run-folder.ts';
import { footprintKey, judgeBudget, type Constraints, type Footprint } from './budget.ts';
import type { SweepPlanned } from './plan.ts';
import { bestTrial, type SweepMetric, type TrialRow } from './report.ts';
import { trialRow } from './trial.ts';

/**
 * What each trial's .tflite costs, measured once per architecture. Trials that differ only
 * in training have the same network, input and quantization, so the same bytes, MACs and
 * latency: the best trial of each architecture (the only one of its kind that can win) is
 * exported, and its measurements stand for its group. A trial with its own export keeps its own.
 */

/** Trial number -> its architecture's key. */
export function footprintKeys(planned: SweepPlanned): Map<number, string> {
  return new Map(planned.jobs.map((job) => [job.plan.index, footprintKey(job.experiment.config)]));
}

function footprintOfRow(row: TrialRow): Footprint | undefined {
  if (row.tflite_bytes === undefined || row.macs_per_image === undefined) return undefined;
  const latency =
    row.host_latency_ms_1 !== undefined && row.host_latency_ms_4 !== undefined
      ? { threads_1: row.host_latency_ms_1, threads_4: row.host_latency_ms_4 }
      : undefined;
  return {
    bytes: row.tflite_bytes,
    params: row.params,
    macs_per_image: row.macs_per_image,
    host_latency_ms: latency,
    peak_memory_bytes: row.peak_memory_bytes,
    measured_on_trial: row.footprint_trial ?? row.trial,
  };
}

export interface MeasureInput {
  planned: SweepPlanned;
  states: TrialState[];
  rows: TrialRow[];
  folderOf: (state: TrialState) => Promise<RunFolder | undefined>;
  /** Exports a finished trial's run (sweep.export: best's export). */
  exportRun: (folder: RunFolder) => Promise<void>;
}

/** Architecture key -> its measured costs; exports one trial per architecture that has none yet. */
export async function measureFootprints(input: MeasureInput): Promise<Map<string, Footprint>> {
  const { planned, rows } = input;
  const keys = footprintKeys(planned);
  const groups = new Map<string, TrialRow[]>();
  for (const row of rows.filter((r) => r.status === 'finished')) {
    const key = keys.get(row.trial)!;
    groups.set(key, [...(groups.get(key) ?? []), row]);
  }
  const measured = new Map<string, Footprint>();
  for (const [key, members] of groups) {
    const own = members.map(footprintOfRow).find((f) => f !== undefined);
    if (own) {
      measured.set(key, own);
      continue;
    }
    const representative =
      bestTrial(members, planned.metric as SweepMetric, planned.goal) ??
      bestTrial(members, 'val_accuracy', 'max') ??
      members[0];
    const state = input.states.find((s) => s.trial === representative.trial);
    const folder = state ? await input.folderOf(state) : undefined;
    if (!folder) continue;
    await input.exportRun(folder);
    const footprint = footprintOfRow(trialRow(representative.trial, representative.assignments, folder, 'finished'));
    if (footprint) measured.set(key, footprint);
  }
  return measured;
}

/**
 * Every finished row with its architecture's costs (its own when it has them) and, with
 * constraints, its verdict. Pure.
 */
export function withFootprints(
  rows: TrialRow[],
  keys: Map<number, string>,
  measured: Map<string, Footprint>,
  constraints: Constraints | undefined,
): TrialRow[] {
  return rows.map((row) => {
    if (row.status !== 'finished') return row;
    const footprint = footprintOfRow(row) ?? measured.get(keys.get(row.trial) ?? '');
    const costs: Partial<TrialRow> = footprint
      ? {
          tflite_bytes: footprint.bytes,
          params: footprint.params,
          macs_per_image: footprint.macs_per_image,
          host_latency_ms_1: footprint.host_latency_ms?.threads_1,
          host_latency_ms_4: footprint.host_latency_ms?.threads_4,
          peak_memory_bytes: footprint.peak_memory_bytes,
          footprint_trial: footprint.measured_on_trial,
        }
      : {};
    if (!constraints) return { ...row, ...costs };
    const verdict = judgeBudget(footprint, constraints);
    return {
      ...row,
      ...costs,
      budget: verdict.status,
      ...(verdict.status === 'over' ? { over_budget: verdict.over } : {}),
    };
  });
}
