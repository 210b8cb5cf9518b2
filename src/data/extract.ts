import fs from 'node:fs';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import * as tar from 'tar';
import yauzl from 'yauzl';
import { UserError } from '../core/errors.ts';
import { removeDeadTemps, tempPathFor } from '../core/files.ts';
import { defaultMaxBytes } from '../net/download.ts';

export interface ExtractLimits {
  /** Refuse archives with more entries than this. */
  maxEntries: number;
  /** Refuse archives whose unpacked size exceeds this many bytes. */
  maxBytes: number;
}

const defaultLimits: ExtractLimits = { maxEntries: 500_000, maxBytes: defaultMaxBytes };

export type ArchiveKind = 'zip' | 'tar' | 'tar.gz';

export function archiveKindOf(name: string): ArchiveKind | undefined {
  const lower = name.toLowerCase();
  if (lower.endsWith('.zip')) return 'zip';
  if (lower.endsWith('.tar.gz') || lower.endsWith('.tgz')) return 'tar.gz';
  if (lower.endsWith('.tar')) return 'tar';
  return undefined;
}

interface EntryInfo {
  name: string;
  kind: 'file' | 'directory' | 'symlink' | 'other';
  size: number;
  linkTarget?: string;
}

/**
 * A reason to refuse an entry: ../, absolute paths, links pointing out, special files.
 * Zip symlinks are refused outright: names are checked as text, and later entries written
 * through links made by earlier ones (x -> ., x/a -> .., ...) could land anywhere; a dataset
 * needs no links. (node-tar refuses such chains itself for tar archives.)
 */
function unsafeEntryReason(entry: EntryInfo, format: 'zip' | 'tar' = 'tar'): string | undefined {
  const name = entry.name.replace(/\\/g, '/');
  if (name.startsWith('/') || /^[A-Za-z]:/.test(name)) return 'absolute path';
  const resolved = path.posix.normalize(name);
  if (resolved === '..' || resolved.startsWith('../')) return 'path leaves the extraction folder';
  if (entry.kind === 'symlink' && format === 'zip')
    return `symlink (to ${entry.linkTarget ?? '?'}); datasets need no links, so zip archives with links are refused`;
  if (entry.kind === 'symlink') {
    const target = (entry.linkTarget ?? '').replace(/\\/g, '/');
    if (target.startsWith('/')) return `symlink to absolute path ${target}`;
    const landing = path.posix.normalize(path.posix.join(path.posix.dirname(resolved), target));
    if (landing === '..' || landing.startsWith('../')) return `symlink pointing outside (${target})`;
  }
  if (entry.kind === 'other') return 'special file (device, fifo or hard link)';
  return undefined;
}

function checkAll(entries: EntryInfo[], archive: string, limits: ExtractLimits, format: 'zip' | 'tar'): void {
  if (entries.length > limits.maxEntries) {
    throw new UserError(
      `refusing to extract ${archive}: ${entries.length} entries, more than the limit of ${limits.maxEntries}`,
    );
  }
  let total = 0;
  for (const entry of entries) {
    const reason = unsafeEntryReason(entry, format);
    if (reason) throw new UserError(`refusing to extract ${archive}: entry "${entry.name}": ${reason}`);
    total += entry.size;
    if (total > limits.maxBytes) {
      throw new UserError(
        `refusing to extract ${archive}: unpacked size over the limit of ${limits.maxBytes} bytes (dataset.max_extracted_bytes)`,
      );
    }
  }
}

function openZip(file: string): Promise<yauzl.ZipFile> {
  return new Promise((resolve, reject) => {
    yauzl.open(
      file,
      { lazyEntries: true, autoClose: false, strictFileNames: false, validateEntrySizes: true },
      (error, zip) => {
        if (error || !zip)
          reject(new UserError(`cannot read zip archive ${file}: ${error?.message ?? 'unknown error'}`));
        else resolve(zip);
      },
    );
  });
}

function zipEntryKind(entry: yauzl.Entry): EntryInfo['kind'] {
  if (entry.fileName.endsWith('/')) return 'directory';
  const mode = (entry.externalFileAttributes >>> 16) & 0o170000;
  if (mode === 0o120000) return 'symlink';
  if (mode === 0 || mode === 0o100000) return 'file';
  if (mode === 0o040000) return 'directory';
  return 'other';
}

