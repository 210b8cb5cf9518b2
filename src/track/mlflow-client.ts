import fs from 'node:fs';
import nodePath from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as wait } from 'node:timers/promises';
import { tempPathFor } from '../core/files.ts';
import { redactText, redactUrl } from '../core/redact.ts';
import { authHeader } from '../net/mlflow-artifacts.ts';
import { backoffMs as backoffDelay, isPermanentNetworkError, retryAfterMs, retryableStatus } from '../net/retry.ts';

/**
 * A small typed client for MLflow's documented REST API (/api/2.0/mlflow/...) and its
 * artifact proxy, on Node's fetch. No npm package fits: `mlflow-client` does not exist,
 * `mlflow` (npm) predates MLflow 2 and has no artifact upload, `mlflow-js` needs Node 22,
 * and `mlflow-tracing` only does GenAI traces.
 *
 * Credentials come from MLFLOW_TRACKING_TOKEN, MLFLOW_TRACKING_USERNAME/PASSWORD, or the
 * user-info of the tracking URI; they go into the Authorization header and never into a
 * message. Connection errors, 408, 429 and 5xx are retried with backoff; 401, 403, 404
 * and an unknown host are not (another attempt cannot succeed).
 */

export interface MlflowMetric {
  key: string;
  value: number;
  timestamp: number;
  step: number;
}

export interface MlflowParam {
  key: string;
  value: string;
}

export interface MlflowTag {
  key: string;
  value: string;
}

export type RunStatusName = 'RUNNING' | 'SCHEDULED' | 'FINISHED' | 'FAILED' | 'KILLED';

export class MlflowError extends Error {
  override name = 'MlflowError';
  constructor(
    message: string,
    readonly status?: number,
    readonly errorCode?: string,
  ) {
    super(message);
  }

  /** The server refused this request for good: sending it again cannot succeed (400, 409, 413, ...). */
  get refused(): boolean {
    return (
      this.status !== undefined &&
      this.status >= 400 &&
      this.status < 500 &&
      !retryableStatus.has(this.status) &&
      !this.authProblem &&
      this.status !== 404
    );
  }

  get authProblem(): boolean {
    return this.status === 401 || this.status === 403;
  }
}

export interface ClientOptions {
  trackingUri: string;
  /** Attempts after the first on connection errors, 408, 429 and 5xx. */
  retries?: number;
  backoffMs?: number;
  /** Per request; default MLFLOW_HTTP_REQUEST_TIMEOUT seconds, else 30 s. */
  timeoutMs?: number;
  /** No request (and no retry) goes on past this time (ms since 1970): a bounded sync. */
  deadline?: number;
  env?: NodeJS.ProcessEnv;
}

/** MLflow's log-batch limits. */
export const batchLimits = {
  metrics: 1000,
  params: 100,
  tags: 100,
  total: 1000,
  paramValue: 6000,
  tagValue: 8000,
} as const;

/** MLflow key rules: alphanumerics, underscores, dashes, periods, spaces, slashes; at most 250 chars. */
export function sanitizeKey(key: string): string {
  return key.replace(/[^\w\-. /]/g, '_').slice(0, 250);
}

/** Splits a batch into requests within MLflow's per-request limits. */
export function chunkBatch(
  metrics: MlflowMetric[],
  params: MlflowParam[],
  tags: MlflowTag[],
): { metrics: MlflowMetric[]; params: MlflowParam[]; tags: MlflowTag[] }[] {
  const requests: { metrics: MlflowMetric[]; params: MlflowParam[]; tags: MlflowTag[] }[] = [];
  const queue = { metrics: [...metrics], params: [...params], tags: [...tags] };
  while (queue.metrics.length || queue.params.length || queue.tags.length) {
    const p = queue.params.splice(0, batchLimits.params);
    const t = queue.tags.splice(0, batchLimits.tags);
    const m = queue.metrics.splice(0, Math.min(batchLimits.metrics, batchLimits.total - p.length - t.length));
    requests.push({ metrics: m, params: p, tags: t });
  }
  return requests;
}

