import { errorMessage, UserError } from '../core/errors.ts';
import type { RunJson, RunSummary } from '../run-folder/records.ts';
import { RunFolder } from '../run-folder/run-folder.ts';
import type { Terminal } from '../ui/terminal.ts';
import { listingOf, runBlock, runsTable, type RunListing } from './result-blocks.ts';

export interface RunsOptions {
  runsDir: string;
  status?: string;
  name?: string;
  limit?: number;
  json: boolean;
  terminal: Terminal;
}

/** What is wrong with a run folder that cannot be read, in one line without the folder's own path. */
function problemOf(folder: RunFolder, error: unknown): string {
  if (!folder.hasRunRecord()) return 'no run.json (the run record is lost)';
  return folder.withinFolder(errorMessage(error).split('\n')[0] ?? '');
}

/** A run's listing, or a DAMAGED one with its problem: a listing hides nothing. */
function describe(folder: RunFolder): RunListing {
  try {
    return listingOf(folder, folder.readRun(), folder.hasSummary() ? folder.readSummary() : undefined);
  } catch (error) {
    return {
      id: folder.id,
      name: '',
      status: 'DAMAGED',
      started: '',
      dir: folder.dir,
      problem: problemOf(folder, error),
    };
  }
}

/** `tlx runs`: the runs under the runs folder, newest first, read from the folders alone; damaged folders listed as such. */
export async function runsCommand(options: RunsOptions): Promise<void> {
  const listings = RunFolder.listAll(options.runsDir).reverse().map(describe);
  const wanted = listings
    .filter((r) => !options.status || r.status === options.status.toUpperCase())
    .filter((r) => !options.name || r.name.includes(options.name))
    .slice(0, options.limit ?? Number.POSITIVE_INFINITY);
  if (options.json || !options.terminal.humanOutput) {
    options.terminal.print(JSON.stringify(wanted));
    return;
  }
  if (wanted.length === 0) {
    options.terminal.print(`no runs under ${options.runsDir}`);
    return;
  }
  const damaged = wanted
    .filter((listing) => listing.problem)
    .map((listing) => `${listing.id}: damaged: ${listing.problem}`);
  options.terminal.print([runsTable(wanted, options.terminal.outputStyle), ...damaged].join('\n'));
}

export interface ShowOptions {
  runsDir: string;
  run: string;
  json: boolean;
  terminal: Terminal;
}

/** `tlx show <run>`: a run's summary block (or summary.json with --json). */
export async function showCommand(options: ShowOptions): Promise<void> {
  const folder =
    RunFolder.tryOpen(options.run) ??
    RunFolder.listAll(options.runsDir).find((f) => f.id === options.run || f.id.endsWith(options.run));
  if (!folder) throw new UserError(`show: no run ${options.run} under ${options.runsDir}`);
  let run: RunJson;
  let summary: RunSummary | undefined;
  try {
    run = folder.readRun();
    summary = folder.hasSummary() ? folder.readSummary() : undefined;
  } catch (error) {
    throw new UserError(`show: run ${folder.id} is damaged: ${problemOf(folder, error)}`);
  }
  if (options.json || !options.terminal.humanOutput) {
    options.terminal.print(JSON.stringify(summary ?? listingOf(folder, run, undefined)));
    return;
  }
  if (!summary) {
    const listing = listingOf(folder, run, undefined);
    options.terminal.print(
      `Run ${folder.id}  ${run.status}${run.error ? `: ${run.error}` : ''}\n  best val accuracy ${listing.best_val_accuracy?.toFixed(4) ?? 'n/a'} (no summary yet${run.status !== 'FINISHED' ? `; resume with: tlx run --resume ${folder.dir}` : ''})`,
    );
    return;
  }
  options.terminal.print(runBlock(folder, summary, options.terminal.outputStyle));
}
