import fs from 'node:fs';
import path from 'node:path';
import { someOf, UserError } from '../core/errors.ts';

/** Extensions tf.keras.utils.image_dataset_from_directory reads. */
export const imageExtensions = ['.bmp', '.gif', '.jpeg', '.jpg', '.png'];

export interface SkippedFile {
  file: string;
  reason: string;
}

export interface ClassFolderScan {
  /** Sorted class names (sub-folder names), label = index. */
  classNames: string[];
  /** Image files per class, sorted, as paths relative to the scanned folder. */
  filesByClass: string[][];
  /** Files with other extensions: not images, recorded rather than silently dropped. */
  skipped: SkippedFile[];
}

/** Why a folder name cannot be a class name (it would change labels.txt's lines or escape a path), if it cannot. */
function unsafeClassNameReason(name: string): string | undefined {
  if (/[\n\r]/.test(name)) return 'contains a line break';
  if (/[\u0000-\u001f\u007f]/.test(name)) return 'contains a control character';
  if (/[\\/]/.test(name)) return 'contains a path separator';
  if (name.trim() !== name) return 'starts or ends with white space';
  return undefined;
}

function walk(dir: string, relative: string, out: string[]): void {
  for (const entry of fs
    .readdirSync(dir, { withFileTypes: true })
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
    if (entry.name.startsWith('.')) continue;
    const rel = path.join(relative, entry.name);
    if (entry.isDirectory()) walk(path.join(dir, entry.name), rel, out);
    else if (entry.isFile()) out.push(rel);
  }
}

/**
 * Reads a class-per-sub-folder layout as image_dataset_from_directory does: class names
 * are the sub-folder names, sorted; labels are their indices; files inside are found
 * recursively and sorted.
 */
export function scanClassFolders(root: string, what: string): ClassFolderScan {
  if (!fs.existsSync(root)) throw new UserError(`${what}: folder ${root} does not exist`);
  if (!fs.statSync(root).isDirectory()) throw new UserError(`${what}: ${root} is not a folder`);
  const classNames = fs
    .readdirSync(root, { withFileTypes: true })
    .filter((entry) => entry.isDirectory() && !entry.name.startsWith('.') && entry.name !== '__MACOSX')
    .map((entry) => entry.name)
    .sort();
  const bad = classNames.filter((name) => unsafeClassNameReason(name) !== undefined);
  if (bad.length > 0) {
    throw new UserError(
      `${what}: class folder names become lines of labels.txt and category names in the model; refused: ${someOf(bad.map((name) => `${JSON.stringify(name)} (${unsafeClassNameReason(name)})`))}`,
    );
  }
  if (classNames.length === 0)
    throw new UserError(`${what}: no class folders in ${root}; expected one sub-folder of images per class`);
  if (classNames.length === 1)
    throw new UserError(
      `${what}: only one class folder (${classNames[0]}) in ${root}; a classifier needs at least two`,
    );
  const skipped: SkippedFile[] = [];
  const filesByClass = classNames.map((className) => {
    const all: string[] = [];
    walk(path.join(root, className), className, all);
    const images = all.filter((file) => imageExtensions.includes(path.extname(file).toLowerCase()));
    for (const file of all)
      if (!images.includes(file))
        skipped.push({ file, reason: 'not an image file type (expected .jpg, .jpeg, .png, .gif or .bmp)' });
    return images;
  });
  const empty = classNames.filter((_, i) => filesByClass[i].length === 0);
  if (empty.length > 0) throw new UserError(`${what}: class folder(s) with no images in ${root}: ${someOf(empty)}`);
  return { classNames, filesByClass, skipped };
}
