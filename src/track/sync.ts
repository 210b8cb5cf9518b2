import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { errorMessage } from '../errors.ts';
import { silentLogger, type Logger } from '../log.ts';
import { MlflowClient, type MlflowMetric, type MlflowParam, type MlflowTag, type RunStatusName } from './mlflow-client.ts';
import { RunFolder } from './run-store.ts';

/**
 * Pushes a local run folder (the source of truth) to an MLflow server, idempotently:
 * what was already sent is remembered per server in the folder's mlflow.json, metric
 * points carry the timestamp they were recorded with (so a resend is the same point,
 * which MLflow stores once), artifacts are re-uploaded only when they changed. Live
 * logging during a run and `tlx sync` afterwards are the same operation.
 */

interface ServerState {
  experiment_id: string;
  run_id: string;
  params_logged: boolean;
  metric_lines: number;
  artifacts: Record<string, string>;
  status?: string;
  synced: boolean;
  last_error?: string;
  updated: string;
}

interface MlflowFile {
  servers: Record<string, ServerState>;
  /** Servers that failed before a run could even be created there. */
  pending?: Record<string, { synced: false; last_error: string; updated: string }>;
}

interface EpochLine {
  epoch: number;
  phase: string;
  time?: number;
  [metric: string]: unknown;
}

export const phaseCodes: Record<string, number> = { initial: 0, feature_extraction: 1, fine_tune: 2 };

/** The URI without credentials: what may be written to disk and logs. */
export function redactUri(uri: string): string {
  try {
    const url = new URL(uri);
    url.username = '';
    url.password = '';
    return url.toString().replace(/\/$/, '');
  } catch {
    return uri;
  }
}

/** The resolved config as dotted keys: train.fine_tune.fine_tune_at = 100. */
export function flattenParams(value: unknown, prefix = ''): MlflowParam[] {
  if (value === null || value === undefined) return [];
  if (typeof value === 'object' && !Array.isArray(value)) {
    return Object.entries(value as Record<string, unknown>).flatMap(([key, child]) => flattenParams(child, prefix ? `${prefix}.${key}` : key));
  }
  return [{ key: prefix, value: Array.isArray(value) ? JSON.stringify(value) : String(value) }];
}

export function epochMetrics(line: EpochLine): MlflowMetric[] {
  const timestamp = line.time ?? 0;
  const metrics: MlflowMetric[] = [{ key: 'phase', value: phaseCodes[line.phase] ?? -1, timestamp, step: line.epoch }];
  for (const key of ['loss', 'accuracy', 'val_loss', 'val_accuracy', 'learning_rate', 'seconds']) {
    const value = line[key];
    if (typeof value === 'number' && Number.isFinite(value)) metrics.push({ key: key === 'seconds' ? 'epoch_seconds' : key, value, timestamp, step: line.epoch });
  }
  return metrics;
}

interface SummaryLike {
  finished_at?: number;
  metrics?: { final?: Record<string, number>; best_val_accuracy?: number };
  phases?: Record<string, { last_epoch: number } | undefined>;
  export?: { tflite?: ExportLike; tflite_modes?: Record<string, ExportLike> };
}

interface ExportLike {
  bytes?: number;
  accuracy?: number;
  median_latency_ms?: number;
  accuracy_nearest_resize?: number;
  quantization?: string;
  status?: string;
}

export function finalMetrics(summary: SummaryLike, lastEpoch: number): MlflowMetric[] {
  const timestamp = summary.finished_at ?? 0;
  const metrics: MlflowMetric[] = [];
  const add = (key: string, value: number | undefined) => {
    if (typeof value === 'number' && Number.isFinite(value)) metrics.push({ key, value, timestamp, step: lastEpoch });
  };
  const final = summary.metrics?.final ?? {};
  add('test_loss', final.test_loss);
  add('test_accuracy', final.test_accuracy);
  add('final_val_loss', final.val_loss);
  add('final_val_accuracy', final.val_accuracy);
  add('best_val_accuracy', summary.metrics?.best_val_accuracy);
  const exports: [string, ExportLike][] = [];
  if (summary.export?.tflite) exports.push([summary.export.tflite.quantization ?? 'tflite', summary.export.tflite]);
  for (const [mode, record] of Object.entries(summary.export?.tflite_modes ?? {})) exports.push([mode, record]);
  for (const [mode, record] of exports) {
    add(`tflite_${mode}_bytes`, record.bytes);
    add(`tflite_${mode}_accuracy`, record.accuracy);
    add(`tflite_${mode}_accuracy_nearest_resize`, record.accuracy_nearest_resize);
    add(`tflite_${mode}_latency_ms`, record.median_latency_ms);
    add(`tflite_${mode}_verified`, record.status === 'verified' ? 1 : record.status ? 0 : undefined);
  }
  return metrics;
}