export interface RunInfo {
  info: { status: string; experiment_id: string; run_name?: string; run_id: string };
  data: { metrics?: MlflowMetric[]; params?: MlflowParam[]; tags?: MlflowTag[] };
  inputs?: { dataset_inputs?: { dataset: { name: string; digest: string }; tags?: MlflowTag[] }[] };
  outputs?: { model_outputs?: { model_id: string; step: number }[] };
}

export interface DatasetInput {
  dataset: { name: string; digest: string; source_type: string; source: string; schema?: string; profile?: string };
  tags: MlflowTag[];
}

export interface LoggedModel {
  info: {
    model_id: string;
    experiment_id: string;
    name: string;
    artifact_uri: string;
    status: string;
    source_run_id?: string;
    tags?: MlflowTag[];
  };
}

export interface ModelVersion {
  name: string;
  version: string;
  source: string;
  run_id?: string;
  model_id?: string;
  tags?: MlflowTag[];
}

/** An artifact upload or download: the whole file, not one API call. */
const transferTimeoutMs = 30 * 60_000;

function artifactsApi(path: string): string {
  return `/api/2.0/mlflow-artifacts/artifacts/${path.split('/').map(encodeURIComponent).join('/')}`;
}

/** A request's timeout: MLflow's own MLFLOW_HTTP_REQUEST_TIMEOUT (seconds), as its Python client reads it; 30 s by default. */
function requestTimeoutMs(env: NodeJS.ProcessEnv = process.env): number {
  const seconds = Number(env.MLFLOW_HTTP_REQUEST_TIMEOUT);
  return Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : 30_000;
}

export class MlflowClient {
  readonly baseUrl: string;
  /** The server as it may be shown: no credentials. */
  readonly displayUrl: string;
  private readonly auth?: string;
  private readonly retries: number;
  private readonly backoffMs: number;
  private readonly timeoutMs: number;
  private readonly deadline?: number;

  constructor(options: ClientOptions) {
    const url = new URL(options.trackingUri.replace(/\/+$/, ''));
    this.auth = authHeader(options.env ?? process.env, url);
    url.username = '';
    url.password = '';
    this.baseUrl = url.toString().replace(/\/+$/, '');
    this.displayUrl = redactUrl(this.baseUrl);
    this.retries = options.retries ?? 4;
    this.backoffMs = options.backoffMs ?? 250;
    this.timeoutMs = options.timeoutMs ?? requestTimeoutMs(options.env ?? process.env);
    this.deadline = options.deadline;
  }

  private timeLeft(): number {
    return this.deadline === undefined ? this.timeoutMs : Math.min(this.timeoutMs, this.deadline - Date.now());
  }

