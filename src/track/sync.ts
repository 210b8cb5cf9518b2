import path from 'node:path';
import { CorruptFileError } from '../core/files.ts';
import { canonicalJson, sha256Hex } from '../core/hash.ts';
import { silentLogger, type Logger } from '../core/log.ts';
import { redactText, redactUrl } from '../core/redact.ts';
import type { ResolvedExperiment } from '../config/resolved.ts';
import type {
  DatasetJson,
  EpochRecord,
  MlflowJson,
  Refusal,
  RunJson,
  RunSummary,
  ServerState,
  TfliteRecord,
} from '../run-folder/records.ts';
import { shortRunName, type RunFolder } from '../run-folder/run-folder.ts';
import { defaultView, defaultViewKey, saveRunsView } from './views.ts';
import { SweepParentRun } from './sweep-parent.ts';
import { SweepFolder } from '../run-folder/sweep-folder.ts';
import {
  MlflowClient,
  MlflowError,
  type DatasetInput,
  type MlflowMetric,
  type MlflowParam,
  type MlflowTag,
  type RunStatusName,
} from './mlflow-client.ts';

/**
 * Pushes a local run folder (the source of truth) to an MLflow server, idempotently:
 * what was sent is remembered per server in the folder's mlflow.json; metric points carry
 * the timestamp they were recorded with (a resend is the same point, which MLflow stores
 * once); artifacts are uploaded again only when they changed; the MLflow run, its dataset
 * inputs, its logged model and its registered model version are each created once. Live
 * logging during a run and `tlx sync` afterwards are the same operation.
 *
 * Each kind (params, dataset, metrics, artifacts, model, status) goes on its own: a
 * request the server refuses for good (a 4xx: a changed param, a proxy's 413) is recorded
 * in mlflow.json with the reason and the rest still goes out, the run's status included.
 */

const phaseCodes: Record<string, number> = { initial: 0, feature_extraction: 1, fine_tune: 2 };

/** The resolved config as dotted keys: train.fine_tune.fine_tune_at = 100. */
export function flattenParams(value: unknown, prefix = ''): MlflowParam[] {
  if (value === null || value === undefined) return [];
  if (typeof value === 'object' && !Array.isArray(value)) {
    return Object.entries(value as Record<string, unknown>).flatMap(([key, child]) =>
      flattenParams(child, prefix ? `${prefix}.${key}` : key),
    );
  }
  return [{ key: prefix, value: Array.isArray(value) ? JSON.stringify(value) : String(value) }];
}

function epochMetrics(line: EpochRecord): MlflowMetric[] {
  const timestamp = line.time ?? 0;
  const metrics: MlflowMetric[] = [{ key: 'phase', value: phaseCodes[line.phase] ?? -1, timestamp, step: line.epoch }];
  for (const key of ['loss', 'accuracy', 'val_loss', 'val_accuracy', 'learning_rate', 'seconds'] as const) {
    const value = line[key];
    if (typeof value === 'number' && Number.isFinite(value))
      metrics.push({ key: key === 'seconds' ? 'epoch_seconds' : key, value, timestamp, step: line.epoch });
  }
  return metrics;
}

function finalMetrics(summary: RunSummary, lastEpoch: number): MlflowMetric[] {
  const timestamp = summary.finished_at ?? 0;
  const metrics: MlflowMetric[] = [];
  const add = (key: string, value: number | undefined) => {
    if (typeof value === 'number' && Number.isFinite(value)) metrics.push({ key, value, timestamp, step: lastEpoch });
  };
  const final = summary.metrics?.final;
  add('test_loss', final?.test_loss);
  add('test_accuracy', final?.test_accuracy);
  add('test_accuracy_ci95_low', final?.test_accuracy_ci95?.[0]);
  add('test_accuracy_ci95_high', final?.test_accuracy_ci95?.[1]);
  add('final_val_loss', final?.val_loss);
  add('final_val_accuracy', final?.val_accuracy);
  add('best_val_accuracy', summary.metrics?.best_val_accuracy);
  add('final_weights_epoch', summary.final_weights?.epoch);
  const exports = [
    ...(summary.export?.tflite ? [summary.export.tflite] : []),
    ...Object.values(summary.export?.tflite_modes ?? {}),
  ];
  for (const record of exports) {
    const mode = record.quantization;
    add(`tflite_${mode}_bytes`, record.bytes);
    add(`tflite_${mode}_accuracy`, record.accuracy);
    add(`tflite_${mode}_accuracy_ci95_low`, record.accuracy_ci95?.[0]);
    add(`tflite_${mode}_accuracy_ci95_high`, record.accuracy_ci95?.[1]);
    add(`tflite_${mode}_gate_p_value`, record.gate?.p_value);
    add(`tflite_${mode}_accuracy_nearest_resize`, record.accuracy_nearest_resize);
    add(`tflite_${mode}_latency_ms`, record.median_latency_ms);
    add(`tflite_${mode}_params`, record.params);
    add(`tflite_${mode}_macs_per_image`, record.macs_per_image);
    add(`tflite_${mode}_host_latency_ms_1_thread`, record.host_latency_ms?.threads_1);
    add(`tflite_${mode}_host_latency_ms_4_threads`, record.host_latency_ms?.threads_4);
    add(`tflite_${mode}_peak_memory_bytes`, record.peak_memory_bytes);
    add(`tflite_${mode}_mediapipe_accuracy`, (record.mediapipe as { accuracy?: number } | undefined)?.accuracy);
    add(`tflite_${mode}_verified`, record.status === 'verified' ? 1 : 0);
  }
  return metrics;
}