async function readZipEntries(zip: yauzl.ZipFile): Promise<yauzl.Entry[]> {
  return new Promise((resolve, reject) => {
    const entries: yauzl.Entry[] = [];
    zip.on('entry', (entry: yauzl.Entry) => {
      entries.push(entry);
      zip.readEntry();
    });
    zip.on('end', () => resolve(entries));
    zip.on('error', reject);
    zip.readEntry();
  });
}

function openEntry(zip: yauzl.ZipFile, entry: yauzl.Entry): Promise<NodeJS.ReadableStream> {
  return new Promise((resolve, reject) =>
    zip.openReadStream(entry, (error, stream) => (error || !stream ? reject(error) : resolve(stream))),
  );
}

async function streamToString(stream: NodeJS.ReadableStream): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.from(chunk as Buffer));
  return Buffer.concat(chunks).toString('utf8');
}

/** yauzl refuses some unsafe names itself while listing; say so in tlx's words. */
function zipListingError(error: unknown, archive: string): Error {
  const message = error instanceof Error ? error.message : String(error);
  const match = /^(invalid relative path|absolute path): (.*)$/.exec(message);
  if (!match) return error instanceof Error ? error : new Error(message);
  const reason = match[1] === 'absolute path' ? 'absolute path' : 'path leaves the extraction folder';
  return new UserError(`refusing to extract ${archive}: entry "${match[2]}": ${reason}`);
}

async function extractZip(file: string, into: string, limits: ExtractLimits): Promise<void> {
  const zip = await openZip(file);
  try {
    const entries = await readZipEntries(zip).catch((error: unknown) => {
      throw zipListingError(error, path.basename(file));
    });
    const infos: EntryInfo[] = [];
    for (const entry of entries) {
      const kind = zipEntryKind(entry);
      infos.push({
        name: entry.fileName,
        kind,
        size: entry.uncompressedSize,
        linkTarget: kind === 'symlink' ? await streamToString(await openEntry(zip, entry)) : undefined,
      });
    }
    checkAll(infos, path.basename(file), limits, 'zip');
    for (const [i, entry] of entries.entries()) {
      const info = infos[i];
      const target = path.join(into, path.posix.normalize(info.name.replace(/\\/g, '/')));
      if (info.kind === 'directory') {
        fs.mkdirSync(target, { recursive: true });
      } else {
        fs.mkdirSync(path.dirname(target), { recursive: true });
        // 'wx': never through an existing file or link, never over one.
        await pipeline(await openEntry(zip, entry), fs.createWriteStream(target, { flags: 'wx' }));
      }
    }
  } finally {
    zip.close();
  }
}

async function extractTar(file: string, into: string, limits: ExtractLimits): Promise<void> {
  const infos: EntryInfo[] = [];
  await tar.t({
    file,
    onReadEntry: (entry) => {
      const kind =
        entry.type === 'File' || entry.type === 'OldFile' || entry.type === 'ContiguousFile'
          ? 'file'
          : entry.type === 'Directory'
            ? 'directory'
            : entry.type === 'SymbolicLink'
              ? 'symlink'
              : /Header|GlobalExtended|Extended/.test(entry.type)
                ? 'directory'
                : 'other';
      infos.push({ name: entry.path, kind, size: entry.size ?? 0, linkTarget: entry.linkpath });
    },
  });
  checkAll(infos, path.basename(file), limits, 'tar');
  await tar.x({ file, cwd: into, strict: true, preserveOwner: false });
}

/**
 * Extracts an archive into `into` (which must not exist yet): everything is first
 * listed and checked, written to a temp folder beside it, then renamed, so the final
 * folder only ever holds a complete extraction. Nothing is written outside it.
 */
export async function extractArchive(
  file: string,
  kind: ArchiveKind,
  into: string,
  limits: ExtractLimits = defaultLimits,
): Promise<void> {
  removeDeadTemps(path.dirname(into));
  const temp = tempPathFor(into);
  fs.mkdirSync(temp, { recursive: true });
  try {
    if (kind === 'zip') await extractZip(file, temp, limits);
    else await extractTar(file, temp, limits);
    try {
      fs.renameSync(temp, into);
    } catch (error) {
      // Another process finished the same extraction first: use theirs.
      if (!['ENOTEMPTY', 'EEXIST'].includes((error as NodeJS.ErrnoException).code ?? '')) throw error;
      fs.rmSync(temp, { recursive: true, force: true });
    }
  } catch (error) {
    fs.rmSync(temp, { recursive: true, force: true });
    if (error instanceof UserError) throw error;
    throw new UserError(
      `cannot extract ${path.basename(file)}: ${error instanceof Error ? error.message : String(error)}`,
    );
  }
}
