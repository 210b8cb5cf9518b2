import path from 'node:path';
import { execa } from 'execa';
import { projectRoot } from '../../src/core/project.ts';

export const tlxBin = path.join(projectRoot, 'bin', 'tlx.mjs');

/** Runs the real CLI as a user would, never throwing on a non-zero exit. */
export async function runTlx(
  args: string[],
  options: { cwd?: string; env?: Record<string, string>; timeout?: number } = {},
) {
  return execa(process.execPath, [tlxBin, ...args], {
    cwd: options.cwd ?? projectRoot,
    env: { ...options.env },
    reject: false,
    timeout: options.timeout ?? 120_000,
    stdin: 'ignore',
  });
}
