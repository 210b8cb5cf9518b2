import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { UserError, errorMessage } from '../core/errors.ts';
import { killPoint } from '../core/faults.ts';
import { installFolder, tempPathFor, writeJsonAtomic } from '../core/files.ts';
import { sha256OfFile } from '../core/hash.ts';
import { extractArchive } from '../data/extract.ts';
import { packFolder } from '../data/pack.ts';
import type { RunBackup } from '../run/run.ts';
import { RunFolder } from '../run-folder/run-folder.ts';
import type { MlflowClient } from '../track/mlflow-client.ts';

/**
 * A queued trial's run folder, kept in the tracking server's artifact store under
 * `tlx/sweeps/<sweep>/trial-<n>/` while it runs (Keras's BackupAndRestore, to a store every
 * worker reaches): after an epoch what changed (the checkpoint, the records; after the first
 * epoch, then at most every `everySeconds`), at the end everything. A worker that takes over a dead worker's trial continues from it, a follower
 * starts from its leader's, and the coordinator brings the best trial home from it.
 *
 * Entries are stored under their sha256 (`objects/<sha256>`, a folder as one tar) and never
 * overwritten; `mirror.json` names each entry's object and is written last, so a worker killed
 * halfway through a save leaves the previous copy whole. Objects no copy names any more are
 * removed after the manifest moved on. A restore checks each object against its sha256.
 */

const Manifest = z.object({
  entries: z.record(
    z.string(),
    z.object({
      sha256: z.string().regex(/^[0-9a-f]{64}$/),
      bytes: z.number().int().nonnegative(),
      folder: z.boolean(),
    }),
  ),
});
type Entries = z.infer<typeof Manifest>['entries'];

export class TrialMirror implements RunBackup {
  private sent: Entries = {};
  /** The copy was restored here: the next save also removes objects an earlier writer left unnamed. */
  private restored = false;
  /** Bytes this process sent and received (the cost of sharing nothing but the store). */
  readonly traffic = { sent: 0, received: 0 };

