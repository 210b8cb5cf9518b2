import fs from 'node:fs';
import path from 'node:path';
import type { z } from 'zod';
import type { LayersModel, Optimizer } from '@tensorflow/tfjs-node';
import { UserError } from '../core/errors.ts';
import { copyCheckpoint, findCheckpoint, writeCheckpoint, type CheckpointInfo } from './checkpoints.ts';
import {
  appendLineDurably,
  CorruptFileError,
  findInstalled,
  readJsonFile,
  readJsonLines,
  removeDeadTemps,
  rewriteJsonLines,
  tempPathFor,
  truncateTornTail,
  writeFileAtomic,
  writeJsonAtomic,
  installFolder,
} from '../core/files.ts';
import { FolderLock, type AcquireOptions } from '../core/lock.ts';
import { loadExperiment, resolvedConfigYaml } from '../config/load.ts';
import type { ResolvedExperiment } from '../config/resolved.ts';
import {
  ClassifierJson,
  DatasetJson,
  EpochRecord,
  MlflowJson,
  RunJson,
  RunSummary,
  type TfliteRecord,
} from './records.ts';

/**
 * The run folder: the source of truth of a run, written before anything is sent anywhere.
 * This module owns its layout, as git's refs.c owns refs: every reader and writer of a run
 * goes through it. Every file is written whole (temp, fsync, rename, fsync the folder),
 * metrics.jsonl is only appended to (one fsynced line per epoch), and one process at a
 * time holds the folder (lock()).
 *
 *   run.json            status, where the experiment came from, tags
 *   config.yaml         the resolved config (validated again when read)
 *   metrics.jsonl       one line per epoch; epoch 0 is the evaluation before training
 *   dataset.json        classes, split counts, source, digest
 *   labels.txt          class names, one per line, in output order
 *   summary.json        the final record (DESIGN.md)
 *   mlflow.json         what each tracking server has of the run
 *   log.jsonl           the run's log, one JSON record per line
 *   checkpoints/<name>  last, best, feature_extraction, early_stopping
 *   model/              tfjs model, classifier.json, named/ (the final weights as a checkpoint)
 *   plots/              PNG charts
 *   model.tflite, labels.txt, model-card.json/.md        the configured export
 *   tflite-<mode>/      other export modes (tlx convert)
 */

/** Where summary.json says a run's main files are, relative to its folder (the on-disk contract). */
export const runArtifacts = {
  config: 'config.yaml',
  metrics: 'metrics.jsonl',
  labels: 'labels.txt',
  model: 'model/model.json',
  checkpoint_last: 'checkpoints/last',
  checkpoint_best: 'checkpoints/best',
  learning_curves: 'plots/learning_curves.png',
  confusion_matrix: 'plots/confusion_matrix.png',
  samples: 'plots/samples.png',
  augmentation: 'plots/augmentation.png',
} as const;

export type CheckpointName = 'last' | 'best' | 'feature_extraction' | 'early_stopping';
const checkpointNames: CheckpointName[] = ['last', 'best', 'feature_extraction', 'early_stopping'];

const copyEntryPattern =
  /^(run\.json|config\.yaml|dataset\.json|labels\.txt|metrics\.jsonl|mlflow\.json|summary\.json|model\.tflite|model-card\.json|model-card\.md|log\.jsonl|plots\/[\w.-]+\.png|checkpoints\/(last|best|feature_extraction|early_stopping)|model|tflite-[a-z0-9]+)$/;

function timestamp(date: Date): string {
  return date
    .toISOString()
    .replace(/[-:]/g, '')
    .replace(/\.\d+Z$/, '')
    .replace('T', '-');
}

/** A new run id: time, experiment name, a random suffix (sortable, unique, readable). */
export function newRunId(name: string, date = new Date()): string {
  return `${timestamp(date)}-${name}-${Math.random().toString(36).slice(2, 6)}`;
}

/** A run id as newRunId makes it: date-time, then the name and suffix. */
const runIdShape = /^\d{8}-\d{6}-./;

