import fs from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';

/**
 * Runs `load` with file descriptor 2 pointed at a temp file, and returns what was written
 * there. TensorFlow's C++ start-up lines (oneDNN on an AVX-512 CPU, CPU feature notes) are
 * written by abseil's logger straight to fd 2 while the library loads, before
 * TF_CPP_MIN_LOG_LEVEL is read, so only a redirection of the descriptor itself keeps them off
 * the terminal. libc's dup/dup2 are reached through koffi (an FFI with prebuilt binaries);
 * where that is not possible (no glibc), `load` runs as it is and the lines stay visible.
 */
export function withStderrCaptured<T>(load: () => T): { value: T; captured: string } {
  const libc = loadLibc();
  if (!libc) return { value: load(), captured: '' };
  const file = path.join(os.tmpdir(), `tlx-stderr-${process.pid}-${Date.now()}.log`);
  const target = fs.openSync(file, 'w+', 0o600);
  const saved = libc.dup(2);
  try {
    libc.dup2(target, 2);
    let value: T;
    try {
      value = load();
    } finally {
      libc.dup2(saved, 2);
    }
    return { value, captured: fs.readFileSync(file, 'utf8') };
  } catch (error) {
    // A failed load keeps what it printed: it may be the reason.
    if (error instanceof Error) error.message += readTail(file);
    throw error;
  } finally {
    libc.close(saved);
    fs.closeSync(target);
    fs.rmSync(file, { force: true });
  }
}

function readTail(file: string): string {
  const text = fs.readFileSync(file, 'utf8').trim();
  return text ? `\n${text.split('\n').slice(-10).join('\n')}` : '';
}

interface Libc {
  dup(fd: number): number;
  dup2(fd: number, target: number): number;
  close(fd: number): number;
}

function loadLibc(): Libc | undefined {
  if (process.platform !== 'linux') return undefined;
  try {
    // require, not import: koffi is optional at run time, and a missing binary must not stop tlx.
    const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
    const lib = koffi.load('libc.so.6');
    return { dup: lib.func('int dup(int)'), dup2: lib.func('int dup2(int, int)'), close: lib.func('int close(int)') };
  } catch {
    return undefined;
  }
}
