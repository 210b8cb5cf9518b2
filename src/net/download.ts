import fs from 'node:fs';
import path from 'node:path';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { setTimeout as wait } from 'node:timers/promises';
import { UserError, errorMessage } from '../core/errors.ts';
import { fsyncFile, removeDeadTemps, writeFileAtomic } from '../core/files.ts';
import { digestOfFile, sha256Hex, sha256OfFile } from '../core/hash.ts';
import { FolderLock } from '../core/lock.ts';
import { silentLogger, type Logger } from '../core/log.ts';
import { redactText, redactUrl } from '../core/redact.ts';
import { artifactScheme, resolveArtifactUri } from './mlflow-artifacts.ts';
import { backoffMs as backoffDelay, isPermanentNetworkError, retryAfterMs, retryableStatus } from './retry.ts';
import { formatBytes } from '../core/bytes.ts';

/**
 * The download cache shared by datasets and weight files: a URL is fetched once into
 * `<cache>/downloads/<key>/`, resumed with Range after a cut, capped in size, checked
 * against a sha256 when one is given, and recorded with its sha256 on first download,
 * which is verified on every later use (a cached file that changed is fetched again).
 * One process at a time fills an entry (a lock per entry; others wait and then use it).
 */

export interface DownloadOptions {
  cacheDir: string;
  /** Expected sha256 (lower-case hex); a mismatch discards the file. */
  sha256?: string;
  /**
   * Expected md5, checked once when the file is downloaded (Keras publishes md5 sums of its
   * application weights); the cache then verifies the file by the sha256 it recorded.
   */
  md5?: string;
  /** Refuse a download larger than this (Content-Length when given, else counted while streaming). */
  maxBytes?: number;
  /** Abort a request that receives no bytes for this long. */
  idleTimeoutMs?: number;
  /** Attempts after the first one, on connection errors, timeouts, truncation, 408, 429 and 5xx. */
  retries?: number;
  /** First backoff delay; doubles each retry, with jitter. */
  backoffMs?: number;
  /** Told of the bytes received so far (and the total, when the server says it): a progress display. */
  onProgress?: (received: number, total: number | undefined) => void;
  /** How long to wait for another process filling the same entry. */
  waitForOtherMs?: number;
  /** What the URL is for, in error messages (dataset.url, model.weights). */
  what?: string;
  log?: Logger;
}

export interface Downloaded {
  file: string;
  sha256: string;
  bytes: number;
  fromCache: boolean;
}

/** Twenty GiB: the default cap of a download and of an extraction. */
export const defaultMaxBytes = 20 * 1024 ** 3;

