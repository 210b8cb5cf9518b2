import type { MlflowClient } from './mlflow-client.ts';

/**
 * Where a trainer looks in MLflow 3's UI: the experiment's Training runs table in its
 * "Model training" mode (`?workflowType=machine_learning`; without it the UI may open in its
 * GenAI mode), with the columns that matter already chosen. The columns travel as a shared
 * view, the UI's own server-side mechanism: an experiment tag `mlflow.sharedViewState.<key>`
 * holding the table state, opened with `?viewStateShareKey=<key>`.
 */

export interface RunsView {
  params: string[];
  metrics: string[];
  /** Only the runs with this tag value (a sweep's trials: tlx.sweep_id). */
  tag?: { key: string; value: string };
}

export const defaultViewKey = 'tlx';

/** The runs table of tlx runs: their results, the base and where fine-tuning starts. */
export const defaultView: RunsView = {
  params: ['model.base', 'train.fine_tune.fine_tune_at'],
  metrics: ['val_accuracy', 'test_accuracy', 'best_val_accuracy'],
};

export function runsPageUrl(serverUrl: string, experimentId: string, viewKey: string = defaultViewKey): string {
  return `${serverUrl.replace(/\/+$/, '')}/#/experiments/${experimentId}/runs?workflowType=machine_learning&viewStateShareKey=${encodeURIComponent(viewKey)}`;
}

export function sweepViewKey(sweepId: string): string {
  return `tlx-sweep-${sweepId}`;
}

/** Stores a view of the runs table as a shared view of the experiment (idempotent). */
export async function saveRunsView(
  client: MlflowClient,
  experimentId: string,
  key: string,
  view: RunsView,
): Promise<void> {
  const state = {
    selectedColumns: [
      'attributes.`Dataset`',
      'attributes.`Models`',
      ...view.metrics.map((m) => `metrics.\`${m}\``),
      ...view.params.map((p) => `params.\`${p}\``),
    ],
    // The UI does not share which parent runs are unfolded; a filter on the trials' tag lists them flat.
    ...(view.tag ? { searchFilter: `tags.\`${view.tag.key}\` = '${view.tag.value.replace(/'/g, "\\'")}'` } : {}),
    orderByKey: 'attributes.start_time',
    orderByAsc: false,
  };
  await client.setExperimentTag(experimentId, `mlflow.sharedViewState.${key}`, JSON.stringify(state));
}