/** The short, readable part of a run id: the experiment name and its random suffix. */
export function shortRunName(runId: string): string {
  return runId.replace(/^\d{8}-\d{6}-/, '');
}

function parseWith<T extends z.ZodType>(schema: T, value: unknown, file: string, what: string): z.infer<T> {
  const parsed = schema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new CorruptFileError(`${file}: not a valid ${what}: ${issue?.path.join('.') || '(root)'}: ${issue?.message}`);
  }
  return parsed.data;
}

export interface MetricsRead {
  records: EpochRecord[];
  /** Problems found and how they were handled, for a warning. */
  problems: string[];
}

export class RunFolder {
  private folderLock?: FolderLock;

  private constructor(readonly dir: string) {}

  /** A new, empty run folder: a fresh id from the name, or exactly `id` (queued trials, whose folder a retry must find). */
  static create(runsDir: string, name: string, id?: string): RunFolder {
    for (let attempt = 0; attempt < 5; attempt++) {
      const dir = path.resolve(runsDir, id ?? newRunId(name));
      try {
        fs.mkdirSync(path.dirname(dir), { recursive: true });
        fs.mkdirSync(dir);
        return new RunFolder(dir);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || id) throw error;
      }
    }
    throw new Error(`could not create a unique run folder under ${runsDir}`);
  }

  static open(dir: string): RunFolder {
    const folder = new RunFolder(path.resolve(dir));
    if (!fs.existsSync(folder.file('run.json'))) throw new UserError(`${dir}: not a tlx run folder (no run.json)`);
    return folder;
  }

  /** The run folder at `dir`, or undefined when there is none. */
  static tryOpen(dir: string): RunFolder | undefined {
    return fs.existsSync(path.join(dir, 'run.json')) ? new RunFolder(path.resolve(dir)) : undefined;
  }

  /**
   * Every folder under `runsDir` that is or was a run, damaged ones included: a run.json, or a
   * run id's name (a folder whose run.json was lost). Listings show these rather than hide them.
   */
  static listAll(runsDir: string): RunFolder[] {
    if (!fs.existsSync(runsDir)) return [];
    return fs
      .readdirSync(runsDir, { withFileTypes: true })
      .filter((entry) => entry.isDirectory())
      .map((entry) => entry.name)
      .sort()
      .map((name) => path.resolve(runsDir, name))
      .filter((dir) => fs.existsSync(path.join(dir, 'run.json')) || runIdShape.test(path.basename(dir)))
      .map((dir) => new RunFolder(dir));
  }

  /** Every run folder directly under `runsDir` (sweeps, data pictures and the MLflow store excluded). */
  static list(runsDir: string): RunFolder[] {
    if (!fs.existsSync(runsDir)) return [];
    return fs
      .readdirSync(runsDir)
      .sort()
      .map((name) => path.resolve(runsDir, name))
      .filter((dir) => fs.existsSync(path.join(dir, 'run.json')))
      .map((dir) => new RunFolder(dir));
  }

  get id(): string {
    return path.basename(this.dir);
  }

  private file(...parts: string[]): string {
    return path.join(this.dir, ...parts);
  }

  private exists(...parts: string[]): boolean {
    return fs.existsSync(this.file(...parts));
  }

  // ---- one process at a time -------------------------------------------------------

  /** Takes the folder's lock ("run X is in use by pid N on host H since T" otherwise). */
  lock(options: AcquireOptions = {}): void {
    this.folderLock ??= FolderLock.acquire(this.dir, `run ${this.id}`, options);
  }

  /** A message about this folder's files with its own path taken out ("checkpoints/last/weights.bin: ..."). */
  withinFolder(message: string): string {
    return message.replaceAll(`${this.dir}${path.sep}`, '');
  }

  /** Deletes the whole folder (a new run refused before it trained anything). */
  remove(): void {
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  unlock(): void {
    this.folderLock?.release();
    this.folderLock = undefined;
  }

  get locked(): boolean {
    return this.folderLock !== undefined;
  }

  /** Removes temp files and folders that dead processes left (interrupted checkpoints, exports). */
  removeDeadTemps(): string[] {
    const removed = [
      ...removeDeadTemps(this.dir),
      ...removeDeadTemps(this.file('checkpoints')),
      ...removeDeadTemps(this.file('plots')),
    ];
    if (fs.existsSync(this.dir))
      for (const name of fs.readdirSync(this.dir))
        if (name.startsWith('tflite-')) removed.push(...removeDeadTemps(this.file(name)));
    return removed;
  }

  // ---- run.json ----------------------------------------------------------------------

  readRun(): RunJson {
    const file = this.file('run.json');
    return parseWith(RunJson, readJsonFile(file, 'a tlx run.json'), file, 'run.json');
  }

  writeRun(run: RunJson): void {
    writeJsonAtomic(this.file('run.json'), run);
  }

  // ---- config.yaml -------------------------------------------------------------------

  writeConfig(config: ResolvedExperiment): void {
    writeFileAtomic(
      this.file('config.yaml'),
      `# The resolved config of this run (defaults filled, extends and --set applied; URLs without secrets)\n${resolvedConfigYaml(config)}`,
    );
  }

  /** The resolved config, validated against the schema like any experiment file. */
  readConfig(): ResolvedExperiment {
    const file = this.file('config.yaml');
    if (fs.readFileSync(file, 'utf8').trim().length === 0)
      throw new CorruptFileError(`${file}: the file is empty; expected the run's resolved config`);
    return loadExperiment(file).config;
  }

  // ---- metrics.jsonl -----------------------------------------------------------------

  /** The epoch records; unreadable lines are reported in `problems`, never dropped silently. */
  readMetrics(): MetricsRead {
    const file = this.file('metrics.jsonl');
    const read = readJsonLines(file, (value) => EpochRecord.parse(value));
    const problems = read.bad.map(
      (bad) => `metrics.jsonl line ${bad.line} is not a valid epoch record (${bad.reason}); it is ignored`,
    );
    if (read.tornTail !== undefined)
      problems.push(
        `metrics.jsonl ends with a torn line (${read.tornTail.length} bytes, a crash or a full disk); it is ignored`,
      );
    return { records: read.records, problems };
  }

  /** Cuts a torn last line of metrics.jsonl (before appending to it); returns the bytes removed. */
  repairMetrics(): number {
    const file = this.file('metrics.jsonl');
    return fs.existsSync(file) ? truncateTornTail(file) : 0;
  }

  appendMetric(record: EpochRecord): void {
    appendLineDurably(this.file('metrics.jsonl'), JSON.stringify(record));
  }

  /** Replaces metrics.jsonl with these records (dropping epochs that resume will train again). */
  rewriteMetrics(records: EpochRecord[]): void {
    rewriteJsonLines(this.file('metrics.jsonl'), records);
  }

  /** The run's JSON log (every field of every log line while the run was open). */
  logFile(): string {
    return this.file('log.jsonl');
  }

  // ---- dataset.json, labels.txt ------------------------------------------------------

  writeDataset(dataset: DatasetJson): void {
    writeJsonAtomic(this.file('dataset.json'), dataset);
  }

  readDataset(): DatasetJson | undefined {
    const file = this.file('dataset.json');
    return fs.existsSync(file) ? parseWith(DatasetJson, readJsonFile(file), file, 'dataset.json') : undefined;
  }

  writeLabels(classNames: string[]): void {
    writeFileAtomic(this.file('labels.txt'), `${classNames.join('\n')}\n`);
  }

  // ---- summary.json ------------------------------------------------------------------

  hasSummary(): boolean {
    return this.exists('summary.json');
  }

  readSummary(): RunSummary {
    const file = this.file('summary.json');
    return parseWith(RunSummary, readJsonFile(file, 'a tlx summary.json'), file, 'summary.json');
  }

  writeSummary(summary: RunSummary): void {
    writeJsonAtomic(this.file('summary.json'), summary);
  }

  // ---- mlflow.json -------------------------------------------------------------------

  readMlflow(): MlflowJson {
    const file = this.file('mlflow.json');
    if (!fs.existsSync(file)) return { servers: {}, pending: {} };
    return parseWith(MlflowJson, readJsonFile(file, 'the MLflow sync state'), file, 'mlflow.json');
  }

  writeMlflow(state: MlflowJson): void {
    writeJsonAtomic(this.file('mlflow.json'), state);
  }

  // ---- checkpoints and model ----------------------------------------------------------

  private checkpointDir(name: CheckpointName): string {
    return this.file('checkpoints', name);
  }

  /** Where checkpoint `name` can be read (its newest whole version), if it was saved. */
  findCheckpoint(name: CheckpointName): string | undefined {
    return findCheckpoint(this.checkpointDir(name));
  }

  hasCheckpoint(name: CheckpointName): boolean {
    return this.findCheckpoint(name) !== undefined;
  }

  /** The model's weights (and the optimizer's state, when given) as checkpoint `name`, written whole. */
  async saveCheckpoint(
    name: CheckpointName,
    model: LayersModel,
    optimizer: Optimizer | undefined,
    info: CheckpointInfo,
  ): Promise<void> {
    await writeCheckpoint(this.checkpointDir(name), model, optimizer, info);
  }

  /** Checkpoint `from` of `source` (this run unless given: a sweep's leader) installed as this run's `to`. */
  copyCheckpoint(from: CheckpointName, to: CheckpointName, source: RunFolder = this): void {
    const found = source.findCheckpoint(from);
    if (!found) throw new UserError(`${source.dir}: no ${from} checkpoint to copy`);
    copyCheckpoint(found, this.checkpointDir(to));
  }

  /** The folder holding the final weights as a checkpoint (what export and convert read). */
  modelWeightsDir(): string {
    return this.file('model', 'named');
  }

  hasModel(): boolean {
    return this.exists('model', 'classifier.json') && this.exists('model', 'named', 'checkpoint.json');
  }

  readClassifier(): ClassifierJson {
    const file = this.file('model', 'classifier.json');
    return parseWith(ClassifierJson, readJsonFile(file), file, 'classifier.json');
  }

  /** A temp folder in the run for a multi-file output; install it with installModel/installExport. */
  stagingDir(purpose: string): string {
    const dir = tempPathFor(this.file(`.${purpose}`));
    fs.mkdirSync(dir, { recursive: true });
    return dir;
  }

  /** Removes a staging folder that was not installed (a failed export). */
  removeStaging(staging: string): void {
    fs.rmSync(staging, { recursive: true, force: true });
  }

  /**
   * model/: the trained model in tfjs layers format, its weights as a named checkpoint (what
   * export and convert read) and what rebuilding it needs, made in a staging folder and
   * installed whole.
   */
  async saveModel(model: LayersModel, classifier: ClassifierJson): Promise<void> {
    const staging = this.stagingDir('model');
    try {
      await model.save(`file://${staging}`);
      await writeCheckpoint(path.join(staging, 'named'), model, undefined, { epoch: -1, phase: 'final' });
      writeJsonAtomic(path.join(staging, 'classifier.json'), classifier);
      installFolder(staging, this.file('model'));
    } finally {
      this.removeStaging(staging);
    }
  }

  /** Whether run.json exists (a folder without it has lost its record). */
  hasRunRecord(): boolean {
    return this.exists('run.json');
  }

  // ---- plots -------------------------------------------------------------------------

  /** A picture of the run (plots/<name>), written whole. */
  writePlot(name: string, png: Uint8Array): void {
    writeFileAtomic(this.file('plots', name), png);
  }

  readPlot(name: string): Buffer {
    return fs.readFileSync(this.file('plots', name));
  }

  hasPlot(name: string): boolean {
    return this.exists('plots', name);
  }

  // ---- exports -----------------------------------------------------------------------

  /** The files of an export, read back (model card), if it exists. */
  readExportCard(relativeDir: string): TfliteRecord | undefined {
    const file = this.file(relativeDir, 'model-card.json');
    return fs.existsSync(file) ? (readJsonFile(file) as TfliteRecord) : undefined;
  }

  /**
   * Moves the files of a finished export from its staging folder into place: each file is
   * renamed over the old one (model.tflite last, so a reader never pairs a new model with
   * old labels); the staging folder is then removed.
   */
  installExport(staging: string, relativeDir: string): void {
    const target = this.file(relativeDir);
    fs.mkdirSync(target, { recursive: true });
    const names = fs.readdirSync(staging).sort((a, b) => Number(a === 'model.tflite') - Number(b === 'model.tflite'));
    for (const name of names) {
      fs.renameSync(path.join(staging, name), path.join(target, name));
    }
    fs.rmSync(staging, { recursive: true, force: true });
  }

  /** Absolute path of a file in the run (for uploads and the Python bridge). */
  pathOf(relative: string): string {
    return this.file(relative);
  }

  // ---- what goes to MLflow ------------------------------------------------------------

  /** Files of the run that go to MLflow as artifacts, relative to the run folder. */
  artifactFiles(): string[] {
    const files: string[] = [];
    for (const name of [
      'config.yaml',
      'metrics.jsonl',
      'summary.json',
      'labels.txt',
      'model.tflite',
      'model-card.json',
      'model-card.md',
      'dataset.json',
    ])
      if (this.exists(name)) files.push(name);
    for (const dir of fs.existsSync(this.dir) ? fs.readdirSync(this.dir).sort() : []) {
      if (dir === 'plots' || dir.startsWith('tflite-')) {
        for (const name of fs.readdirSync(this.file(dir)).sort())
          if (!name.includes('.tmp-')) files.push(`${dir}/${name}`);
      }
    }
    return files;
  }

  // ---- a copy elsewhere (a queued trial's, in the artifact store) ----------------------

  /**
   * What a copy of this run holds to continue it elsewhere, by relative name: each record
   * file as it is, each folder (a checkpoint, the model, an export mode) as one entry, so a
   * copy never pairs one epoch's weights with another's optimizer state. The log changes
   * with every line: it goes with the final copy only.
   */
  copyEntries(options: { withLog: boolean }): { name: string; path: string; folder: boolean }[] {
    const files = [
      'run.json',
      'config.yaml',
      'dataset.json',
      'labels.txt',
      'metrics.jsonl',
      'mlflow.json',
      'summary.json',
      'model.tflite',
      'model-card.json',
      'model-card.md',
      ...(options.withLog ? ['log.jsonl'] : []),
    ];
    const entries = files
      .filter((name) => this.exists(name))
      .map((name) => ({ name, path: this.file(name), folder: false }));
    if (this.exists('plots'))
      for (const name of fs.readdirSync(this.file('plots')).sort())
        if (!name.includes('.tmp-'))
          entries.push({ name: `plots/${name}`, path: this.file('plots', name), folder: false });
    for (const name of checkpointNames) {
      const installed = findInstalled(this.checkpointDir(name), (dir) =>
        ['checkpoint.json', 'weights.bin', 'optimizer.bin'].every((file) => fs.existsSync(path.join(dir, file))),
      );
      if (installed) entries.push({ name: `checkpoints/${name}`, path: installed, folder: true });
    }
    for (const name of fs.readdirSync(this.dir).sort()) {
      if ((name === 'model' || /^tflite-[a-z0-9]+$/.test(name)) && fs.statSync(this.file(name)).isDirectory())
        entries.push({ name, path: this.file(name), folder: true });
    }
    return entries;
  }

  /** Whether `name` is an entry of copyEntries (a copy's manifest is checked against this before anything is written). */
  static isCopyEntry(name: string): boolean {
    return copyEntryPattern.test(name);
  }

  /** Size and mtime of a file: whether an uploaded artifact changed since. */
  fingerprint(relative: string): string {
    const stat = fs.statSync(this.file(relative));
    return `${stat.size}:${Math.round(stat.mtimeMs)}`;
  }
}
