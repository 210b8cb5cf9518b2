import path from 'node:path';
import type { RunJson, RunSummary, TfliteRecord } from '../run-folder/records.ts';
import type { RunFolder } from '../run-folder/run-folder.ts';
import { bytes, duration, fixed, percent, table, type Style } from '../ui/format.ts';

/** The blocks a person reads at the end of a command (the --json forms are the records themselves). */

/** The MLflow page of a run, from what its folder says was sent. */
function mlflowRunUrl(folder: RunFolder): string | undefined {
  const servers = Object.entries(folder.readMlflow().servers);
  if (servers.length === 0) return undefined;
  const [server, state] = servers[0];
  return `${server}/#/experiments/${state.experiment_id}/runs/${state.run_id}`;
}

/** "0.781 (95% CI 0.689-0.852)": an accuracy with its interval, when the record has one. */
function withInterval(
  value: number | undefined,
  interval: [number, number] | undefined,
  format: (v: number | undefined) => string,
): string {
  return interval ? `${format(value)} (95% CI ${format(interval[0])}-${format(interval[1])})` : format(value);
}

function gateLine(record: TfliteRecord): string {
  const gate = record.gate;
  if (!gate)
    return `drop ${record.accuracy_drop === undefined ? 'n/a' : `${(record.accuracy_drop * 100).toFixed(1)} points`}`;
  return `drop ${(gate.accuracy_drop * 100).toFixed(1)} points: ${gate.lost} lost, ${gate.gained} gained of ${gate.images}, p ${gate.p_value.toFixed(2)}`;
}

/** "56.3 M MACs, host 0.65 / 0.30 ms (1 / 4 threads)": what the phone pays besides the file size. */
function phoneCosts(record: TfliteRecord): string {
  const macs = record.macs_per_image !== undefined ? `, ${(record.macs_per_image / 1e6).toFixed(1)} M MACs` : '';
  const host = record.host_latency_ms;
  const latency = host
    ? `, host latency ${host.threads_1.toFixed(2)} / ${host.threads_4.toFixed(2)} ms (1 / 4 threads)`
    : '';
  const memory =
    record.peak_memory_bytes !== undefined
      ? `, peak memory ${(record.peak_memory_bytes / 1024 ** 2).toFixed(1)} MiB`
      : '';
  return `${macs}${latency}${memory}`;
}

function exportLines(record: TfliteRecord, style: Style): string[] {
  const mediapipe = record.mediapipe as { accuracy?: number; skipped?: string } | undefined;
  const io = record.quantization === 'int8' ? ` (${record.io_type} in/out)` : '';
  const state =
    record.status === 'verified' ? style.green('verified') : style.red(`FAILED: ${record.problems.join('; ')}`);
  const weights = record.final_weights
    ? `, weights of epoch ${record.final_weights.epoch}${record.final_weights.selected_by === 'best_val_accuracy' ? ' (best val_accuracy)' : ''}`
    : '';
  return [
    `${record.quantization}${io}, ${bytes(record.bytes)}${phoneCosts(record)}, output [${record.output.shape.join(', ')}]${weights}, ${state}`,
    `accuracy ${withInterval(record.accuracy, record.accuracy_ci95, (v) => percent(v))} (${gateLine(record)}), nearest resize ${percent(record.accuracy_nearest_resize)}, MediaPipe ${mediapipe?.skipped ? 'n/a' : percent(mediapipe?.accuracy)}`,
  ];
}

/** One export (tlx convert): the file, how well it did, where it is. */
export function exportBlock(folder: RunFolder, record: TfliteRecord, style: Style): string {
  const [first, second] = exportLines(record, style);
  const where =
    record.status === 'verified'
      ? folder.pathOf(record.path)
      : 'not installed (the previous export, if any, is unchanged)';
  return [`${style.bold(`Export of ${folder.id}`)}`, `  ${first}`, `  ${second}`, `  file    ${where}`].join('\n');
}

