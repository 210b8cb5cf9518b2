import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import { describe, test } from 'node:test';
import { UserError } from '../../src/core/errors.ts';
import { runsCommand, showCommand } from '../../src/commands/runs.ts';
import type { RunJson } from '../../src/run-folder/records.ts';
import { RunFolder } from '../../src/run-folder/run-folder.ts';
import { Terminal } from '../../src/ui/terminal.ts';
import { tempDir } from '../helpers/tmp.ts';

/** `tlx runs` hides nothing: a damaged folder is listed as DAMAGED with its one-line reason, and `tlx show` on it refuses with that reason. */

const runsDir = path.join(tempDir('tlx-unit-runs-'), 'runs');

function finishedRun(name: string): RunFolder {
  const folder = RunFolder.create(runsDir, name);
  const now = new Date().toISOString();
  const run: RunJson = {
    run_id: folder.id,
    status: 'FINISHED',
    base_dir: runsDir,
    config_sha256: 'c'.repeat(64),
    tlx_version: '0',
    created: now,
    updated: now,
    ended: now,
    tags: {},
    phase_outcomes: {},
  };
  folder.writeRun(run);
  return folder;
}

/** A terminal whose stdout is a string; `tty` makes it a person's terminal (the table) rather than a pipe (JSON). */
function capture(tty: boolean): { terminal: Terminal; out: () => string } {
  const stdout = Object.assign(new PassThrough(), { isTTY: tty }) as unknown as NodeJS.WriteStream;
  let text = '';
  (stdout as unknown as PassThrough).on('data', (chunk: Buffer) => (text += chunk.toString()));
  return { terminal: new Terminal(process.stderr, stdout), out: () => text };
}

describe('tlx runs and tlx show over damaged folders', () => {
  const healthy = finishedRun('healthy');
  const emptyRecord = finishedRun('emptyrecord');
  fs.writeFileSync(path.join(emptyRecord.dir, 'run.json'), '');
  const tornSummary = finishedRun('tornsummary');
  fs.writeFileSync(path.join(tornSummary.dir, 'summary.json'), '{"metrics": {');
  const lostRecord = finishedRun('lostrecord');
  fs.rmSync(path.join(lostRecord.dir, 'run.json'));
  fs.mkdirSync(path.join(runsDir, 'sweeps'), { recursive: true });

  test('each damaged folder is listed as DAMAGED with its reason, the healthy run as it is; nothing else under runs/', async () => {
    const { terminal, out } = capture(false);
    await runsCommand({ runsDir, json: true, terminal });
    const listed = JSON.parse(out()) as { id: string; status: string; problem?: string }[];
    const byId = new Map(listed.map((listing) => [listing.id, listing]));
    assert.equal(listed.length, 4, listed.map((l) => l.id).join(', '));
    assert.equal(byId.get(healthy.id)?.status, 'FINISHED');
    assert.equal(byId.get(healthy.id)?.problem, undefined);
    assert.equal(byId.get(emptyRecord.id)?.status, 'DAMAGED');
    assert.match(byId.get(emptyRecord.id)!.problem!, /^run\.json: the file is empty/);
    assert.equal(byId.get(tornSummary.id)?.status, 'DAMAGED', 'a valid run.json does not hide a damaged summary');
    assert.match(byId.get(tornSummary.id)!.problem!, /^summary\.json/);
    assert.equal(byId.get(lostRecord.id)?.problem, 'no run.json (the run record is lost)');
    for (const listing of listed) assert.ok(!(listing.problem ?? '').includes('\n'), 'one line');
  });

  test('the table a person reads names each damaged folder and its reason under it', async () => {
    const { terminal, out } = capture(true);
    await runsCommand({ runsDir, json: false, terminal });
    assert.equal(out().match(/DAMAGED/g)?.length, 3);
    assert.match(out(), new RegExp(`${lostRecord.id}: damaged: no run\\.json`));
  });

  test('tlx show on a damaged folder refuses with its reason (exit 2), on a healthy one it shows the run', async () => {
    for (const [folder, reason] of [
      [emptyRecord, /run\.json: the file is empty/],
      [tornSummary, /summary\.json/],
      [lostRecord, /no run\.json/],
    ] as const) {
      await assert.rejects(
        showCommand({ runsDir, run: folder.id, json: true, terminal: capture(false).terminal }),
        (error: unknown) =>
          error instanceof UserError &&
          new RegExp(`show: run ${folder.id} is damaged: `).test(error.message) &&
          reason.test(error.message),
      );
    }
    const { terminal, out } = capture(false);
    await showCommand({ runsDir, run: healthy.id, json: true, terminal });
    assert.equal((JSON.parse(out()) as { status: string }).status, 'FINISHED');
  });
});
