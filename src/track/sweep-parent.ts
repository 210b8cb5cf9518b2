import { errorMessage } from '../core/errors.ts';
import type { Logger } from '../core/log.ts';
import { redactText, redactUrl } from '../core/redact.ts';
import type { SweepFolder } from '../run-folder/sweep-folder.ts';
import { MlflowClient, type MlflowMetric, type MlflowTag } from './mlflow-client.ts';
import { runsPageUrl, saveRunsView, sweepViewKey } from './views.ts';

export interface ParentRunOptions {
  trackingUri: string;
  experimentName: string;
  sweepName: string;
  grid: Record<string, unknown>;
  /** The sweep's metric: a column of the sweep's view. */
  metric: string;
  log: Logger;
}

/**
 * A sweep's MLflow parent run: the swept keys as params, the trials as its children (they
 * carry mlflow.parentRunId), the best trial and the results at the end. Created once per
 * server (recorded in the sweep folder's mlflow.json, found again by its tlx.sweep_parent tag);
 * a server that is away only costs a warning: the trials still log on their own.
 */
export class SweepParentRun {
  private constructor(
    private readonly folder: SweepFolder,
    private readonly client: MlflowClient,
    readonly experimentId: string,
    readonly runId: string,
    private readonly log: Logger,
  ) {}

  /** The sweep in MLflow: its trials, with the swept keys and the metric as columns. */
  get viewUrl(): string {
    return runsPageUrl(this.client.baseUrl, this.experimentId, sweepViewKey(this.folder.id));
  }

  static async open(folder: SweepFolder, options: ParentRunOptions): Promise<SweepParentRun | undefined> {
    const uri = redactUrl(options.trackingUri);
    try {
      const client = new MlflowClient({ trackingUri: options.trackingUri, retries: 2 });
      const state = folder.readMlflow();
      const saved = state.servers[uri];
      const view = {
        params: Object.keys(options.grid),
        metrics: [...new Set([options.metric, 'val_accuracy', 'test_accuracy'])],
        tag: { key: 'tlx.sweep_id', value: folder.id },
      };
      if (saved && (await client.getRun(saved.run_id))) {
        await saveRunsView(client, saved.experiment_id, sweepViewKey(folder.id), view);
        return new SweepParentRun(folder, client, saved.experiment_id, saved.run_id, options.log);
      }
      const experimentId = await client.ensureExperiment(options.experimentName, [
        { key: 'mlflow.experimentKind', value: 'custom_model_development' },
      ]);
      const found = (await client.findRunsByTag(experimentId, 'tlx.sweep_parent', folder.id))[0];
      const runId =
        found?.info.run_id ??
        (await client.createRun(experimentId, `${options.sweepName} (sweep)`, Date.now(), [
          { key: 'mlflow.runName', value: `${options.sweepName} (sweep)` },
          { key: 'mlflow.source.type', value: 'LOCAL' },
          { key: 'tlx.sweep_parent', value: folder.id },
        ]));
      await client.logBatch(
        runId,
        [],
        Object.entries(options.grid).map(([key, values]) => ({ key: `sweep.${key}`, value: JSON.stringify(values) })),
      );
      await saveRunsView(client, experimentId, sweepViewKey(folder.id), view);
      state.servers[uri] = {
        experiment_id: experimentId,
        run_id: runId,
        metric_lines: 0,
        artifacts: {},
        synced: false,
        refused: [],
        updated: new Date().toISOString(),
      };
      folder.writeMlflow(state);
      return new SweepParentRun(folder, client, experimentId, runId, options.log);
    } catch (error) {
      options.log.warn(
        { error: redactText(errorMessage(error)) },
        'MLflow parent run for the sweep could not be created; trials still log on their own',
      );
      return undefined;
    }
  }

  /** The best trial, the results files and the final status. Never throws. */
  async finish(best: { metric: string; value?: number; runId?: string }, failed: boolean): Promise<void> {
    try {
      const metrics: MlflowMetric[] =
        best.value === undefined
          ? []
          : [{ key: `best_${best.metric}`, value: best.value, timestamp: Date.now(), step: 0 }];
      const tags: MlflowTag[] = best.runId ? [{ key: 'tlx.best_run', value: best.runId }] : [];
      await this.client.logBatch(this.runId, metrics, [], tags);
      for (const name of this.folder.resultFiles())
        await this.client.logArtifact(this.experimentId, this.runId, name, this.folder.file(name));
      await this.client.updateRun(this.runId, failed ? 'FAILED' : 'FINISHED', Date.now());
    } catch (error) {
      this.log.warn({ error: redactText(errorMessage(error)) }, 'could not finish the sweep parent run in MLflow');
    }
  }
}