/** A finished (or failed) run: status, metrics, the per-class table, the export, where things are. */
export function runBlock(folder: RunFolder, summary: RunSummary, style: Style): string {
  const final = summary.metrics.final;
  const lines: string[] = [];
  const status = summary.status === 'FINISHED' ? style.green(summary.status) : style.red(summary.status);
  lines.push(`${style.bold(`Run ${folder.id}`)}  ${status} in ${duration(summary.seconds)}`);
  if (summary.error) lines.push(`  ${style.red(summary.error)}`);
  const accuracy = (value: number | undefined) => fixed(value, 3);
  lines.push(
    `  test accuracy ${withInterval(final?.test_accuracy, final?.test_accuracy_ci95, accuracy)}  loss ${fixed(final?.test_loss)}`,
  );
  lines.push(
    `  validation    ${withInterval(final?.val_accuracy, final?.val_accuracy_ci95, accuracy)}  loss ${fixed(final?.val_loss)}`,
  );
  const chosen = summary.final_weights;
  if (chosen?.selected_by === 'best_val_accuracy')
    lines.push(
      `  weights       epoch ${chosen.epoch} of ${chosen.last_epoch} (best validation accuracy; train.restore_best_weights)`,
    );
  if (summary.test_report?.length) {
    lines.push('');
    const report = table(
      [
        { header: 'class', value: (r: (typeof summary.test_report)[number]) => r.class, shrink: true },
        { header: 'precision', value: (r) => fixed(r.precision), right: true },
        { header: 'recall', value: (r) => fixed(r.recall), right: true },
        { header: 'f1', value: (r) => fixed(r.f1), right: true },
        { header: 'support', value: (r) => String(r.support), right: true },
      ],
      summary.test_report,
      { maxWidth: 78 },
    );
    lines.push(...report.split('\n').map((line) => `  ${line}`));
  }
  lines.push('');
  const tflite = summary.export?.tflite;
  if (tflite) {
    const [first, second] = exportLines(tflite, style);
    lines.push(`  export  ${first}`, `          ${second}`);
  }
  lines.push(`  plots   ${folder.pathOf('plots')}${path.sep}`);
  lines.push(
    `  model   ${tflite?.status === 'verified' ? folder.pathOf('model.tflite') : folder.pathOf('model/model.json')}`,
  );
  const url = mlflowRunUrl(folder);
  if (url) lines.push(`  mlflow  ${url}`);
  return lines.join('\n');
}

export interface RunListing {
  id: string;
  name: string;
  status: string;
  started: string;
  seconds?: number;
  best_val_accuracy?: number;
  test_accuracy?: number;
  export?: string;
  dir: string;
  /** A damaged folder (status DAMAGED): what could not be read, in one line. */
  problem?: string;
}

/** What `tlx runs` shows of one run, from its folder only (no server). */
export function listingOf(folder: RunFolder, run: RunJson, summary: RunSummary | undefined): RunListing {
  const records = folder.readMetrics().records.filter((r) => r.epoch > 0);
  const best = records.length ? Math.max(...records.map((r) => r.val_accuracy)) : undefined;
  const end = Date.parse(run.ended ?? run.updated);
  const name = (() => {
    try {
      return folder.readConfig().name;
    } catch {
      return '';
    }
  })();
  return {
    id: folder.id,
    name,
    status: run.status,
    started: run.created,
    seconds: summary?.seconds ?? (Number.isFinite(end) ? (end - Date.parse(run.created)) / 1000 : undefined),
    best_val_accuracy: summary?.metrics.best_val_accuracy ?? best,
    test_accuracy: summary?.metrics.final?.test_accuracy,
    export: summary?.export?.tflite
      ? `${summary.export.tflite.quantization} ${summary.export.tflite.status}`
      : undefined,
    dir: folder.dir,
  };
}

function startedShort(iso: string): string {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return '';
  const pad = (n: number) => String(n).padStart(2, '0');
  return `${pad(date.getMonth() + 1)}-${pad(date.getDate())} ${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

export function runsTable(runs: RunListing[], style: Style): string {
  const statusColor = (status: string) =>
    status === 'FINISHED' ? style.green(status) : status === 'RUNNING' ? style.yellow(status) : style.red(status);
  return table<RunListing>(
    [
      { header: 'run', value: (r) => r.id.replace(/^\d{8}-\d{6}-/, ''), shrink: true },
      { header: 'status', value: (r) => statusColor(r.status) },
      { header: 'started', value: (r) => startedShort(r.started) },
      { header: 'time', value: (r) => duration(r.seconds), right: true },
      { header: 'best val', value: (r) => fixed(r.best_val_accuracy), right: true },
      { header: 'test', value: (r) => fixed(r.test_accuracy), right: true },
      { header: 'export', value: (r) => r.export ?? '', shrink: true },
    ],
    runs,
  );
}
