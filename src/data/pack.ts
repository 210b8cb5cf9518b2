import fs from 'node:fs';
import path from 'node:path';
import * as tar from 'tar';
import { tempPathFor } from '../core/files.ts';
import { sha256OfFile } from '../core/hash.ts';

/**
 * A folder as a tar archive that depends only on its files: regular files in sorted order,
 * no owners, no times. The same data gives the same bytes, hence the same sha256, on every
 * machine, so an archive can be stored under its digest and sent once. Links and special
 * files are left out (and counted): extraction refuses them anyway.
 */
export async function packFolder(
  dir: string,
  file: string,
): Promise<{ sha256: string; bytes: number; files: number; leftOut: number }> {
  const { files, leftOut } = regularFiles(dir);
  const temp = tempPathFor(file);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  try {
    await tar.c({ file: temp, cwd: dir, portable: true, noMtime: true, noDirRecurse: true }, files);
    fs.renameSync(temp, file);
  } finally {
    fs.rmSync(temp, { force: true });
  }
  return { sha256: await sha256OfFile(file), bytes: fs.statSync(file).size, files: files.length, leftOut };
}

/** Relative paths of the regular files under `dir` (POSIX separators), sorted; how many entries were not. */
function regularFiles(dir: string): { files: string[]; leftOut: number } {
  const files: string[] = [];
  let leftOut = 0;
  const visit = (relative: string) => {
    for (const entry of fs.readdirSync(path.join(dir, relative), { withFileTypes: true })) {
      const name = relative ? `${relative}/${entry.name}` : entry.name;
      if (entry.isDirectory()) visit(name);
      else if (entry.isFile()) files.push(name);
      else leftOut++;
    }
  };
  visit('');
  return { files: files.sort(), leftOut };
}
