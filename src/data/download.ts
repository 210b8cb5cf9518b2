import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import cliProgress from 'cli-progress';
import { UserError, errorMessage } from '../errors.ts';
import { sha256Hex } from '../hash.ts';
import { backoffMs as backoffDelay, retryAfterMs, retryableStatus, sleep } from '../http-retry.ts';
import { silentLogger, type Logger } from '../log.ts';

export interface DownloadOptions {
  cacheDir: string;
  /** Expected sha256 (lower-case hex); a mismatch discards the file. */
  sha256?: string;
  /** Abort a request that receives no bytes for this long. */
  idleTimeoutMs?: number;
  /** Attempts after the first one, on connection errors, timeouts, truncation, 408, 429 and 5xx. */
  retries?: number;
  /** First backoff delay; doubles each retry, with jitter. */
  backoffMs?: number;
  /** Show a progress bar (default: when stderr is a terminal). */
  progress?: boolean;
  log?: Logger;
}

export interface Downloaded {
  file: string;
  sha256: string;
  bytes: number;
  fromCache: boolean;
}

class RetryableError extends Error {
  constructor(
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}


export async function sha256OfFile(file: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(fs.createReadStream(file), hash);
  return hash.digest('hex');
}

/** The file name a URL points at, made safe for the cache. */
export function fileNameOf(url: string): string {
  const name = decodeURIComponent(new URL(url).pathname.split('/').pop() || 'download');
  return name.replace(/[^\w.-]+/g, '_') || 'download';
}

/** Cache entry of a URL: keyed by URL and expected checksum, so a new checksum is a new entry. */
export function cacheEntryOf(url: string, cacheDir: string, sha256?: string): string {
  const key = sha256Hex(`${url}\n${sha256 ?? ''}`).slice(0, 20);
  return path.join(cacheDir, 'downloads', key, fileNameOf(url));
}



/** One HTTP attempt: appends to the partial file when the server honours Range. */
async function attempt(url: string, partFile: string, options: Required<Pick<DownloadOptions, 'idleTimeoutMs' | 'progress'>>, log: Logger): Promise<void> {
  const have = fs.existsSync(partFile) ? fs.statSync(partFile).size : 0;
  const controller = new AbortController();
  let idle = setTimeout(() => controller.abort(new Error(`no data for ${options.idleTimeoutMs} ms`)), options.idleTimeoutMs);
  const touch = () => {
    clearTimeout(idle);
    idle = setTimeout(() => controller.abort(new Error(`no data for ${options.idleTimeoutMs} ms`)), options.idleTimeoutMs);
  };
  let response: Response;
  try {
    response = await fetch(url, { headers: have > 0 ? { Range: `bytes=${have}-` } : {}, signal: controller.signal, redirect: 'follow' });
  } catch (error) {
    clearTimeout(idle);
    throw new RetryableError(`cannot connect: ${errorMessage((error as { cause?: unknown }).cause ?? error)}`);
  }
  if (response.status === 416 && have > 0) {
    clearTimeout(idle);
    fs.rmSync(partFile, { force: true });
    throw new RetryableError('server refused to resume (416); restarting');
  }
  if (retryableStatus.has(response.status)) {
    clearTimeout(idle);
    await response.body?.cancel();
    throw new RetryableError(`HTTP ${response.status}`, retryAfterMs(response.headers.get('retry-after')));
  }
  if (!response.ok || !response.body) {
    clearTimeout(idle);
    await response.body?.cancel();
    throw new UserError(`download of ${url} failed: HTTP ${response.status} ${response.statusText}`);
  }
  const resumed = response.status === 206 && have > 0;
  if (have > 0 && !resumed) log.info({ url }, 'server does not resume; restarting the download');
  const start = resumed ? have : 0;
  const length = Number(response.headers.get('content-length') ?? NaN);
  const total = Number.isFinite(length) ? start + length : undefined;
  const bar = options.progress && total ? new cliProgress.SingleBar({ format: `${fileNameOf(url)} [{bar}] {percentage}% {value}/{total} bytes`, stream: process.stderr }, cliProgress.Presets.shades_classic) : undefined;
  bar?.start(total ?? 0, start);
  let received = start;
  const body = Readable.fromWeb(response.body as import('node:stream/web').ReadableStream<Uint8Array>);
  const out = fs.createWriteStream(partFile, { flags: resumed ? 'a' : 'w' });
  try {
    for await (const chunk of body) {
      received += (chunk as Buffer).length;
      touch();
      bar?.update(received);
      if (!out.write(chunk)) await once(out, 'drain');
    }
  } catch (error) {
    throw new RetryableError(`transfer interrupted after ${received} bytes: ${errorMessage(controller.signal.reason ?? error)}`);
  } finally {
    clearTimeout(idle);
    bar?.stop();
    // Flush what arrived, even after an error: the next attempt resumes from it.
    await new Promise<void>((resolve) => out.end(() => resolve()));
  }
  if (total !== undefined && received !== total) throw new RetryableError(`truncated body: got ${received} of ${total} bytes`);
}

async function copyLocal(url: string, partFile: string): Promise<void> {
  const source = fileURLToPath(url);
  if (!fs.existsSync(source)) throw new UserError(`dataset.url: ${url}: file not found`);
  await pipeline(fs.createReadStream(source), fs.createWriteStream(partFile));
}

/**
 * Downloads a URL into the cache once. The bytes go to `<name>.part` (kept between
 * attempts so a retry resumes), are checked against sha256 when given, then renamed:
 * a file under its final name is always complete and verified.
 */
export async function downloadToCache(url: string, options: DownloadOptions): Promise<Downloaded> {
  const log = options.log ?? silentLogger;
  const file = cacheEntryOf(url, options.cacheDir, options.sha256);
  const checksumFile = `${file}.sha256`;
  if (fs.existsSync(file) && fs.existsSync(checksumFile)) {
    const sha256 = fs.readFileSync(checksumFile, 'utf8').trim();
    log.info({ url, file }, 'dataset archive found in the cache');
    return { file, sha256, bytes: fs.statSync(file).size, fromCache: true };
  }
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const partFile = `${file}.part`;
  const retries = options.retries ?? 4;
  const backoffMs = options.backoffMs ?? 500;
  const settings = { idleTimeoutMs: options.idleTimeoutMs ?? 60_000, progress: options.progress ?? Boolean(process.stderr.isTTY) };
  if (url.startsWith('file:')) {
    await copyLocal(url, partFile);
  } else {
    for (let attemptNo = 0; ; attemptNo++) {
      try {
        log.info({ url, attempt: attemptNo + 1 }, 'downloading');
        await attempt(url, partFile, settings, log);
        break;
      } catch (error) {
        if (!(error instanceof RetryableError) || attemptNo >= retries) {
          if (error instanceof RetryableError) throw new UserError(`download of ${url} failed after ${attemptNo + 1} attempts: ${error.message}`);
          throw error;
        }
        const delay = error.retryAfterMs ?? backoffDelay(backoffMs, attemptNo);
        log.warn({ url, reason: error.message, retryInMs: Math.round(delay) }, 'download failed; retrying');
        await sleep(delay);
      }
    }
  }
  const sha256 = await sha256OfFile(partFile);
  if (options.sha256 && sha256 !== options.sha256) {
    fs.rmSync(partFile, { force: true });
    throw new UserError(`dataset.sha256: the download of ${url} has sha256 ${sha256}, expected ${options.sha256}; the file was discarded`);
  }
  fs.writeFileSync(`${checksumFile}.tmp`, `${sha256}\n`);
  fs.renameSync(partFile, file);
  fs.renameSync(`${checksumFile}.tmp`, checksumFile);
  return { file, sha256, bytes: fs.statSync(file).size, fromCache: false };
}
