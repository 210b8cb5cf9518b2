import fs from 'node:fs';
import path from 'node:path';
import type { ResolvedExperiment } from '../config/resolved.ts';
import { UserError } from '../core/errors.ts';
import { sha256Hex } from '../core/hash.ts';
import { silentLogger, type Logger } from '../core/log.ts';
import { redactedMark, redactUrl } from '../core/redact.ts';
import { resolveCacheDir } from '../net/cache-dir.ts';
import { defaultMaxBytes, downloadToCache, fileNameOf } from '../net/download.ts';
import { archiveKindOf, extractArchive, type ExtractLimits } from './extract.ts';
import { defaultMaxImagePixels, ImageSplit, type ImageSize, type StorageMode } from './images.ts';
import { planSplits, type DataPlan, type Scans, type SplitName } from './plan.ts';
import { scanClassFolders, type SkippedFile } from './scan.ts';
import { formatBytes } from '../core/bytes.ts';
import { diskRoom } from '../core/files.ts';
import { cacheMemoryBytes } from '../core/memory.ts';

export interface PrepareOptions {
  /** Folder of the experiment file: dataset.path is relative to it. */
  baseDir: string;
  cacheDir?: string;
  log?: Logger;
  /** Keep decoded images in memory up to this many bytes (default cacheMemoryBytes(): 512 MiB, or a smaller $TLX_MEMORY_BUDGET_MB); above it, a pixel file. */
  memoryBudgetBytes?: number;
  extractLimits?: Partial<ExtractLimits>;
  /**
   * The archive a run already used (dataset.json): a resumed run whose stored URL had its
   * secrets removed finds the extracted archive in the cache by this checksum.
   */
  knownArchiveSha256?: string;
}

interface DatasetSource {
  /** The folder the class folders were read from. */
  root: string;
  /** The URL with credentials and query removed (what may be written and logged). */
  url?: string;
  archiveSha256?: string;
  fromCache?: boolean;
}

/** Everything later stages need: class names, the three splits, what was skipped. */
export interface PreparedDataset {
  classNames: string[];
  splits: Record<SplitName, ImageSplit>;
  skipped: SkippedFile[];
  imageSize: ImageSize;
  storage: StorageMode;
  source: DatasetSource;
  /** sha256 of the archive, or of the sorted file list with sizes for a folder. */
  digest: string;
  /** Bytes of decoded pixels held in memory. */
  memoryBytes: number;
}

export function splitCounts(dataset: PreparedDataset): Record<SplitName, number> {
  return {
    train: dataset.splits.train.length,
    validation: dataset.splits.validation.length,
    test: dataset.splits.test.length,
  };
}

function extractedDirFor(cacheDir: string, archiveSha256: string): string {
  return path.join(cacheDir, 'extracted', archiveSha256.slice(0, 32));
}

/** Downloads (cached) and extracts (cached) a dataset.url; returns the dataset folder. */
async function fetchDataset(
  config: ResolvedExperiment['dataset'],
  cacheDir: string,
  log: Logger,
  options: PrepareOptions,
): Promise<DatasetSource> {
  const url = config.url!;
  const safeUrl = redactUrl(url);
  if (url.includes(redactedMark)) {
    // A stored config (resume, convert): its URL lost its secrets; the cache still has the data.
    const known = options.knownArchiveSha256 ?? config.sha256;
    if (known && fs.existsSync(extractedDirFor(cacheDir, known)))
      return { root: extractedDirFor(cacheDir, known), url: safeUrl, archiveSha256: known, fromCache: true };
    throw new UserError(
      `dataset.url: ${safeUrl}: the run stored this URL without its credentials and the archive is no longer in the cache (${cacheDir}); run the experiment file again`,
    );
  }
  const kind = archiveKindOf(fileNameOf(url));
  if (!kind) throw new UserError(`dataset.url: ${safeUrl}: expected a .zip, .tar, .tar.gz or .tgz archive`);
  const downloaded = await downloadToCache(url, {
    cacheDir,
    sha256: config.sha256,
    maxBytes: config.max_download_bytes ?? defaultMaxBytes,
    what: 'dataset.url',
    log,
  });
  const extracted = extractedDirFor(cacheDir, downloaded.sha256);
  if (!fs.existsSync(extracted)) {
    log.info({ archive: downloaded.file }, 'extracting');
    await extractArchive(downloaded.file, kind, extracted, {
      maxEntries: options.extractLimits?.maxEntries ?? 500_000,
      maxBytes: options.extractLimits?.maxBytes ?? config.max_extracted_bytes ?? defaultMaxBytes,
    });
  }
  return { root: extracted, url: safeUrl, archiveSha256: downloaded.sha256, fromCache: downloaded.fromCache };
}