  /** The first epoch is saved at once: a takeover has a start, and MLflow hears of the run before the first interval ends. */
  private lastSave = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly client: MlflowClient,
    readonly prefix: string,
    /** While training, a save at most this often (the final save always happens). */
    private readonly everySeconds = 0,
  ) {}

  static of(client: MlflowClient, sweepId: string, trial: number, everySeconds?: number): TrialMirror {
    return new TrialMirror(client, `tlx/sweeps/${sweepId}/trial-${trial}`, everySeconds);
  }

  private objectOf(entry: { sha256: string; folder: boolean }): string {
    return `${this.prefix}/objects/${entry.sha256}${entry.folder ? '.tar' : ''}`;
  }

  /**
   * Puts every entry the store does not hold yet, then the manifest, then drops what no
   * longer counts; false when it is too soon after the last save (not the final one).
   */
  async save(folder: RunFolder, final: boolean): Promise<boolean> {
    if (!final && performance.now() - this.lastSave < this.everySeconds * 1000) return false;
    this.lastSave = performance.now();
    const work = fs.mkdtempSync(path.join(os.tmpdir(), 'tlx-mirror-'));
    try {
      const entries: Entries = {};
      const stored = new Set(Object.values(this.sent).map((entry) => this.objectOf(entry)));
      for (const [i, entry] of folder.copyEntries({ withLog: final }).entries()) {
        const file = entry.folder ? path.join(work, `${i}.tar`) : entry.path;
        const sha256 = entry.folder ? (await packFolder(entry.path, file)).sha256 : await sha256OfFile(file);
        const bytes = fs.statSync(file).size;
        entries[entry.name] = { sha256, bytes, folder: entry.folder };
        const object = this.objectOf(entries[entry.name]);
        if (stored.has(object)) continue;
        await this.client.putArtifact(object, file);
        killPoint('mirror.object-saved');
        stored.add(object);
        this.traffic.sent += bytes;
      }
      const manifest = path.join(work, 'mirror.json');
      writeJsonAtomic(manifest, { entries });
      await this.client.putArtifact(`${this.prefix}/mirror.json`, manifest);
      await this.dropUnnamed(entries);
      this.sent = entries;
      return true;
    } finally {
      fs.rmSync(work, { recursive: true, force: true });
    }
  }

  /**
   * Removes the objects the new manifest no longer names: those the last one named, and
   * after a restore every other object (what a worker killed during a save had put).
   */
  private async dropUnnamed(entries: Entries): Promise<void> {
    const kept = new Set(Object.values(entries).map((entry) => this.objectOf(entry)));
    let candidates = Object.values(this.sent).map((entry) => this.objectOf(entry));
    if (this.restored) {
      candidates = (await this.client.listArtifacts(`${this.prefix}/objects`).catch(() => [])).map((file) =>
        file.path.includes('/') ? file.path : `${this.prefix}/objects/${file.path}`,
      );
      this.restored = false;
    }
    const dropped = [...new Set(candidates)].filter((object) => !kept.has(object));
    // Best effort: an object left behind takes room, nothing else.
    await Promise.all(dropped.map((object) => this.client.deleteArtifact(object).catch(() => undefined)));
  }

  /**
   * The mirrored run, assembled as `runsDir/id` (whole or absent: built beside it, then
   * installed over an older copy); undefined when the store has no mirror of this trial.
   */
  async restore(runsDir: string, id: string): Promise<RunFolder | undefined> {
    const work = fs.mkdtempSync(path.join(os.tmpdir(), 'tlx-mirror-'));
    const target = path.join(runsDir, id);
    const temp = tempPathFor(target);
    try {
      if (!(await this.client.getArtifact(`${this.prefix}/mirror.json`, path.join(work, 'mirror.json'))))
        return undefined;
      const entries = this.readManifest(path.join(work, 'mirror.json'));
      fs.mkdirSync(temp, { recursive: true });
      for (const [name, entry] of Object.entries(entries)) await this.fetchEntry(name, entry, work, temp);
      installFolder(temp, target);
      this.sent = entries;
      this.restored = true;
      return RunFolder.open(target);
    } finally {
      fs.rmSync(temp, { recursive: true, force: true });
      fs.rmSync(work, { recursive: true, force: true });
    }
  }

  private readManifest(file: string): Entries {
    let parsed: z.infer<typeof Manifest>;
    try {
      parsed = Manifest.parse(JSON.parse(fs.readFileSync(file, 'utf8')));
    } catch (error) {
      throw new UserError(
        `${this.prefix}/mirror.json in the artifact store is not a trial's manifest: ${errorMessage(error).split('\n')[0].slice(0, 200)}`,
      );
    }
    const foreign = Object.keys(parsed.entries).find((name) => !RunFolder.isCopyEntry(name));
    if (foreign)
      throw new UserError(
        `${this.prefix}/mirror.json names ${JSON.stringify(foreign.slice(0, 80))}, which is not a file of a run folder`,
      );
    return parsed.entries;
  }

  private async fetchEntry(name: string, entry: Entries[string], work: string, into: string): Promise<void> {
    const downloaded = path.join(work, 'entry');
    if (!(await this.client.getArtifact(this.objectOf(entry), downloaded)))
      throw new UserError(`${this.prefix}: ${name} is named in mirror.json but missing from the artifact store`);
    const sha256 = await sha256OfFile(downloaded);
    if (sha256 !== entry.sha256)
      throw new UserError(
        `${this.prefix}: ${name} does not match mirror.json (sha256 ${sha256.slice(0, 12)}…, expected ${entry.sha256.slice(0, 12)}…); the copy was changed in the store`,
      );
    this.traffic.received += fs.statSync(downloaded).size;
    const place = path.join(into, ...name.split('/'));
    fs.mkdirSync(path.dirname(place), { recursive: true });
    if (entry.folder) {
      await extractArchive(downloaded, 'tar', place);
      fs.rmSync(downloaded);
    } else {
      fs.renameSync(downloaded, place);
    }
  }
}
