import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../core/errors.ts';
import { CorruptFileError, readJsonFile, writeFileAtomic, writeJsonAtomic } from '../core/files.ts';
import { FolderLock, type AcquireOptions } from '../core/lock.ts';
import { MlflowJson, SweepPlan, TrialStates, type TrialState } from './records.ts';

/**
 * A sweep folder, `runs/sweeps/<sweep-id>/`: the plan (values kept as values, so a resumed
 * sweep never re-parses them), each trial's status, the results (CSV, JSON, plot) and the
 * MLflow parent run's state. Like a run folder, one process holds it at a time.
 */
export class SweepFolder {
  private folderLock?: FolderLock;

  private constructor(readonly dir: string) {}

  static at(runsDir: string, sweepId: string): SweepFolder {
    return new SweepFolder(path.resolve(runsDir, 'sweeps', sweepId));
  }

  static fromDir(dir: string): SweepFolder {
    return new SweepFolder(path.resolve(dir));
  }

  exists(): boolean {
    return fs.existsSync(this.file('plan.json'));
  }

  /** The best trial and whether any failed, from results.json (undefined before the sweep ended). */
  readResults(): { best: { metric: string; value?: number; runId?: string }; failed: boolean } | undefined {
    if (!fs.existsSync(this.file('results.json'))) return undefined;
    const results = readJsonFile(this.file('results.json')) as {
      metric: string;
      best_trial: number | null;
      best_run: string | null;
      trials: Record<string, unknown>[];
    };
    const best = results.trials.find((t) => t.trial === results.best_trial);
    return {
      best: {
        metric: results.metric,
        value: best?.[results.metric] as number | undefined,
        runId: results.best_run ?? undefined,
      },
      failed: results.trials.some((t) => t.status === 'failed'),
    };
  }

  static open(runsDir: string, sweepId: string): SweepFolder {
    const folder = SweepFolder.at(runsDir, sweepId);
    if (!fs.existsSync(path.join(folder.dir, 'plan.json')))
      throw new UserError(`sweep --resume: no sweep ${sweepId} under ${path.resolve(runsDir, 'sweeps')}`);
    return folder;
  }

  get id(): string {
    return path.basename(this.dir);
  }

  file(name: string): string {
    return path.join(this.dir, name);
  }

  lock(options: AcquireOptions = {}): void {
    fs.mkdirSync(this.dir, { recursive: true });
    this.folderLock ??= FolderLock.acquire(this.dir, `sweep ${this.id}`, options);
  }

  unlock(): void {
    this.folderLock?.release();
    this.folderLock = undefined;
  }

  private read<T>(
    name: string,
    schema: {
      safeParse(
        value: unknown,
      ): { success: true; data: T } | { success: false; error: { issues: { path: PropertyKey[]; message: string }[] } };
    },
  ): T {
    const file = this.file(name);
    const parsed = schema.safeParse(readJsonFile(file));
    if (!parsed.success)
      throw new CorruptFileError(
        `${file}: not a valid sweep ${name}: ${parsed.error.issues[0]?.path.join('.')}: ${parsed.error.issues[0]?.message}`,
      );
    return parsed.data;
  }

  readPlan(): SweepPlan {
    return this.read('plan.json', SweepPlan);
  }

  writePlan(plan: SweepPlan): void {
    writeJsonAtomic(this.file('plan.json'), plan);
  }

  readStatus(): TrialState[] {
    return fs.existsSync(this.file('status.json')) ? this.read('status.json', TrialStates) : [];
  }

  writeStatus(states: TrialState[]): void {
    writeJsonAtomic(this.file('status.json'), states);
  }

  readMlflow(): MlflowJson {
    return fs.existsSync(this.file('mlflow.json'))
      ? this.read('mlflow.json', MlflowJson)
      : { servers: {}, pending: {} };
  }

  writeMlflow(state: MlflowJson): void {
    writeJsonAtomic(this.file('mlflow.json'), state);
  }

  writeResults(csv: string, json: unknown): void {
    writeFileAtomic(this.file('results.csv'), csv);
    writeJsonAtomic(this.file('results.json'), json);
  }

  /** plot.png: the metric by trial; pareto.png: the metric against host latency, when the trials' costs are known. */
  writePlot(png: Uint8Array, name: 'plot.png' | 'pareto.png' = 'plot.png'): void {
    writeFileAtomic(this.file(name), png);
  }

  resultFiles(): string[] {
    return ['results.csv', 'results.json', 'plot.png', 'pareto.png'].filter((name) => fs.existsSync(this.file(name)));
  }
}