  private async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const response = await this.send(
      method,
      path,
      body === undefined ? {} : { body: () => JSON.stringify(body), contentType: 'application/json' },
    );
    const text = await response.text();
    return (text ? JSON.parse(text) : {}) as T;
  }

  /**
   * One request with the retry policy; the OK response, its body unread. `body` makes the
   * request body again for every attempt (a file is streamed anew); `timeoutMs` replaces
   * the per-request timeout (artifact transfers take longer than API calls).
   */
  private async send(
    method: string,
    path: string,
    options: { body?: () => RequestInit['body']; contentType?: string; timeoutMs?: number },
  ): Promise<Response> {
    const url = `${this.baseUrl}${path}`;
    const headers: Record<string, string> = {
      ...(this.auth ? { Authorization: this.auth } : {}),
      ...(options.contentType ? { 'Content-Type': options.contentType } : {}),
    };
    const where = `${method} ${path.split('?')[0]}`;
    for (let attempt = 0; ; attempt++) {
      const left = options.timeoutMs ?? this.timeLeft();
      if (left <= 0)
        throw new MlflowError(
          `${where}: no time left to reach ${this.displayUrl} (tracking waits at most a second per epoch)`,
        );
      let response: Response;
      try {
        const body = options.body?.();
        response = await fetch(url, {
          method,
          headers,
          body,
          signal: AbortSignal.timeout(left),
          ...(body instanceof ReadableStream ? { duplex: 'half' } : {}),
        } as RequestInit);
      } catch (error) {
        const reason = redactText(
          error instanceof Error ? ((error.cause as Error | undefined)?.message ?? error.message) : String(error),
        );
        if (isPermanentNetworkError(error))
          throw new MlflowError(`${where}: cannot resolve the host of ${this.displayUrl} (${reason})`);
        if (attempt >= this.retries || this.timeLeft() <= 0)
          throw new MlflowError(`${where}: cannot reach ${this.displayUrl} (${reason})`);
        await this.sleep(attempt);
        continue;
      }
      if (response.ok) return response;
      const text = await response.text();
      if (retryableStatus.has(response.status) && attempt < this.retries && this.timeLeft() > 0) {
        await this.sleep(attempt, retryAfterMs(response.headers.get('retry-after')));
        continue;
      }
      throw MlflowClient.errorOf(where, response.status, text);
    }
  }

  private static errorOf(where: string, status: number, text: string): MlflowError {
    let errorCode: string | undefined;
    let message = text.slice(0, 300).replace(/\s+/g, ' ');
    try {
      const parsed = JSON.parse(text) as { error_code?: string; message?: string };
      errorCode = parsed.error_code;
      message = parsed.message?.split('\n')[0] ?? message;
    } catch {
      // not JSON (a proxy's page): keep the text
    }
    const hint =
      status === 401 || status === 403
        ? ' (check MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN)'
        : '';
    return new MlflowError(
      `${where}: HTTP ${status}${errorCode ? ` ${errorCode}` : ''}: ${redactText(message)}${hint}`,
      status,
      errorCode,
    );
  }

  private sleep(attempt: number, override?: number): Promise<void> {
    const delay = override ?? backoffDelay(this.backoffMs, attempt);
    return wait(this.deadline === undefined ? delay : Math.max(0, Math.min(delay, this.deadline - Date.now())));
  }

  private static missing(error: unknown): boolean {
    return error instanceof MlflowError && (error.errorCode === 'RESOURCE_DOES_NOT_EXIST' || error.status === 404);
  }

  async getExperimentByName(name: string): Promise<string | undefined> {
    try {
      const result = await this.request<{ experiment: { experiment_id: string } }>(
        'GET',
        `/api/2.0/mlflow/experiments/get-by-name?experiment_name=${encodeURIComponent(name)}`,
      );
      return result.experiment.experiment_id;
    } catch (error) {
      if (MlflowClient.missing(error)) return undefined;
      throw error;
    }
  }

  async setExperimentTag(experimentId: string, key: string, value: string): Promise<void> {
    await this.request('POST', '/api/2.0/mlflow/experiments/set-experiment-tag', {
      experiment_id: experimentId,
      key,
      value,
    });
  }

  /** The experiment's id, created when missing (a concurrent creation is fine). */
  async ensureExperiment(name: string, tags: MlflowTag[] = []): Promise<string> {
    const existing = await this.getExperimentByName(name);
    if (existing) return existing;
    try {
      return (
        await this.request<{ experiment_id: string }>('POST', '/api/2.0/mlflow/experiments/create', { name, tags })
      ).experiment_id;
    } catch (error) {
      if (error instanceof MlflowError && error.errorCode === 'RESOURCE_ALREADY_EXISTS') {
        const id = await this.getExperimentByName(name);
        if (id) return id;
      }
      throw error;
    }
  }

  async createRun(experimentId: string, runName: string, startTime: number, tags: MlflowTag[]): Promise<string> {
    const result = await this.request<{ run: { info: { run_id: string } } }>('POST', '/api/2.0/mlflow/runs/create', {
      experiment_id: experimentId,
      run_name: runName,
      start_time: startTime,
      tags,
    });
    return result.run.info.run_id;
  }

  async getRun(runId: string): Promise<RunInfo | undefined> {
    try {
      return (
        await this.request<{ run: RunInfo }>('GET', `/api/2.0/mlflow/runs/get?run_id=${encodeURIComponent(runId)}`)
      ).run;
    } catch (error) {
      if (MlflowClient.missing(error)) return undefined;
      throw error;
    }
  }

  /** Runs of an experiment carrying a tag value (tlx.run_id): finds a run whose creation a crash did not record. */
  async findRunsByTag(experimentId: string, key: string, value: string): Promise<RunInfo[]> {
    const filter = `tags.\`${key}\` = '${value.replace(/'/g, "\\'")}'`;
    return (
      (
        await this.request<{ runs?: RunInfo[] }>('POST', '/api/2.0/mlflow/runs/search', {
          experiment_ids: [experimentId],
          filter,
          max_results: 10,
        })
      ).runs ?? []
    );
  }

  async updateRun(runId: string, status: RunStatusName, endTime?: number, runName?: string): Promise<void> {
    await this.request('POST', '/api/2.0/mlflow/runs/update', {
      run_id: runId,
      status,
      ...(endTime ? { end_time: endTime } : {}),
      ...(runName ? { run_name: runName } : {}),
    });
  }

  async logBatch(
    runId: string,
    metrics: MlflowMetric[],
    params: MlflowParam[] = [],
    tags: MlflowTag[] = [],
  ): Promise<void> {
    const clean = {
      metrics: metrics.filter((m) => Number.isFinite(m.value)).map((m) => ({ ...m, key: sanitizeKey(m.key) })),
      params: params.map((p) => ({ key: sanitizeKey(p.key), value: p.value.slice(0, batchLimits.paramValue) })),
      tags: tags.map((t) => ({ key: sanitizeKey(t.key), value: t.value.slice(0, batchLimits.tagValue) })),
    };
    for (const chunk of chunkBatch(clean.metrics, clean.params, clean.tags)) {
      await this.request('POST', '/api/2.0/mlflow/runs/log-batch', { run_id: runId, ...chunk });
    }
  }

  async logInputs(runId: string, datasets: DatasetInput[]): Promise<void> {
    await this.request('POST', '/api/2.0/mlflow/runs/log-inputs', { run_id: runId, datasets });
  }

  /** Uploads one file through the tracking server's artifact proxy, under a run or a logged model. */
  async uploadArtifact(artifactRoot: string, artifactPath: string, file: string): Promise<void> {
    await this.putArtifact(`${artifactRoot}/${artifactPath}`, file);
  }

  /** Streams a file to `path` in the artifact store (the proxy's root: `mlflow-artifacts:/<path>`). */
  async putArtifact(path: string, file: string): Promise<void> {
    const response = await this.send('PUT', artifactsApi(path), {
      body: () => Readable.toWeb(fs.createReadStream(file)) as ReadableStream,
      contentType: 'application/octet-stream',
      timeoutMs: transferTimeoutMs,
    });
    await response.body?.cancel();
  }

  /** Downloads `path` of the artifact store to `target` (whole or absent); false when the store has no such file. */
  async getArtifact(path: string, target: string): Promise<boolean> {
    let response: Response;
    try {
      response = await this.send('GET', artifactsApi(path), { timeoutMs: transferTimeoutMs });
    } catch (error) {
      if (MlflowClient.missing(error)) return false;
      throw error;
    }
    const temp = tempPathFor(target);
    fs.mkdirSync(nodePath.dirname(target), { recursive: true });
    try {
      await pipeline(
        Readable.fromWeb(response.body as import('node:stream/web').ReadableStream<Uint8Array>),
        fs.createWriteStream(temp),
      );
      fs.renameSync(temp, target);
    } finally {
      fs.rmSync(temp, { force: true });
    }
    return true;
  }

  /** Removes `path` from the artifact store (a file, or a folder with all it holds). */
  async deleteArtifact(path: string): Promise<void> {
    await (await this.send('DELETE', artifactsApi(path), {})).body?.cancel();
  }

  /** The files directly under `path` in the artifact store ([] when there is none). */
  async listArtifacts(path: string): Promise<{ path: string; is_dir: boolean; file_size?: number }[]> {
    return (
      (
        await this.request<{ files?: { path: string; is_dir: boolean; file_size?: number }[] }>(
          'GET',
          `/api/2.0/mlflow-artifacts/artifacts?path=${encodeURIComponent(path)}`,
        )
      ).files ?? []
    );
  }

  async logArtifact(experimentId: string, runId: string, artifactPath: string, file: string): Promise<void> {
    await this.uploadArtifact(`${experimentId}/${runId}/artifacts`, artifactPath, file);
  }

  async createLoggedModel(
    experimentId: string,
    name: string,
    sourceRunId: string,
    params: MlflowParam[],
    tags: MlflowTag[],
  ): Promise<LoggedModel> {
    return (
      await this.request<{ model: LoggedModel }>('POST', '/api/2.0/mlflow/logged-models', {
        experiment_id: experimentId,
        name,
        model_type: 'tflite',
        source_run_id: sourceRunId,
        params,
        tags,
      })
    ).model;
  }

  async getLoggedModel(modelId: string): Promise<LoggedModel | undefined> {
    try {
      return (
        await this.request<{ model: LoggedModel }>(
          'GET',
          `/api/2.0/mlflow/logged-models/${encodeURIComponent(modelId)}`,
        )
      ).model;
    } catch (error) {
      if (MlflowClient.missing(error)) return undefined;
      throw error;
    }
  }

  /** Logged models of an experiment whose tags include all of these. */
  async findLoggedModels(experimentId: string, tags: MlflowTag[]): Promise<LoggedModel[]> {
    const result = await this.request<{ models?: LoggedModel[] }>('POST', '/api/2.0/mlflow/logged-models/search', {
      experiment_ids: [experimentId],
      max_results: 100,
    });
    return (result.models ?? []).filter((model) =>
      tags.every((tag) => model.info.tags?.some((t) => t.key === tag.key && t.value === tag.value)),
    );
  }

  async finalizeLoggedModel(modelId: string): Promise<void> {
    await this.request('PATCH', `/api/2.0/mlflow/logged-models/${encodeURIComponent(modelId)}`, {
      model_id: modelId,
      status: 'LOGGED_MODEL_READY',
    });
  }

  async logOutputs(runId: string, models: { model_id: string; step: number }[]): Promise<void> {
    await this.request('POST', '/api/2.0/mlflow/runs/outputs', { run_id: runId, models });
  }

  async ensureRegisteredModel(name: string): Promise<void> {
    try {
      await this.request('POST', '/api/2.0/mlflow/registered-models/create', { name });
    } catch (error) {
      if (!(error instanceof MlflowError && error.errorCode === 'RESOURCE_ALREADY_EXISTS')) throw error;
    }
  }

  async createModelVersion(
    name: string,
    source: string,
    runId: string,
    modelId: string,
    tags: MlflowTag[],
  ): Promise<ModelVersion> {
    return (
      await this.request<{ model_version: ModelVersion }>('POST', '/api/2.0/mlflow/model-versions/create', {
        name,
        source,
        run_id: runId,
        model_id: modelId,
        tags,
      })
    ).model_version;
  }

  async searchModelVersions(filter: string): Promise<ModelVersion[]> {
    return (
      (
        await this.request<{ model_versions?: ModelVersion[] }>(
          'GET',
          `/api/2.0/mlflow/model-versions/search?filter=${encodeURIComponent(filter)}&max_results=200`,
        )
      ).model_versions ?? []
    );
  }
}
