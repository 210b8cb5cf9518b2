import fs from 'node:fs';
import { backoffMs as backoffDelay, retryAfterMs, retryableStatus, sleep } from '../http-retry.ts';

/**
 * A small typed client for MLflow's documented REST API (/api/2.0/mlflow/...) and its
 * artifact proxy, on Node's fetch. No npm package fits: `mlflow-client` does not exist,
 * `mlflow` (npm) predates MLflow 2 and has no artifact upload, `mlflow-js` needs Node 22,
 * and `mlflow-tracing` only does GenAI traces.
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
}

export interface ClientOptions {
  trackingUri: string;
  /** Attempts after the first on connection errors, 408, 429 and 5xx. */
  retries?: number;
  backoffMs?: number;
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

/** MLflow's log-batch limits. */
export const batchLimits = { metrics: 1000, params: 100, tags: 100, total: 1000, paramValue: 6000, tagValue: 8000 } as const;

/** MLflow key rules: alphanumerics, underscores, dashes, periods, spaces, slashes; at most 250 chars. */
export function sanitizeKey(key: string): string {
  return key.replace(/[^\w\-. /]/g, '_').slice(0, 250);
}

function authHeader(env: NodeJS.ProcessEnv): string | undefined {
  if (env.MLFLOW_TRACKING_TOKEN) return `Bearer ${env.MLFLOW_TRACKING_TOKEN}`;
  if (env.MLFLOW_TRACKING_USERNAME && env.MLFLOW_TRACKING_PASSWORD) {
    return `Basic ${Buffer.from(`${env.MLFLOW_TRACKING_USERNAME}:${env.MLFLOW_TRACKING_PASSWORD}`).toString('base64')}`;
  }
  return undefined;
}


