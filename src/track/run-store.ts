import fs from 'node:fs';
import path from 'node:path';
import { UserError } from '../errors.ts';

/**
 * The local run folder: the source of truth of a run, written before anything is sent
 * anywhere. Every file is written to a temp path and renamed, so a crash never leaves a
 * half-written file; metrics.jsonl is only ever appended to.
 */

export type RunStatus = 'RUNNING' | 'FINISHED' | 'FAILED' | 'KILLED';

export function writeFileAtomic(file: string, content: string | Uint8Array): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const temp = `${file}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 8)}`;
  fs.writeFileSync(temp, content);
  fs.renameSync(temp, file);
}

export function writeJsonAtomic(file: string, value: unknown): void {
  writeFileAtomic(file, `${JSON.stringify(value, null, 2)}\n`);
}

export function readJson<T>(file: string): T {
  return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
}

function timestamp(date: Date): string {
  return date.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, '').replace('T', '-');
}

/** A new run id: time, experiment name, a random suffix (sortable, unique, readable). */
export function newRunId(name: string, date = new Date()): string {
  return `${timestamp(date)}-${name}-${Math.random().toString(36).slice(2, 6)}`;
}

export class RunFolder {
  constructor(readonly dir: string) {}

  static create(runsDir: string, name: string): RunFolder {
    for (let attempt = 0; attempt < 5; attempt++) {
      const dir = path.resolve(runsDir, newRunId(name));
      try {
        fs.mkdirSync(path.dirname(dir), { recursive: true });
        fs.mkdirSync(dir);
        return new RunFolder(dir);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
      }
    }
    throw new Error(`could not create a unique run folder under ${runsDir}`);
  }

  static open(dir: string): RunFolder {
    const folder = new RunFolder(path.resolve(dir));
    if (!fs.existsSync(folder.file('run.json'))) throw new UserError(`${dir}: not a tlx run folder (no run.json)`);
    return folder;
  }

  get id(): string {
    return path.basename(this.dir);
  }

  file(...parts: string[]): string {
    return path.join(this.dir, ...parts);
  }

  writeJson(name: string, value: unknown): void {
    writeJsonAtomic(this.file(name), value);
  }

  writeText(name: string, text: string): void {
    writeFileAtomic(this.file(name), text);
  }

  readJson<T>(name: string): T {
    return readJson<T>(this.file(name));
  }

  exists(name: string): boolean {
    return fs.existsSync(this.file(name));
  }

  /** Appends one JSON line; the line is complete or absent (a torn last line is dropped on read). */
  appendJsonLine(name: string, value: unknown): void {
    fs.appendFileSync(this.file(name), `${JSON.stringify(value)}\n`);
  }

  readJsonLines<T>(name: string): T[] {
    if (!this.exists(name)) return [];
    return fs
      .readFileSync(this.file(name), 'utf8')
      .split('\n')
      .filter((line) => line.trim().length > 0)
      .flatMap((line) => {
        try {
          return [JSON.parse(line) as T];
        } catch {
          return [];
        }
      });
  }
}
