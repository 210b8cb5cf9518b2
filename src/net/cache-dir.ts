import os from 'node:os';
import path from 'node:path';

/** The download/extraction cache: --cache-dir, else $TLX_CACHE_DIR, else the user's cache dir. */
export function resolveCacheDir(flag?: string): string {
  if (flag) return path.resolve(flag);
  if (process.env.TLX_CACHE_DIR) return path.resolve(process.env.TLX_CACHE_DIR);
  const base = process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
  return path.join(base, 'tlx');
}