/** What a person sees in MLflow's runs table: the experiment's name and a short id, or a trial's swept values. */
function runNameOf(folder: RunFolder, run: RunJson): string {
  if (run.trial && Object.keys(run.trial).length > 0) {
    return Object.entries(run.trial)
      .map(([key, value]) => `${key.split('.').pop()}=${typeof value === 'string' ? value : JSON.stringify(value)}`)
      .join(' ');
  }
  return shortRunName(folder.id);
}

/**
 * The run's data as MLflow dataset inputs, one per split (the runs table's Dataset column):
 * MLflow keeps a dataset once per run, so each split is its own dataset (<name>-<split>),
 * all with the data's digest and with their context tag.
 */
function datasetInputs(dataset: DatasetJson): DatasetInput[] {
  const name = dataset.name ?? path.basename(dataset.url ?? dataset.root);
  const source = dataset.url
    ? { source_type: 'http', source: JSON.stringify({ url: dataset.url }) }
    : { source_type: 'local', source: JSON.stringify({ uri: dataset.root }) };
  const schema = JSON.stringify({
    mlflow_colspec: [
      { type: 'binary', name: 'image' },
      { type: 'string', name: 'label' },
    ],
  });
  return (['train', 'validation', 'test'] as const)
    .filter((split) => dataset.counts[split] > 0)
    .map((split) => ({
      dataset: {
        name: `${name}-${split}`,
        digest: (dataset.digest ?? dataset.archive_sha256 ?? 'unknown').slice(0, 36),
        ...source,
        schema,
        profile: JSON.stringify({ num_rows: dataset.counts[split], classes: dataset.classes }),
      },
      tags: [{ key: 'mlflow.data.context', value: split === 'train' ? 'training' : split }],
    }));
}

export interface SyncOptions {
  trackingUri: string;
  experimentName?: string;
  /** Parent run (sweeps): tagged as mlflow.parentRunId. */
  parentRunId?: string;
  log?: Logger;
  retries?: number;
  timeoutMs?: number;
  /** Bound the whole sync (live logging: training waits at most a second per epoch). */
  deadline?: number;
  /** Upload artifacts and the logged model (default: once the run has ended). */
  artifacts?: boolean;
  /** Register the exported model (tracking.mlflow.register_model); a sweep registers only its best trial. */
  register?: boolean;
  /** Check that the server still has the run before sending (off for repeated live updates). */
  verifyRun?: boolean;
}

export interface SyncResult {
  runId: string;
  experimentId: string;
  complete: boolean;
  /** Everything this server refused for good, in this sync or an earlier one. */
  refused: Refusal[];
  /** What it refused in this sync. */
  newlyRefused: Refusal[];
}

function ended(status: string): boolean {
  return ['FINISHED', 'FAILED', 'KILLED'].includes(status);
}

/** The tracking URI a run logs to: the config's, else $MLFLOW_TRACKING_URI. */
export function trackingUriFor(config: ResolvedExperiment): string | undefined {
  return config.tracking.mlflow?.tracking_uri ?? (process.env.MLFLOW_TRACKING_URI || undefined);
}

class ServerSync {
  readonly refusals: Refusal[] = [];
  state: ServerState;

  constructor(
    private readonly folder: RunFolder,
    private readonly mlflow: MlflowJson,
    private readonly uri: string,
    initial: ServerState,
  ) {
    this.state = initial;
  }

