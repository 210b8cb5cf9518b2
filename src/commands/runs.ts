import { UserError } from '../core/errors.ts';
import type { RunSummary } from '../run-folder/records.ts';
import { RunFolder } from '../run-folder/run-folder.ts';
import type { Terminal } from '../ui/terminal.ts';
import { listingOf, runBlock, runsTable, type RunListing } from './blocks.ts';

export interface RunsOptions {
  runsDir: string;
  status?: string;
  name?: string;
  limit?: number;
  json: boolean;
  terminal: Terminal;
}

/** `tlx runs`: the runs under the runs folder, newest first, read from the folders alone. */
export async function runsCommand(options: RunsOptions): Promise<void> {
  const listings: RunListing[] = [];
  for (const folder of RunFolder.list(options.runsDir).reverse()) {
    try {
      const run = folder.readRun();
      listings.push(listingOf(folder, run, folder.hasSummary() ? folder.readSummary() : undefined));
    } catch {
      // a folder another version wrote, or a damaged one: not a run this listing can describe
    }
  }
  const wanted = listings
    .filter((r) => !options.status || r.status === options.status.toUpperCase())
    .filter((r) => !options.name || r.name.includes(options.name))
    .slice(0, options.limit ?? Number.POSITIVE_INFINITY);
  if (options.json || !options.terminal.humanOutput) {
    options.terminal.print(JSON.stringify(wanted));
    return;
  }
  options.terminal.print(wanted.length ? runsTable(wanted, options.terminal.outputStyle) : `no runs under ${options.runsDir}`);
}

export interface ShowOptions {
  runsDir: string;
  run: string;
  json: boolean;
  terminal: Terminal;
}

/** `tlx show <run>`: a run's summary block (or summary.json with --json). */
export async function showCommand(options: ShowOptions): Promise<void> {
  const folder = RunFolder.tryOpen(options.run) ?? RunFolder.list(options.runsDir).find((f) => f.id === options.run || f.id.endsWith(options.run));
  if (!folder) throw new UserError(`show: no run ${options.run} under ${options.runsDir}`);
  const run = folder.readRun();
  const summary: RunSummary | undefined = folder.hasSummary() ? folder.readSummary() : undefined;
  if (options.json || !options.terminal.humanOutput) {
    options.terminal.print(JSON.stringify(summary ?? listingOf(folder, run, undefined)));
    return;
  }
  if (!summary) {
    const listing = listingOf(folder, run, undefined);
    options.terminal.print(`Run ${folder.id}  ${run.status}${run.error ? `: ${run.error}` : ''}\n  best val accuracy ${listing.best_val_accuracy?.toFixed(4) ?? 'n/a'} (no summary yet${run.status !== 'FINISHED' ? `; resume with: tlx run --resume ${folder.dir}` : ''})`);
    return;
  }
  options.terminal.print(runBlock(folder, summary, options.terminal.outputStyle));
}
