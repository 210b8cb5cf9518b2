import fs from 'node:fs';
import os from 'node:os';

/**
 * The memory this process can use, counting what it holds already: $TLX_MEMORY_BUDGET_MB when
 * set; otherwise the smaller of its cgroup's room (a container's or systemd unit's memory.max,
 * less what the rest of the cgroup uses) and the machine's available memory (MemAvailable,
 * which counts reclaimable page cache as available).
 */
export interface MemoryLimit {
  bytes: number;
  /** Where the number comes from, for messages. */
  source: string;
}

const mib = 1024 ** 2;

/**
 * The most a cache (decoded pixels, the frozen layers' outputs) holds in memory by default;
 * a larger one is a file read back per batch. The file costs little time (the OS keeps it in
 * its page cache while memory is free) and keeps tlx's resident memory near what Keras's
 * streaming pipeline uses (issue 36: 60,000 images at 96 px were 1.5 GiB of pixels).
 */
const inMemoryCacheBytes = 512 * mib;

/**
 * The most one cache keeps in memory: $TLX_CACHE_MEMORY_MB when set (0: every cache is a
 * file), else inMemoryCacheBytes, or less under a smaller $TLX_MEMORY_BUDGET_MB.
 */
export function cacheMemoryBytes(): number {
  const mb = Number(process.env.TLX_CACHE_MEMORY_MB);
  if (process.env.TLX_CACHE_MEMORY_MB !== undefined && Number.isFinite(mb) && mb >= 0) return mb * mib;
  return Math.min(inMemoryCacheBytes, memoryBudgetFromEnv() ?? Number.POSITIVE_INFINITY);
}

function readNumber(file: string): number | undefined {
  try {
    const text = fs.readFileSync(file, 'utf8').trim();
    const value = Number(text);
    return text !== 'max' && Number.isFinite(value) ? value : undefined;
  } catch {
    return undefined;
  }
}

/** The folders that may hold this process's memory cgroup: its own path (v2's "0::", v1's "memory:"), then the mount's root (a container sees its own cgroup there). */
function cgroupDirs(): { limit: string; usage: string }[] {
  let lines: string[] = [];
  try {
    lines = fs.readFileSync('/proc/self/cgroup', 'utf8').split('\n');
  } catch {
    // not Linux, or /proc is not mounted
  }
  const pathOf = (prefix: RegExp) => lines.find((line) => prefix.test(line))?.replace(prefix, '');
  const v2 = pathOf(/^0::/);
  const v1 = pathOf(/^\d+:memory:/);
  return [
    ...(v2 !== undefined
      ? [{ limit: `/sys/fs/cgroup${v2}/memory.max`, usage: `/sys/fs/cgroup${v2}/memory.current` }]
      : []),
    ...(v1 !== undefined
      ? [
          {
            limit: `/sys/fs/cgroup/memory${v1}/memory.limit_in_bytes`,
            usage: `/sys/fs/cgroup/memory${v1}/memory.usage_in_bytes`,
          },
        ]
      : []),
    { limit: '/sys/fs/cgroup/memory.max', usage: '/sys/fs/cgroup/memory.current' },
    { limit: '/sys/fs/cgroup/memory/memory.limit_in_bytes', usage: '/sys/fs/cgroup/memory/memory.usage_in_bytes' },
  ];
}

/** Room left under the cgroup's limit for this process (its own usage included), if it has one. */
function cgroupRoom(ownBytes: number): number | undefined {
  for (const dir of cgroupDirs()) {
    const limit = readNumber(dir.limit);
    const used = readNumber(dir.usage);
    // v2 writes "max" when unlimited; v1 a number near 2^63.
    if (limit !== undefined && used !== undefined && limit < 2 ** 60) return limit - used + ownBytes;
  }
  return undefined;
}

/** A positive number of MiB in $TLX_MEMORY_BUDGET_MB, in bytes. */
function memoryBudgetFromEnv(): number | undefined {
  const mb = Number(process.env.TLX_MEMORY_BUDGET_MB);
  return process.env.TLX_MEMORY_BUDGET_MB !== undefined && Number.isFinite(mb) && mb > 0 ? mb * mib : undefined;
}

export function memoryLimit(ownBytes = process.memoryUsage().rss): MemoryLimit {
  const budget = memoryBudgetFromEnv();
  if (budget !== undefined) return { bytes: budget, source: 'TLX_MEMORY_BUDGET_MB' };
  // os.freemem() is MemAvailable on Linux.
  const machine = { bytes: os.freemem() + ownBytes, source: 'the memory available on this machine' };
  const cgroup = cgroupRoom(ownBytes);
  return cgroup !== undefined && cgroup < machine.bytes
    ? { bytes: cgroup, source: "this process's cgroup limit (memory.max)" }
    : machine;
}