  save(patch: Partial<ServerState>): void {
    this.state = { ...this.state, ...patch, updated: new Date().toISOString() };
    this.mlflow.servers[this.uri] = this.state;
    delete this.mlflow.pending[this.uri];
    this.folder.writeMlflow(this.mlflow);
  }

  private refusedBefore(kind: string, item: string): boolean {
    return this.state.refused.some((r) => r.kind === kind && r.item === item);
  }

  /** Runs a request; a refusal for good is recorded (once) and reported as false. */
  async attempt(kind: string, item: string, send: () => Promise<void>): Promise<boolean> {
    if (this.refusedBefore(kind, item)) return false;
    try {
      await send();
      return true;
    } catch (error) {
      if (!(error instanceof MlflowError && error.refused)) throw error;
      const refusal: Refusal = {
        kind,
        item,
        status: error.status,
        message: redactText(error.message),
        at: new Date().toISOString(),
      };
      this.refusals.push(refusal);
      this.save({ refused: [...this.state.refused, refusal] });
      return false;
    }
  }
}

async function createOrFindRun(
  client: MlflowClient,
  folder: RunFolder,
  run: RunJson,
  config: ResolvedExperiment,
  options: SyncOptions,
  log: Logger,
): Promise<{ experimentId: string; runId: string }> {
  const experimentName = options.experimentName ?? config.tracking.mlflow?.experiment ?? config.name;
  const experimentId = await client.ensureExperiment(experimentName, [
    { key: 'mlflow.experimentKind', value: 'custom_model_development' },
  ]);
  await saveRunsView(client, experimentId, defaultViewKey, defaultView);
  // A crash between creating the run and recording it left a run with our id: adopt it.
  const existing = (await client.findRunsByTag(experimentId, 'tlx.run_id', folder.id))[0];
  if (existing) return { experimentId, runId: existing.info.run_id };
  const dataset = folder.readDataset();
  const tags: MlflowTag[] = [
    { key: 'mlflow.runName', value: runNameOf(folder, run) },
    { key: 'mlflow.source.name', value: run.experiment_file ? path.basename(run.experiment_file) : 'tlx' },
    { key: 'mlflow.source.type', value: 'LOCAL' },
    { key: 'tlx.run_id', value: folder.id },
    { key: 'tlx.config_sha256', value: run.config_sha256 },
    { key: 'tlx.version', value: run.tlx_version },
    // Local paths are tags, never params: they are facts about this machine, not the experiment.
    { key: 'tlx.run_dir', value: folder.dir },
    ...(dataset ? [{ key: 'tlx.data_root', value: dataset.root }] : []),
    ...Object.entries(run.tags ?? {}).map(([key, value]) => ({ key, value })),
    ...(options.parentRunId ? [{ key: 'mlflow.parentRunId', value: options.parentRunId }] : []),
    ...(run.sweep ? [{ key: 'tlx.sweep_id', value: run.sweep.id }] : []),
  ];
  const runId = await client.createRun(experimentId, runNameOf(folder, run), Date.parse(run.created), tags);
  log.info({ mlflow_run: runId, experiment: experimentName, server: client.displayUrl }, 'MLflow run created');
  return { experimentId, runId };
}

/** Params: the resolved config and the data facts; on a refusal, each param alone (the rest still arrives). */
async function syncParams(
  sync: ServerSync,
  client: MlflowClient,
  config: ResolvedExperiment,
  dataset: DatasetJson | undefined,
  runId: string,
): Promise<void> {
  const params = [
    ...flattenParams(config),
    ...(dataset
      ? flattenParams(
          {
            class_count: dataset.class_count,
            classes: dataset.classes,
            counts: dataset.counts,
            storage: dataset.storage,
            skipped: dataset.skipped,
            digest: dataset.digest,
          },
          'data',
        )
      : []),
  ];
  const hash = sha256Hex(canonicalJson(params));
  if (sync.state.params_sent === hash) return;
  try {
    await client.logBatch(runId, [], params);
  } catch (error) {
    if (!(error instanceof MlflowError && error.refused)) throw error;
    // One refused param refuses its whole batch: send them one by one, so the rest arrives.
    for (const param of params)
      await sync.attempt('param', `${param.key}=${param.value.slice(0, 60)}`, () =>
        client.logBatch(runId, [], [param]),
      );
  }
  sync.save({ params_sent: hash });
}