/** Files of the run that go to MLflow as artifacts, relative to the run folder. */
export function artifactFiles(folder: RunFolder): string[] {
  const files: string[] = [];
  const top = ['config.yaml', 'metrics.jsonl', 'summary.json', 'labels.txt', 'model.tflite', 'model-card.json', 'model-card.md', 'dataset.json'];
  for (const name of top) if (folder.exists(name)) files.push(name);
  for (const dir of fs.existsSync(folder.dir) ? fs.readdirSync(folder.dir) : []) {
    if (dir === 'plots' || dir.startsWith('tflite-')) {
      for (const name of fs.readdirSync(folder.file(dir))) if (!name.includes('.tmp-')) files.push(`${dir}/${name}`);
    }
  }
  return files;
}

function fingerprint(file: string): string {
  const stat = fs.statSync(file);
  return `${stat.size}:${Math.round(stat.mtimeMs)}`;
}

export interface SyncOptions {
  trackingUri: string;
  experimentName?: string;
  /** Parent run (sweeps): tagged as mlflow.parentRunId. */
  parentRunId?: string;
  log?: Logger;
  retries?: number;
  /** Upload artifacts (only once the run has ended, by default). */
  artifacts?: boolean;
}

export interface SyncResult {
  runId: string;
  experimentId: string;
  complete: boolean;
}

function readState(folder: RunFolder, uri: string): ServerState | undefined {
  if (!folder.exists('mlflow.json')) return undefined;
  return folder.readJson<MlflowFile>('mlflow.json').servers[uri];
}

function writeState(folder: RunFolder, uri: string, state: ServerState): void {
  const file: MlflowFile = folder.exists('mlflow.json') ? folder.readJson<MlflowFile>('mlflow.json') : { servers: {} };
  file.servers[uri] = state;
  folder.writeJson('mlflow.json', file);
}

/** Marks a run as not synced to this server (after a failure), keeping what was sent. */
export function markNotSynced(folder: RunFolder, trackingUri: string, error: string): void {
  const uri = redactUri(trackingUri);
  const state = readState(folder, uri);
  const updated = new Date().toISOString();
  if (state) {
    writeState(folder, uri, { ...state, synced: false, last_error: error, updated });
    return;
  }
  const file: MlflowFile = folder.exists('mlflow.json') ? folder.readJson<MlflowFile>('mlflow.json') : { servers: {} };
  folder.writeJson('mlflow.json', { ...file, pending: { ...file.pending, [uri]: { synced: false, last_error: error, updated } } });
}

interface RunJson {
  status: string;
  created: string;
  updated: string;
  config_sha256: string;
  tlx_version: string;
  experiment_file?: string;
  tags?: Record<string, string>;
}

