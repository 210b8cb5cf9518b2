// The sources as one ES module, for bin/tlx.mjs: a tlx command starts ~0.5 s sooner from a
// bundle than from ~130 TypeScript files compiled one by one through tsx's loader hooks. The
// bundle is made by esbuild (the compiler tsx itself runs), from the same sources, and only
// used while it is newer than every one of them: a command after an edit rebuilds it first
// (~0.2 s), and anything unexpected falls back to tsx, so there is no build step to forget.
//
// It lives in build/<stamp>/ (two levels down, as the sources' own files are, so their paths
// relative to import.meta.url hold: the project root, schemas/, decode-thread.mjs beside
// it). The stamp names the sources' state; a new state gets a new folder, so a process
// still running an older bundle never sees it change under it.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const buildDir = path.join(root, 'build');
const entries = { tlx: 'src/cli.ts', 'decode-thread': 'src/data/decode-thread.ts' };

/** Every source file with its mtime and size: the state a bundle is made from. */
function sourceState() {
  const files = [];
  const visit = (dir) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) visit(full);
      else if (/\.(ts|mjs|json)$/.test(entry.name)) {
        const stat = fs.statSync(full);
        files.push(`${path.relative(root, full)}:${stat.mtimeMs}:${stat.size}`);
      }
    }
  };
  visit(path.join(root, 'src'));
  return createHash('sha256').update(files.sort().join('\n')).digest('hex').slice(0, 16);
}

async function build(target) {
  const { build: esbuild } = await import('esbuild');
  const temp = `${target}.tmp-${process.pid}`;
  fs.rmSync(temp, { recursive: true, force: true });
  await esbuild({
    absWorkingDir: root,
    entryPoints: entries,
    outdir: temp,
    outExtension: { '.js': '.mjs' },
    bundle: true,
    // Commands load what they need when they run (cli.ts imports each one dynamically): tlx validate never starts TensorFlow.
    splitting: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    packages: 'external',
    sourcemap: 'linked',
    logLevel: 'silent',
  });
  try {
    fs.renameSync(temp, target);
  } catch (error) {
    // Another process built the same state first: use theirs.
    fs.rmSync(temp, { recursive: true, force: true });
    if (!fs.existsSync(target)) throw error;
  }
  removeOldBundles(target);
}

/** Bundles of other states more than a day old (a process still running one is long done). */
function removeOldBundles(keep) {
  const dayAgo = Date.now() - 24 * 60 * 60 * 1000;
  for (const name of fs.readdirSync(buildDir)) {
    const dir = path.join(buildDir, name);
    if (dir !== keep && fs.statSync(dir).mtimeMs < dayAgo) fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** The URL of a bundle of the sources as they are now (made if needed), or undefined to run them through tsx. */
export async function freshBundle() {
  if (process.env.TLX_NO_BUNDLE) return undefined;
  try {
    const target = path.join(buildDir, sourceState());
    if (!fs.existsSync(path.join(target, 'tlx.mjs'))) {
      fs.mkdirSync(buildDir, { recursive: true });
      await build(target);
    }
    return pathToFileURL(path.join(target, 'tlx.mjs')).href;
  } catch {
    return undefined;
  }
}