async function syncDataset(
  sync: ServerSync,
  client: MlflowClient,
  dataset: DatasetJson | undefined,
  runId: string,
): Promise<void> {
  if (!dataset?.digest || sync.state.dataset_input === dataset.digest) return;
  await sync.attempt('dataset', dataset.digest, () => client.logInputs(runId, datasetInputs(dataset)));
  sync.save({ dataset_input: dataset.digest });
}

async function syncMetrics(
  sync: ServerSync,
  client: MlflowClient,
  folder: RunFolder,
  runId: string,
): Promise<EpochRecord[]> {
  const records = folder.readMetrics().records;
  if (records.length > sync.state.metric_lines) {
    const fresh = records.slice(sync.state.metric_lines);
    await sync.attempt('metrics', `epochs ${fresh[0].epoch}..${fresh.at(-1)!.epoch}`, () =>
      client.logBatch(runId, fresh.flatMap(epochMetrics)),
    );
    sync.save({ metric_lines: records.length });
  }
  if (folder.hasSummary()) {
    const final = finalMetrics(folder.readSummary(), records.at(-1)?.epoch ?? 0);
    const hash = sha256Hex(canonicalJson(final));
    if (final.length > 0 && sync.state.final_metrics_sent !== hash) {
      await sync.attempt('metrics', 'final', () => client.logBatch(runId, final));
      sync.save({ final_metrics_sent: hash });
    }
  }
  return records;
}

async function syncArtifacts(
  sync: ServerSync,
  client: MlflowClient,
  folder: RunFolder,
  experimentId: string,
  runId: string,
): Promise<void> {
  for (const file of folder.artifactFiles()) {
    const print = folder.fingerprint(file);
    if (sync.state.artifacts[file] === print) continue;
    if (
      await sync.attempt('artifact', `${file}@${print}`, () =>
        client.logArtifact(experimentId, runId, file, folder.pathOf(file)),
      )
    ) {
      sync.save({ artifacts: { ...sync.state.artifacts, [file]: print } });
    }
  }
}

/** The exported TFLite file as an MLflow 3 logged model of the run (with labels and card), and a registry version when asked. */
type LoggedModelState = NonNullable<ServerState['logged_model']>;

/** The export as an MLflow 3 logged model of the run (found again by its tags after a crash), with its files; undefined while an upload is pending. */
async function logTfliteModel(
  sync: ServerSync,
  client: MlflowClient,
  folder: RunFolder,
  target: { config: ResolvedExperiment; experimentId: string; runId: string; lastEpoch: number },
  tflite: TfliteRecord,
  source: string,
): Promise<LoggedModelState | undefined> {
  const { config, experimentId, runId, lastEpoch } = target;
  const tags = [
    { key: 'tlx.run_id', value: folder.id },
    { key: 'tlx.source', value: source },
  ];
  const found = (await client.findLoggedModels(experimentId, tags))[0];
  const params = [
    { key: 'quantization', value: tflite.quantization },
    { key: 'io_type', value: tflite.io_type },
    { key: 'bytes', value: String(tflite.bytes) },
  ];
  const model =
    found ??
    (await client.createLoggedModel(experimentId, `${config.name}-tflite-${tflite.quantization}`, runId, params, [
      ...tags,
      { key: 'tlx.format', value: 'tflite' },
    ]));
  const root = model.info.artifact_uri.replace(/^mlflow-artifacts:\/+/, '');
  let uploaded = true;
  for (const file of ['model.tflite', 'labels.txt', 'model-card.md', 'model-card.json']) {
    uploaded =
      (await sync.attempt('model', `${file}@${folder.fingerprint(file)}`, () =>
        client.uploadArtifact(root, file, folder.pathOf(file)),
      )) && uploaded;
  }
  if (!uploaded) return undefined;
  if (model.info.status !== 'LOGGED_MODEL_READY') await client.finalizeLoggedModel(model.info.model_id);
  // MLflow stores a second identical output as a conflict (HTTP 400): look before logging.
  const outputs = (await client.getRun(runId))?.outputs?.model_outputs ?? [];
  if (!outputs.some((output) => output.model_id === model.info.model_id))
    await client.logOutputs(runId, [{ model_id: model.info.model_id, step: lastEpoch }]);
  return { model_id: model.info.model_id, source, finalized: true };
}