export async function syncRun(folder: RunFolder, options: SyncOptions): Promise<SyncResult> {
  const log = options.log ?? silentLogger;
  const uri = redactUri(options.trackingUri);
  const client = new MlflowClient({ trackingUri: options.trackingUri, retries: options.retries });
  const meta = folder.readJson<RunJson>('run.json');
  const config = YAML.parse(fs.readFileSync(folder.file('config.yaml'), 'utf8')) as { name: string; tracking?: { mlflow?: { experiment?: string } } } & Record<string, unknown>;
  let state = readState(folder, uri);
  const save = (patch: Partial<ServerState>) => {
    state = { ...state!, ...patch, updated: new Date().toISOString() };
    writeState(folder, uri, state);
  };
  if (state && !(await client.getRun(state.run_id))) state = undefined; // the server lost it: start over
  if (!state) {
    const experimentName = options.experimentName ?? config.tracking?.mlflow?.experiment ?? config.name;
    const experimentId = await client.ensureExperiment(experimentName);
    const tags: MlflowTag[] = [
      { key: 'mlflow.runName', value: folder.id },
      { key: 'mlflow.source.name', value: meta.experiment_file ? path.basename(meta.experiment_file) : 'tlx' },
      { key: 'mlflow.source.type', value: 'LOCAL' },
      { key: 'tlx.config_sha256', value: meta.config_sha256 },
      { key: 'tlx.version', value: meta.tlx_version },
      { key: 'tlx.run_dir', value: folder.dir },
      ...Object.entries(meta.tags ?? {}).map(([key, value]) => ({ key, value })),
      ...(options.parentRunId ? [{ key: 'mlflow.parentRunId', value: options.parentRunId }] : []),
    ];
    const runId = await client.createRun(experimentId, folder.id, Date.parse(meta.created), tags);
    state = { experiment_id: experimentId, run_id: runId, params_logged: false, metric_lines: 0, artifacts: {}, synced: false, updated: new Date().toISOString() };
    writeState(folder, uri, state);
    log.info({ mlflow_run: runId, experiment: experimentName, server: uri }, 'MLflow run created');
  }
  const { run_id: runId, experiment_id: experimentId } = state;
  if (!state.params_logged && folder.exists('dataset.json')) {
    const dataset = folder.readJson<Record<string, unknown>>('dataset.json');
    const params = [...flattenParams(config), ...flattenParams(dataset, 'data')];
    await client.logBatch(runId, [], params);
    save({ params_logged: true });
  }
  const lines = folder.readJsonLines<EpochLine>('metrics.jsonl');
  if (lines.length > state.metric_lines) {
    await client.logBatch(runId, lines.slice(state.metric_lines).flatMap(epochMetrics));
    save({ metric_lines: lines.length });
  }
  const ended = ['FINISHED', 'FAILED', 'KILLED'].includes(meta.status);
  if (folder.exists('summary.json')) {
    // Sent on every sync: `tlx convert` may add export modes later, and a resent point is stored once.
    await client.logBatch(runId, finalMetrics(folder.readJson<SummaryLike>('summary.json'), lines.at(-1)?.epoch ?? 0));
  }
  if (options.artifacts ?? ended) {
    const uploaded = { ...state.artifacts };
    for (const file of artifactFiles(folder)) {
      const print = fingerprint(folder.file(file));
      if (uploaded[file] === print) continue;
      await client.logArtifact(experimentId, runId, file, folder.file(file));
      uploaded[file] = print;
      save({ artifacts: uploaded });
    }
  }
  if (ended && state.status !== meta.status) {
    await client.updateRun(runId, meta.status as RunStatusName, Date.parse(meta.updated));
    save({ status: meta.status });
  } else if (!ended && state.status !== 'RUNNING') {
    await client.updateRun(runId, 'RUNNING');
    save({ status: 'RUNNING' });
  }
  const complete = ended && folder.readJsonLines('metrics.jsonl').length === state.metric_lines;
  save({ synced: complete, last_error: undefined });
  return { runId, experimentId, complete };
}

/** Live logging for a run in progress: failures become one warning and a "not synced" mark. */
export class LiveTracker {
  private warned = false;
  constructor(
    private readonly folder: RunFolder,
    private readonly options: SyncOptions,
  ) {}

  async update(): Promise<void> {
    try {
      await syncRun(this.folder, { ...this.options, retries: this.options.retries ?? 1 });
    } catch (error) {
      markNotSynced(this.folder, this.options.trackingUri, errorMessage(error));
      if (!this.warned) {
        this.warned = true;
        this.options.log?.warn({ error: errorMessage(error) }, `MLflow logging failed; the run carries on and is marked not synced (run \`tlx sync ${this.folder.dir}\` later)`);
      }
    }
  }
}
