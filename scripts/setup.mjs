#!/usr/bin/env node
// Project set-up run by `npm install` (postinstall). It does what would otherwise be
// manual steps on a fresh machine:
//   1. a Python virtual environment in .venv with python/requirements.txt (pinned);
//   2. @tensorflow/tfjs-node built against the TensorFlow shared libraries of that
//      wheel. tfjs-node's own install script downloads libtensorflow from a host this
//      project's machines cannot reach, so package.json denies it (allowScripts) and
//      this script stages the wheel's libraries where the binding expects them. Before
//      building, patch-package applies patches/ to the binding's source (it lets ops take
//      list(string) and list(type) attributes, which the fused conv kernels need, and adds
//      loadOpLibrary, TensorFlow's TF_LoadLibrary);
//   3. tlx's own TensorFlow kernels (native/tlx_ops.cc: hard-swish and swish with their
//      gradients in one pass each, a 5x5 depthwise filter's gradient), compiled with g++ for
//      this machine's CPU against the same wheel into
//      native/build/tlx_ops.so.
// Never run patch-package on tfjs-node to regenerate the patch: deps/include is a symlink
// into the wheel, and patch-package's clean-up deletes files through it (the wheel then has
// to be reinstalled). Edit the patch by hand (diff -u against the npm tarball's file).
// Each step is skipped when its result is already present and up to date, so a
// second `npm install` is fast. Only PyPI (through pip) is contacted.
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const venv = process.env.TLX_VENV ?? path.join(root, '.venv');
const venvPython = path.join(venv, 'bin', 'python');
const requirements = path.join(root, 'python', 'requirements.txt');
const constraints = path.join(root, 'python', 'constraints.txt');
const tfjsNode = path.join(root, 'node_modules', '@tensorflow', 'tfjs-node');
const bindingPatch = path.join(root, 'patches', '@tensorflow+tfjs-node+4.22.0.patch');

function log(message) {
  console.error(`[tlx setup] ${message}`);
}

function run(command, args, options = {}) {
  log(`$ ${command} ${args.join(' ')}`);
  execFileSync(command, args, { stdio: 'inherit', ...options });
}

function sha256(file) {
  return createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

function findSystemPython() {
  for (const candidate of [process.env.TLX_PYTHON, 'python3.11', 'python3']) {
    if (!candidate) continue;
    try {
      const version = execFileSync(candidate, ['-c', 'import sys; print(sys.version_info[:2] >= (3, 10))'], {
        encoding: 'utf8',
      }).trim();
      if (version === 'True') return candidate;
    } catch {
      // try the next candidate
    }
  }
  throw new Error(
    'No Python >= 3.10 found (tried $TLX_PYTHON, python3.11, python3). Install Python 3.11 and rerun `npm install`.',
  );
}

function ensureVenv() {
  const stamp = path.join(venv, '.tlx-requirements.sha256');
  const wanted = sha256(requirements) + sha256(constraints);
  if (fs.existsSync(venvPython) && fs.existsSync(stamp) && fs.readFileSync(stamp, 'utf8').trim() === wanted) {
    log(`Python environment ${path.relative(root, venv)} is up to date`);
    return;
  }
  if (!fs.existsSync(venvPython)) run(findSystemPython(), ['-m', 'venv', venv]);
  run(venvPython, ['-m', 'pip', 'install', '--disable-pip-version-check', '-q', '-r', requirements, '-c', constraints]);
  fs.writeFileSync(stamp, `${wanted}\n`);
}

function tensorflowPackageDir() {
  const dir = execFileSync(
    venvPython,
    ['-c', 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("tensorflow").origin))'],
    {
      encoding: 'utf8',
    },
  ).trim();
  for (const required of [
    'libtensorflow_cc.so.2',
    'libtensorflow_framework.so.2',
    'include/tensorflow/c/c_api.h',
    'include/tensorflow/c/eager/c_api.h',
  ]) {
    if (!fs.existsSync(path.join(dir, required))) {
      throw new Error(
        `The TensorFlow wheel in ${dir} lacks ${required}; cannot build the tfjs-node binding against it.`,
      );
    }
  }
  return dir;
}

function symlink(target, linkPath) {
  fs.rmSync(linkPath, { force: true, recursive: true });
  fs.symlinkSync(target, linkPath);
}

function findNodeHeaders() {
  const candidates = [process.env.npm_config_nodedir, path.resolve(process.execPath, '..', '..'), '/usr', '/usr/local'];
  for (const dir of candidates) {
    if (dir && fs.existsSync(path.join(dir, 'include', 'node', 'node_api.h'))) return dir;
  }
  throw new Error(
    'Node.js headers (include/node/node_api.h) not found; on Debian install them with `apt-get install libnode-dev`.',
  );
}

function bindingPath() {
  const napi = JSON.parse(fs.readFileSync(path.join(tfjsNode, 'package.json'), 'utf8')).binary.napi_versions;
  // tfjs-node builds for the highest N-API version it declares that Node supports.
  const version = Math.max(...napi.filter((v) => v <= Number(process.versions.napi)));
  return path.join(tfjsNode, 'lib', `napi-v${version}`, 'tfjs_binding.node');
}