/** Splits a batch into requests within MLflow's per-request limits. */
export function chunkBatch(metrics: MlflowMetric[], params: MlflowParam[], tags: MlflowTag[]): { metrics: MlflowMetric[]; params: MlflowParam[]; tags: MlflowTag[] }[] {
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

export class MlflowClient {
  readonly baseUrl: string;
  private readonly auth?: string;
  private readonly retries: number;
  private readonly backoffMs: number;
  private readonly timeoutMs: number;

  constructor(options: ClientOptions) {
    this.baseUrl = options.trackingUri.replace(/\/+$/, '');
    this.auth = authHeader(options.env ?? process.env);
    this.retries = options.retries ?? 4;
    this.backoffMs = options.backoffMs ?? 250;
    this.timeoutMs = options.timeoutMs ?? 30_000;
  }

  private async request<T>(method: string, path: string, body?: unknown, raw?: Buffer): Promise<T> {
    const url = `${this.baseUrl}${path}`;
    const headers: Record<string, string> = { ...(this.auth ? { Authorization: this.auth } : {}) };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (raw) headers['Content-Type'] = 'application/octet-stream';
    for (let attempt = 0; ; attempt++) {
      let response: Response;
      try {
        response = await fetch(url, { method, headers, body: raw ?? (body === undefined ? undefined : JSON.stringify(body)), signal: AbortSignal.timeout(this.timeoutMs) });
      } catch (error) {
        if (attempt >= this.retries) throw new MlflowError(`${method} ${path}: cannot reach ${this.baseUrl} (${error instanceof Error ? (error.cause as Error | undefined)?.message ?? error.message : String(error)})`);
        await this.sleep(attempt);
        continue;
      }
      if (response.ok) {
        const text = await response.text();
        return (text ? JSON.parse(text) : {}) as T;
      }
      const text = await response.text();
      if (retryableStatus.has(response.status) && attempt < this.retries) {
        await this.sleep(attempt, retryAfterMs(response.headers.get('retry-after')));
        continue;
      }
      let errorCode: string | undefined;
      let message = text.slice(0, 500);
      try {
        const parsed = JSON.parse(text) as { error_code?: string; message?: string };
        errorCode = parsed.error_code;
        message = parsed.message?.split('\n')[0] ?? message;
      } catch {
        // not JSON: keep the text
      }
      throw new MlflowError(`${method} ${path}: HTTP ${response.status}${errorCode ? ` ${errorCode}` : ''}: ${message}`, response.status, errorCode);
    }
  }

  private sleep(attempt: number, override?: number): Promise<void> {
    return sleep(override ?? backoffDelay(this.backoffMs, attempt));
  }

  async getExperimentByName(name: string): Promise<string | undefined> {
    try {
      const result = await this.request<{ experiment: { experiment_id: string } }>('GET', `/api/2.0/mlflow/experiments/get-by-name?experiment_name=${encodeURIComponent(name)}`);
      return result.experiment.experiment_id;
    } catch (error) {
      if (error instanceof MlflowError && error.errorCode === 'RESOURCE_DOES_NOT_EXIST') return undefined;
      throw error;
    }
  }

  async setExperimentTag(experimentId: string, key: string, value: string): Promise<void> {
    await this.request('POST', '/api/2.0/mlflow/experiments/set-experiment-tag', { experiment_id: experimentId, key, value });
  }

  /**
   * The experiment's id, created when missing (a concurrent creation is fine). A created
   * experiment is tagged as model training, so MLflow 3's UI opens it on its runs table.
   */
  async ensureExperiment(name: string): Promise<string> {
    const existing = await this.getExperimentByName(name);
    if (existing) return existing;
    try {
      const created = (await this.request<{ experiment_id: string }>('POST', '/api/2.0/mlflow/experiments/create', { name, tags: [{ key: 'mlflow.experimentKind', value: 'custom_model_development' }] })).experiment_id;
      return created;
    } catch (error) {
      if (error instanceof MlflowError && error.errorCode === 'RESOURCE_ALREADY_EXISTS') {
        const id = await this.getExperimentByName(name);
        if (id) return id;
      }
      throw error;
    }
  }

  async createRun(experimentId: string, runName: string, startTime: number, tags: MlflowTag[]): Promise<string> {
    const result = await this.request<{ run: { info: { run_id: string } } }>('POST', '/api/2.0/mlflow/runs/create', { experiment_id: experimentId, run_name: runName, start_time: startTime, tags });
    return result.run.info.run_id;
  }

  async getRun(runId: string): Promise<{ info: { status: string; experiment_id: string }; data: { metrics?: MlflowMetric[]; params?: MlflowParam[]; tags?: MlflowTag[] } } | undefined> {
    try {
      return (await this.request<{ run: never }>('GET', `/api/2.0/mlflow/runs/get?run_id=${encodeURIComponent(runId)}`)).run;
    } catch (error) {
      if (error instanceof MlflowError && error.errorCode === 'RESOURCE_DOES_NOT_EXIST') return undefined;
      throw error;
    }
  }

  async updateRun(runId: string, status: RunStatusName, endTime?: number): Promise<void> {
    await this.request('POST', '/api/2.0/mlflow/runs/update', { run_id: runId, status, ...(endTime ? { end_time: endTime } : {}) });
  }

  async logBatch(runId: string, metrics: MlflowMetric[], params: MlflowParam[] = [], tags: MlflowTag[] = []): Promise<void> {
    const clean = {
      metrics: metrics.filter((m) => Number.isFinite(m.value)).map((m) => ({ ...m, key: sanitizeKey(m.key) })),
      params: params.map((p) => ({ key: sanitizeKey(p.key), value: p.value.slice(0, batchLimits.paramValue) })),
      tags: tags.map((t) => ({ key: sanitizeKey(t.key), value: t.value.slice(0, batchLimits.tagValue) })),
    };
    for (const chunk of chunkBatch(clean.metrics, clean.params, clean.tags)) {
      await this.request('POST', '/api/2.0/mlflow/runs/log-batch', { run_id: runId, ...chunk });
    }
  }

  /** Uploads one file through the tracking server's artifact proxy. */
  async logArtifact(experimentId: string, runId: string, artifactPath: string, file: string): Promise<void> {
    const encoded = artifactPath.split('/').map(encodeURIComponent).join('/');
    await this.request('PUT', `/api/2.0/mlflow-artifacts/artifacts/${experimentId}/${runId}/artifacts/${encoded}`, undefined, fs.readFileSync(file));
  }
}