/** A version of the logged model in the registry under `name` (a version made before a crash is adopted, not made twice). */
async function registerTfliteModel(
  sync: ServerSync,
  client: MlflowClient,
  folder: RunFolder,
  name: string,
  runId: string,
  logged: LoggedModelState,
  summary: RunSummary,
  tflite: TfliteRecord,
): Promise<void> {
  await sync.attempt('registry', `${name}@${logged.model_id}`, async () => {
    await client.ensureRegisteredModel(name);
    const existing = (
      await client.searchModelVersions(`name='${name.replace(/'/g, "\\'")}' and run_id='${runId}'`)
    ).find((v) => v.model_id === logged.model_id || v.source === `models:/${logged.model_id}`);
    const version =
      existing ??
      (await client.createModelVersion(name, `models:/${logged.model_id}`, runId, logged.model_id, [
        { key: 'test_accuracy', value: String(summary.metrics.final?.test_accuracy ?? '') },
        { key: 'tflite_accuracy', value: String(tflite.accuracy ?? '') },
        { key: 'quantization', value: tflite.quantization },
        { key: 'bytes', value: String(tflite.bytes) },
        { key: 'tlx.run_id', value: folder.id },
      ]));
    sync.save({ model_version: { name, version: String(version.version), source: logged.model_id } });
  });
}

async function syncModel(
  sync: ServerSync,
  client: MlflowClient,
  folder: RunFolder,
  config: ResolvedExperiment,
  experimentId: string,
  runId: string,
  lastEpoch: number,
  register: boolean,
): Promise<void> {
  if (!folder.hasSummary()) return;
  const summary = folder.readSummary();
  const tflite = summary.export?.tflite;
  if (!tflite || tflite.status !== 'verified') return;
  const source = folder.fingerprint('model.tflite');
  let logged = sync.state.logged_model;
  if (!logged || logged.source !== source || !logged.finalized) {
    logged = await logTfliteModel(sync, client, folder, { config, experimentId, runId, lastEpoch }, tflite, source);
    if (!logged) return;
    sync.save({ logged_model: logged });
  }
  const name = config.tracking.mlflow?.register_model;
  if (!register || !name || sync.state.model_version?.source === logged.model_id) return;
  await registerTfliteModel(sync, client, folder, name, runId, logged, summary, tflite);
}

/**
 * What this folder already sent to the server that holds this MLflow run. The URL is only a
 * hint: `tlx ui` picks a new port each time over the same store, and localhost, 127.0.0.1
 * or a trailing slash reach one server. MLflow run ids are unique, so a state recorded under
 * another spelling with the same run id is this server's: adopt it rather than send again.
 */
function serverStateFor(mlflow: MlflowJson, run: { experimentId: string; runId: string }): ServerState {
  // The newest record: an older spelling's stops where that spelling was last used.
  const known = Object.values(mlflow.servers)
    .filter((state) => state.run_id === run.runId)
    .sort((a, b) => b.updated.localeCompare(a.updated))[0];
  if (known) return { ...known, refused: [...known.refused] };
  return {
    experiment_id: run.experimentId,
    run_id: run.runId,
    metric_lines: 0,
    artifacts: {},
    synced: false,
    refused: [],
    updated: new Date().toISOString(),
  };
}

export async function syncRun(folder: RunFolder, options: SyncOptions): Promise<SyncResult> {
  const log = options.log ?? silentLogger;
  const uri = redactUrl(options.trackingUri);
  const client = new MlflowClient({
    trackingUri: options.trackingUri,
    retries: options.retries,
    timeoutMs: options.timeoutMs,
    deadline: options.deadline,
  });
  const run = folder.readRun();
  const config = folder.readConfig();
  let mlflow: MlflowJson;
  try {
    mlflow = folder.readMlflow();
  } catch (error) {
    if (!(error instanceof CorruptFileError)) throw error;
    // A power cut can leave it empty; the run on the server is found again by its tlx.run_id tag.
    log.warn(
      { error: error.message },
      'mlflow.json is unreadable; starting its record again (nothing on the server is duplicated)',
    );
    mlflow = { servers: {}, pending: {} };
  }
  let state: ServerState | undefined = mlflow.servers[uri];
  if (state && options.verifyRun !== false && !(await client.getRun(state.run_id))) state = undefined; // the server lost it: start over
  state ??= serverStateFor(mlflow, await createOrFindRun(client, folder, run, config, options, log));
  const sync = new ServerSync(folder, mlflow, uri, state);
  sync.save({});
  const { run_id: runId, experiment_id: experimentId } = sync.state;
  const dataset = folder.readDataset();
  await syncParams(sync, client, config, dataset, runId);
  await syncDataset(sync, client, dataset, runId);
  const records = await syncMetrics(sync, client, folder, runId);
  const done = ended(run.status);
  if (options.artifacts ?? done) {
    await syncArtifacts(sync, client, folder, experimentId, runId);
    if (done)
      await syncModel(
        sync,
        client,
        folder,
        config,
        experimentId,
        runId,
        records.at(-1)?.epoch ?? 0,
        options.register ?? true,
      );
  }
  const status: RunStatusName = done ? (run.status as RunStatusName) : 'RUNNING';
  if (sync.state.status !== status) {
    await sync.attempt('status', status, () =>
      client.updateRun(runId, status, done ? Date.parse(run.ended ?? run.updated) : undefined, runNameOf(folder, run)),
    );
    sync.save({ status });
  }
  const complete = done && records.length === sync.state.metric_lines;
  sync.save({ synced: complete, last_error: undefined });
  return { runId, experimentId, complete, refused: sync.state.refused, newlyRefused: sync.refusals };
}