/** The dataset folder: `subdir`, else the archive's single top-level folder, else the root. */
function datasetRoot(root: string, subdir: string | undefined, fromArchive: boolean): string {
  if (subdir) {
    const inner = path.resolve(root, subdir);
    if (!inner.startsWith(path.resolve(root) + path.sep) && inner !== path.resolve(root))
      throw new UserError(`dataset.subdir: ${subdir} leaves the dataset folder`);
    if (!fs.existsSync(inner)) throw new UserError(`dataset.subdir: ${subdir} not found in ${root}`);
    return inner;
  }
  if (!fromArchive) return root;
  const top = fs
    .readdirSync(root, { withFileTypes: true })
    .filter((e) => !e.name.startsWith('.') && e.name !== '__MACOSX');
  return top.length === 1 && top[0].isDirectory() ? path.join(root, top[0].name) : root;
}

function scanDataset(config: ResolvedExperiment['dataset'], root: string): Scans {
  if (config.train_dir && config.validation_dir) {
    return {
      root,
      train: scanClassFolders(path.join(root, config.train_dir), 'dataset.train_dir'),
      validation: scanClassFolders(path.join(root, config.validation_dir), 'dataset.validation_dir'),
    };
  }
  return { root, all: scanClassFolders(root, 'dataset') };
}

/** The digest of a folder dataset: sha256 over its planned files (relative path and size), sorted. */
function folderDigest(plan: DataPlan, root: string): string {
  const lines = Object.values(plan.splits)
    .flat()
    .map((sample) => `${path.relative(root, sample.file)}\t${fs.statSync(sample.file).size}`)
    .sort();
  return sha256Hex(lines.join('\n'));
}

function memoryBudget(options: PrepareOptions): number {
  if (options.memoryBudgetBytes !== undefined) return options.memoryBudgetBytes;
  return cacheMemoryBytes();
}

/**
 * dataset: from the config to decoded splits. Fetches and extracts (cached), scans the
 * class folders, plans the splits with the seed, then decodes and resizes every image
 * once, keeping them in memory when they fit the budget.
 */
export async function prepareDataset(config: ResolvedExperiment, options: PrepareOptions): Promise<PreparedDataset> {
  const log = options.log ?? silentLogger;
  const cacheDir = resolveCacheDir(options.cacheDir);
  const source: DatasetSource = config.dataset.url
    ? await fetchDataset(config.dataset, cacheDir, log, options)
    : { root: path.resolve(options.baseDir, config.dataset.path!) };
  source.root = datasetRoot(source.root, config.dataset.subdir, Boolean(config.dataset.url));
  const plan: DataPlan = planSplits(scanDataset(config.dataset, source.root), config.dataset, config.seed);
  const imageSize = config.dataset.image_size as ImageSize;
  const total = plan.splits.train.length + plan.splits.validation.length + plan.splits.test.length;
  const bytes = total * imageSize[0] * imageSize[1] * 3;
  const inMemory = memoryBudget(options);
  const storage: StorageMode = bytes <= inMemory ? 'memory' : 'stream';
  const pixelDir = storage === 'stream' && diskRoom(cacheDir) > bytes ? path.join(cacheDir, 'pixels') : undefined;
  log.info(
    { images: total, storage, bytes, ...(pixelDir ? { pixel_dir: pixelDir } : {}) },
    storage === 'memory'
      ? `decoding ${total} images once and keeping them in memory (${formatBytes(bytes)} as uint8)`
      : pixelDir
        ? `${total} images need ${formatBytes(bytes)}, over the ${formatBytes(inMemory)} kept in memory: decoding them once into a pixel file under ${pixelDir} (removed when tlx exits); epochs stream from it`
        : `${total} images need ${formatBytes(bytes)}, over the ${formatBytes(inMemory)} kept in memory, and the disk under ${cacheDir} has no room for them decoded: decoding each batch again from its files`,
  );
  const skipped = [...plan.skipped];
  const splits = {} as Record<SplitName, ImageSplit>;
  const maxPixels = config.dataset.max_image_pixels ?? defaultMaxImagePixels;
  for (const name of ['train', 'validation', 'test'] as const) {
    const { split, bad } = ImageSplit.load(plan.splits[name], imageSize, storage, maxPixels, pixelDir);
    splits[name] = split;
    skipped.push(...bad.map((b) => ({ ...b, file: path.relative(source.root, b.file) })));
  }
  if (skipped.length > 0) {
    if (config.dataset.on_bad_file === 'fail') {
      throw new UserError(
        `dataset: ${skipped.length} file(s) are not usable images (on_bad_file: fail): ${skipped
          .slice(0, 5)
          .map((s) => `${s.file} (${s.reason})`)
          .join('; ')}`,
      );
    }
    log.warn(
      { count: skipped.length, first: skipped.slice(0, 5).map((s) => s.file) },
      `skipped ${skipped.length} file(s) that are not usable images`,
    );
  }
  for (const name of ['train', 'validation'] as const) {
    if (splits[name].length === 0) throw new UserError(`dataset: no usable images in the ${name} split`);
  }
  const digest = source.archiveSha256 ?? folderDigest(plan, source.root);
  const memoryBytes =
    storage === 'memory'
      ? Object.values(splits).reduce((sum, split) => sum + split.length * split.bytesPerImage, 0)
      : 0;
  return { classNames: plan.classNames, splits, skipped, imageSize, storage, source, digest, memoryBytes };
}