class RetryableError extends Error {
  constructor(
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

/** The file name a URL points at, made safe for the cache. */
export function fileNameOf(url: string): string {
  const name = decodeURIComponent(new URL(url).pathname.split('/').pop() || 'download');
  return name.replace(/[^\w.-]+/g, '_') || 'download';
}

/** Cache entry of a URL: keyed by URL and expected checksum, so a new checksum is a new entry. */
function cacheEntryOf(url: string, cacheDir: string, sha256?: string): string {
  const key = sha256Hex(`${url}\n${sha256 ?? ''}`).slice(0, 20);
  return path.join(cacheDir, 'downloads', key, fileNameOf(url));
}

function tooLarge(what: string, url: string, bytes: number, maxBytes: number, known: boolean): UserError {
  return new UserError(
    `${what}: ${redactUrl(url)} is ${known ? '' : 'over '}${formatBytes(bytes)}, over the limit of ${formatBytes(maxBytes)} (dataset.max_download_bytes); nothing was kept`,
  );
}

interface AttemptSettings {
  idleTimeoutMs: number;
  onProgress?: (received: number, total: number | undefined) => void;
  maxBytes: number;
  what: string;
}

/** Aborts a transfer that receives nothing for `ms`; every chunk resets the clock. */
class IdleAbort {
  readonly controller = new AbortController();
  private timer: NodeJS.Timeout;

  constructor(private readonly ms: number) {
    this.timer = this.arm();
  }

  private arm(): NodeJS.Timeout {
    return setTimeout(() => this.controller.abort(new Error(`no data for ${this.ms} ms`)), this.ms);
  }

  touch(): void {
    clearTimeout(this.timer);
    this.timer = this.arm();
  }

  stop(): void {
    clearTimeout(this.timer);
  }
}

/** The response to one request, or the reason to retry or give up (its body cancelled). */
async function openResponse(
  url: string,
  headers: Record<string, string>,
  have: number,
  partFile: string,
  signal: AbortSignal,
): Promise<Response & { body: ReadableStream<Uint8Array> }> {
  let response: Response;
  try {
    response = await fetch(url, {
      headers: have > 0 ? { ...headers, Range: `bytes=${have}-` } : headers,
      signal,
      redirect: 'follow',
    });
  } catch (error) {
    const reason = redactText(errorMessage((error as { cause?: unknown }).cause ?? error));
    if (isPermanentNetworkError(error))
      throw new UserError(`download of ${redactUrl(url)} failed: cannot resolve the host (${reason})`);
    throw new RetryableError(`cannot connect: ${reason}`);
  }
  if (response.status === 416 && have > 0) {
    fs.rmSync(partFile, { force: true });
    throw new RetryableError('server refused to resume (416); restarting');
  }
  if (retryableStatus.has(response.status)) {
    await response.body?.cancel();
    throw new RetryableError(`HTTP ${response.status}`, retryAfterMs(response.headers.get('retry-after')));
  }
  if (!response.ok || !response.body) {
    await response.body?.cancel();
    throw new UserError(`download of ${redactUrl(url)} failed: HTTP ${response.status} ${response.statusText}`);
  }
  return response as Response & { body: ReadableStream<Uint8Array> };
}

/** Streams the body into the partial file from `start`; true when it grew over the limit (the file is then removed). */
async function receiveBody(
  response: Response & { body: ReadableStream<Uint8Array> },
  partFile: string,
  start: number,
  total: number | undefined,
  idle: IdleAbort,
  settings: AttemptSettings,
): Promise<{ received: number; over: boolean }> {
  let received = start;
  let over = false;
  const body = Readable.fromWeb(response.body as import('node:stream/web').ReadableStream<Uint8Array>);
  const out = fs.createWriteStream(partFile, { flags: start > 0 ? 'a' : 'w' });
  try {
    for await (const chunk of body) {
      received += (chunk as Buffer).length;
      if (received > settings.maxBytes) {
        over = true;
        break;
      }
      idle.touch();
      settings.onProgress?.(received, total);
      if (!out.write(chunk)) await once(out, 'drain');
    }
  } catch (error) {
    throw new RetryableError(
      `transfer interrupted after ${received} bytes: ${redactText(errorMessage(idle.controller.signal.reason ?? error))}`,
    );
  } finally {
    idle.stop();
    // Flush what arrived, even after an error: the next attempt resumes from it.
    await new Promise<void>((resolve) => out.end(() => resolve()));
    if (over) {
      idle.controller.abort();
      fs.rmSync(partFile, { force: true });
    }
  }
  return { received, over };
}

/** One HTTP attempt: appends to the partial file when the server honours Range. */
async function attempt(
  url: string,
  headers: Record<string, string>,
  partFile: string,
  settings: AttemptSettings,
  log: Logger,
): Promise<void> {
  const have = fs.existsSync(partFile) ? fs.statSync(partFile).size : 0;
  const idle = new IdleAbort(settings.idleTimeoutMs);
  let response: Response & { body: ReadableStream<Uint8Array> };
  try {
    response = await openResponse(url, headers, have, partFile, idle.controller.signal);
  } catch (error) {
    idle.stop();
    throw error;
  }
  const resumed = response.status === 206 && have > 0;
  if (have > 0 && !resumed) log.info({ url: redactUrl(url) }, 'server does not resume; restarting the download');
  const start = resumed ? have : 0;
  const length = Number(response.headers.get('content-length') ?? NaN);
  const total = Number.isFinite(length) ? start + length : undefined;
  if (total !== undefined && total > settings.maxBytes) {
    idle.stop();
    await response.body.cancel();
    fs.rmSync(partFile, { force: true });
    throw tooLarge(settings.what, url, total, settings.maxBytes, true);
  }
  const { received, over } = await receiveBody(response, partFile, start, total, idle, settings);
  if (over) throw tooLarge(settings.what, url, received, settings.maxBytes, false);
  if (total !== undefined && received !== total)
    throw new RetryableError(`truncated body: got ${received} of ${total} bytes`);
}

async function copyLocal(url: string, partFile: string, settings: AttemptSettings): Promise<void> {
  const source = fileURLToPath(url);
  if (!fs.existsSync(source)) throw new UserError(`${settings.what}: ${url}: file not found`);
  const bytes = fs.statSync(source).size;
  if (bytes > settings.maxBytes) throw tooLarge(settings.what, url, bytes, settings.maxBytes, true);
  await pipeline(fs.createReadStream(source), fs.createWriteStream(partFile));
}

/** The HTTP download into partFile, attempt after attempt (resumed with Range) until it is whole or cannot be. */
async function fetchWithRetries(
  url: string,
  partFile: string,
  settings: AttemptSettings,
  options: DownloadOptions,
  log: Logger,
): Promise<void> {
  const source = httpSourceOf(url, settings.what);
  const retries = options.retries ?? 4;
  for (let attemptNo = 0; ; attemptNo++) {
    try {
      log.info({ url: redactUrl(url), attempt: attemptNo + 1 }, 'downloading');
      await attempt(source.url, source.headers, partFile, settings, log);
      return;
    } catch (error) {
      if (!(error instanceof RetryableError) || attemptNo >= retries) {
        if (error instanceof RetryableError)
          throw new UserError(`download of ${redactUrl(url)} failed after ${attemptNo + 1} attempts: ${error.message}`);
        throw error;
      }
      const delay = error.retryAfterMs ?? backoffDelay(options.backoffMs ?? 500, attemptNo);
      log.warn(
        { url: redactUrl(url), reason: error.message, retryInMs: Math.round(delay) },
        'download failed; retrying',
      );
      await wait(delay);
    }
  }
}

/** What to fetch for a URL: itself, or for `mlflow-artifacts:/...` the tracking server's artifact proxy with its credentials. */
function httpSourceOf(url: string, what: string): { url: string; headers: Record<string, string> } {
  if (!url.startsWith(artifactScheme)) return { url, headers: {} };
  try {
    return resolveArtifactUri(url);
  } catch (error) {
    throw new UserError(`${what}: ${errorMessage(error)}`);
  }
}

/** The cached file, if present and still the bytes recorded when it was downloaded. */
async function verifiedCacheHit(
  file: string,
  checksumFile: string,
  log: Logger,
  url: string,
): Promise<Downloaded | undefined> {
  if (!fs.existsSync(file) || !fs.existsSync(checksumFile)) return undefined;
  const recorded = fs.readFileSync(checksumFile, 'utf8').trim();
  const actual = await sha256OfFile(file);
  if (actual !== recorded) {
    log.warn(
      { url: redactUrl(url), file },
      'the cached download no longer matches the sha256 recorded when it was downloaded; fetching it again',
    );
    fs.rmSync(file, { force: true });
    fs.rmSync(checksumFile, { force: true });
    return undefined;
  }
  log.info({ url: redactUrl(url), file }, 'found in the download cache');
  return { file, sha256: recorded, bytes: fs.statSync(file).size, fromCache: true };
}

/**
 * Downloads a URL into the cache once. The bytes go to `<name>.part` (kept between
 * attempts so a retry resumes), are checked against sha256 when given, then renamed:
 * a file under its final name is always complete and verified.
 */
export async function downloadToCache(url: string, options: DownloadOptions): Promise<Downloaded> {
  const log = options.log ?? silentLogger;
  const what = options.what ?? 'download';
  const file = cacheEntryOf(url, options.cacheDir, options.sha256);
  const entry = path.dirname(file);
  const checksumFile = `${file}.sha256`;
  fs.mkdirSync(entry, { recursive: true });
  const lock = await FolderLock.acquireWhenFree(entry, `download cache entry ${entry}`, {
    timeoutMs: options.waitForOtherMs ?? 6 * 60 * 60_000,
    onWait: (owner) =>
      log.info({ url: redactUrl(url), pid: owner?.pid }, 'another process is downloading this file; waiting for it'),
    onTakeover: (owner, reason) =>
      log.warn({ entry, pid: owner?.pid }, `taking over the download left by a stopped process (${reason})`),
  });
  try {
    removeDeadTemps(entry);
    const hit = await verifiedCacheHit(file, checksumFile, log, url);
    if (hit) {
      if (options.sha256 && hit.sha256 !== options.sha256)
        throw new UserError(
          `${what}: the cached download of ${redactUrl(url)} has sha256 ${hit.sha256}, expected ${options.sha256}`,
        );
      return hit;
    }
    const partFile = `${file}.part`;
    const settings: AttemptSettings = {
      idleTimeoutMs: options.idleTimeoutMs ?? 60_000,
      onProgress: options.onProgress,
      maxBytes: options.maxBytes ?? defaultMaxBytes,
      what,
    };
    if (url.startsWith('file:')) await copyLocal(url, partFile, settings);
    else await fetchWithRetries(url, partFile, settings, options, log);
    const sha256 = await sha256OfFile(partFile);
    if (options.sha256 && sha256 !== options.sha256) {
      fs.rmSync(partFile, { force: true });
      throw new UserError(
        `${what}: the download of ${redactUrl(url)} has sha256 ${sha256}, expected ${options.sha256}; the file was discarded`,
      );
    }
    if (options.md5) {
      const md5 = await digestOfFile(partFile, 'md5');
      if (md5 !== options.md5) {
        fs.rmSync(partFile, { force: true });
        throw new UserError(
          `${what}: the download of ${redactUrl(url)} has md5 ${md5}, expected ${options.md5}; the file was discarded`,
        );
      }
    }
    fsyncFile(partFile);
    fs.renameSync(partFile, file);
    // Recorded last: a file without its checksum is not a cache hit and is fetched again.
    writeFileAtomic(checksumFile, `${sha256}\n`);
    return { file, sha256, bytes: fs.statSync(file).size, fromCache: false };
  } finally {
    lock.release();
  }
}