/** Marks a run as not synced to this server after a failure, keeping what was sent. Never throws. */
export function markNotSynced(folder: RunFolder, trackingUri: string, error: string, log: Logger): void {
  try {
    const uri = redactUrl(trackingUri);
    const mlflow = folder.readMlflow();
    const updated = new Date().toISOString();
    const message = redactText(error);
    if (mlflow.servers[uri])
      mlflow.servers[uri] = { ...mlflow.servers[uri], synced: false, last_error: message, updated };
    else mlflow.pending[uri] = { synced: false, last_error: message, updated };
    folder.writeMlflow(mlflow);
  } catch (problem) {
    log.warn(
      { error: redactText(problem instanceof Error ? problem.message : String(problem)) },
      'could not record the MLflow sync state',
    );
  }
}

export interface FolderSyncResult {
  dir: string;
  runId?: string;
  complete: boolean;
  refused: Refusal[];
  skipped?: string;
  error?: string;
}

/**
 * Syncs several run folders, each under its lock: a run that another process holds (it is
 * training, and its own tracker syncs it) is skipped with the reason.
 */
export async function syncFolders(folders: RunFolder[], trackingUri: string, log: Logger): Promise<FolderSyncResult[]> {
  const results: FolderSyncResult[] = [];
  const parents = new Map<string, SweepParentRun | undefined>();
  for (const folder of folders) {
    try {
      folder.lock();
    } catch (error) {
      results.push({
        dir: folder.dir,
        complete: false,
        refused: [],
        skipped: error instanceof Error ? error.message : String(error),
      });
      continue;
    }
    try {
      const parentRunId = await sweepParentFor(folder, trackingUri, parents, log);
      const result = await syncRun(folder, { trackingUri, log, parentRunId });
      results.push({ dir: folder.dir, runId: result.runId, complete: result.complete, refused: result.refused });
    } catch (error) {
      const message = redactText(error instanceof Error ? error.message : String(error));
      markNotSynced(folder, trackingUri, message, log);
      log.error({ run: folder.id, error: message }, 'sync failed');
      results.push({ dir: folder.dir, complete: false, refused: [], error: message });
    } finally {
      folder.unlock();
    }
  }
  for (const [dir, parent] of parents) {
    const outcome = parent ? SweepFolder.fromDir(dir).readResults() : undefined;
    if (parent && outcome) await parent.finish(outcome.best, outcome.failed);
  }
  return results;
}

/** A sweep trial's MLflow parent run on this server (made from its sweep folder), once per sweep. */
async function sweepParentFor(
  folder: RunFolder,
  trackingUri: string,
  parents: Map<string, SweepParentRun | undefined>,
  log: Logger,
): Promise<string | undefined> {
  const run = folder.readRun();
  if (!run.sweep) return undefined;
  if (!parents.has(run.sweep.dir)) {
    const sweep = SweepFolder.fromDir(run.sweep.dir);
    const config = folder.readConfig();
    parents.set(
      run.sweep.dir,
      sweep.exists()
        ? await SweepParentRun.open(sweep, {
            trackingUri,
            experimentName: config.tracking.mlflow?.experiment ?? config.name,
            sweepName: config.name,
            grid: sweep.readPlan().grid,
            metric: sweep.readPlan().metric,
            log,
          })
        : undefined,
    );
  }
  return parents.get(run.sweep.dir)?.runId;
}