function bindingLoads() {
  try {
    execFileSync(process.execPath, ['-e', 'require("@tensorflow/tfjs-node")'], { cwd: root, stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

function ensureTfjsBinding() {
  if (!fs.existsSync(tfjsNode)) throw new Error('node_modules/@tensorflow/tfjs-node is missing; run `npm install`.');
  const tfDir = tensorflowPackageDir();
  const stampFile = path.join(tfjsNode, 'deps', '.tlx-built-against');
  const builtAgainst = `${tfDir}\n${sha256(bindingPatch)}`;
  if (
    fs.existsSync(bindingPath()) &&
    fs.existsSync(stampFile) &&
    fs.readFileSync(stampFile, 'utf8') === builtAgainst &&
    bindingLoads()
  ) {
    log('tfjs-node binding is built and loads');
    return;
  }
  run(process.execPath, [path.join(root, 'node_modules', 'patch-package', 'index.js')], { cwd: root });
  const deps = path.join(tfjsNode, 'deps');
  const lib = path.join(deps, 'lib');
  fs.rmSync(deps, { recursive: true, force: true });
  fs.mkdirSync(lib, { recursive: true });
  symlink(path.join(tfDir, 'include'), path.join(deps, 'include'));
  const cc = path.join(tfDir, 'libtensorflow_cc.so.2');
  const framework = path.join(tfDir, 'libtensorflow_framework.so.2');
  // The wheel's libtensorflow_cc exports the whole C API under the names the binding links to.
  for (const name of ['libtensorflow.so.2.9.1', 'libtensorflow.so.2', 'libtensorflow.so', 'libtensorflow_cc.so.2'])
    symlink(cc, path.join(lib, name));
  for (const name of ['libtensorflow_framework.so.2.9.1', 'libtensorflow_framework.so.2', 'libtensorflow_framework.so'])
    symlink(framework, path.join(lib, name));
  // A custom tf-lib entry makes tfjs-node's install script build from source instead of
  // first trying to download a prebuilt addon; the library itself is already staged.
  fs.writeFileSync(path.join(tfjsNode, 'scripts', 'custom-binary.json'), JSON.stringify({ 'tf-lib': `file://${lib}` }));
  const env = {
    ...process.env,
    PATH: `${path.join(tfjsNode, 'node_modules', '.bin')}${path.delimiter}${path.join(root, 'node_modules', '.bin')}${path.delimiter}${process.env.PATH}`,
    npm_config_nodedir: findNodeHeaders(),
  };
  run(process.execPath, ['scripts/install.js'], { cwd: tfjsNode, env });
  if (!bindingLoads()) throw new Error('tfjs-node was built but does not load; see the output above.');
  fs.writeFileSync(stampFile, builtAgainst);
  log('tfjs-node binding built against the TensorFlow wheel');
}

/** The compiler flags TensorFlow's wheel gives for custom ops (include dir, ABI, C++ standard). */
function tensorflowBuildFlags() {
  const script =
    'import json, tensorflow as tf; print(json.dumps([tf.sysconfig.get_compile_flags(), tf.sysconfig.get_link_flags()]))';
  const output = execFileSync(venvPython, ['-c', script], {
    encoding: 'utf8',
    env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: '3' },
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  return JSON.parse(output.trim().split('\n').pop());
}

function ensureOpLibrary() {
  const source = path.join(root, 'native', 'tlx_ops.cc');
  const output = path.join(root, 'native', 'build', 'tlx_ops.so');
  const stampFile = `${output}.stamp`;
  const [compileFlags, linkFlags] = tensorflowBuildFlags();
  // -march=native: built where it runs, for this CPU's vector width (AVX2 or AVX-512); Eigen's
  // half-precision AVX-512 code does not compile with GCC 12, and nothing here uses it.
  // -ffp-contract=off: no fused multiply-adds, so the kernels round as the ops they replace.
  const flags = ['-O3', '-march=native', '-mno-avx512fp16', '-ffp-contract=off', '-fPIC', '-shared', '-w'];
  const args = [...compileFlags, ...flags, source, '-o', `${output}.tmp`, ...linkFlags];
  const wanted = `${sha256(source)}\n${args.join(' ')}`;
  if (fs.existsSync(output) && fs.existsSync(stampFile) && fs.readFileSync(stampFile, 'utf8') === wanted) {
    log('tlx op library is built');
    return;
  }
  fs.mkdirSync(path.dirname(output), { recursive: true });
  const compiler = process.env.CXX ?? 'g++';
  try {
    run(compiler, args);
  } catch (error) {
    throw new Error(
      `compiling ${path.relative(root, source)} with ${compiler} failed (on Debian: \`apt-get install g++\`): ${error instanceof Error ? error.message : String(error)}`,
    );
  }
  fs.renameSync(`${output}.tmp`, output);
  fs.writeFileSync(stampFile, wanted);
  log(`tlx op library built: ${path.relative(root, output)}`);
}

try {
  ensureVenv();
  ensureTfjsBinding();
  ensureOpLibrary();
} catch (error) {
  log(`FAILED: ${error instanceof Error ? error.message : String(error)}`);
  process.exit(1);
}
