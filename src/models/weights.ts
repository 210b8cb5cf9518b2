import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import type { LayersModel, Tensor } from '@tensorflow/tfjs-node';
import type { WeightsManifestEntry } from '../tfjs/internals.ts';
import { UserError } from '../core/errors.ts';
import { silentLogger, type Logger } from '../core/log.ts';
import { redactUrl } from '../core/redact.ts';
import { resolveCacheDir } from '../net/cache-dir.ts';
import { artifactScheme } from '../net/mlflow-artifacts.ts';
import { downloadToCache } from '../net/download.ts';
import { tf } from '../tfjs/tf.ts';
import { namedVariables, weightKey } from './variables.ts';
import { imagenetWeightsFile, kerasApplicationOf } from '../config/bases.ts';
import type { ResolvedExperiment } from '../config/resolved.ts';

/**
 * Pretrained weights by layer and weight name, from wherever they come: Keras .h5 files
 * (the keras.applications files, or any legacy-layout .h5), tfjs model.json, or the
 * MobileNetV2 shipped inside the nsfwjs npm package. Matching is by name, so the file's
 * own architecture description is never trusted.
 */

interface NamedWeight {
  shape: number[];
  values: Float32Array;
}

/** Weights by key (models/variables.ts weightKey): "<layer>/<variable>", as Keras 3 names them. */
export type WeightMap = Map<string, NamedWeight>;

/** An HDF5 dataset's value as float32: arrays, scalars, and int64 (Normalization's count) as BigInt. */
function float32Values(value: unknown): Float32Array {
  if (typeof value === 'number' || typeof value === 'bigint') return Float32Array.of(Number(value));
  return Float32Array.from(Array.from(value as ArrayLike<number | bigint>, Number));
}

/** Reads a legacy-layout Keras .h5 (root attribute layer_names; each layer group's weight_names). */
export async function readKerasH5(file: string): Promise<WeightMap> {
  const signature = Buffer.alloc(8);
  const fd = fs.openSync(file, 'r');
  fs.readSync(fd, signature, 0, 8, 0);
  fs.closeSync(fd);
  if (!signature.equals(Buffer.from([0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a]))) {
    throw new UserError(
      `model.weights: ${file} is not a readable HDF5 file (no HDF5 signature); expected a Keras .h5 weights file`,
    );
  }
  const { default: h5wasm } = await import('h5wasm/node');
  await h5wasm.ready;
  let h5: InstanceType<typeof h5wasm.File>;
  try {
    h5 = new h5wasm.File(file, 'r');
  } catch (error) {
    throw new UserError(
      `model.weights: ${file} is not a readable HDF5 file (${error instanceof Error ? error.message : String(error)})`,
    );
  }
  try {
    const root = (h5.get('model_weights') as InstanceType<typeof h5wasm.Group> | null) ?? h5;
    const layerNames = root.attrs.layer_names?.value;
    if (!Array.isArray(layerNames))
      throw new UserError(
        `model.weights: ${file} has no layer_names attribute; expected a Keras (legacy H5) weights file`,
      );
    const weights: WeightMap = new Map();
    for (const layer of layerNames as string[]) {
      const group = root.get(layer) as InstanceType<typeof h5wasm.Group>;
      const weightNames = (group.attrs.weight_names?.value ?? []) as string[];
      for (const name of weightNames) {
        const dataset = group.get(name) as InstanceType<typeof h5wasm.Dataset>;
        weights.set(weightKey(layer, name), {
          shape: [...(dataset.shape ?? [])],
          values: float32Values(dataset.value),
        });
      }
    }
    return weights;
  } finally {
    h5.close();
  }
}

interface ManifestGroup {
  paths: string[];
  weights: WeightsManifestEntry[];
}

async function decodeManifest(
  manifest: ManifestGroup[],
  readShard: (name: string) => Promise<Uint8Array>,
): Promise<WeightMap> {
  const weights: WeightMap = new Map();
  for (const group of manifest) {
    const shards = await Promise.all(group.paths.map(readShard));
    const buffer = new Uint8Array(shards.reduce((n, s) => n + s.byteLength, 0));
    let offset = 0;
    for (const shard of shards) {
      buffer.set(shard, offset);
      offset += shard.byteLength;
    }
    // decodeWeights dequantizes uint8/float16-quantized entries (as nsfwjs's are).
    const tensors = tf.io.decodeWeights(buffer.buffer, group.weights) as Record<string, Tensor>;
    for (const [name, tensor] of Object.entries(tensors)) {
      const slash = name.lastIndexOf('/');
      weights.set(weightKey(name.slice(0, slash), name.slice(slash + 1)), {
        shape: tensor.shape,
        values: tensor.dataSync() as Float32Array,
      });
      tensor.dispose();
    }
  }
  return weights;
}

function readManifest(file: string, shown: string): ManifestGroup[] {
  let json: { weightsManifest?: ManifestGroup[] };
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8')) as typeof json;
  } catch (error) {
    throw new UserError(
      `model.weights: ${shown}: not a readable model.json (${error instanceof Error ? error.message : String(error)})`,
    );
  }
  if (!Array.isArray(json.weightsManifest))
    throw new UserError(`model.weights: ${shown} has no weightsManifest; expected a tfjs model.json`);
  return json.weightsManifest;
}

function refuseShard(shown: string, shard: string): UserError {
  return new UserError(
    `model.weights: ${shown}: weight shard path ${JSON.stringify(shard)} leaves the model.json's folder; shards must sit beside it`,
  );
}

/** A shard path of a model.json resolved inside its folder, or refused. */
function shardPathInside(folder: string, shard: string, shown: string): string {
  const resolved = path.resolve(folder, shard);
  if (path.isAbsolute(shard) || !resolved.startsWith(path.resolve(folder) + path.sep)) throw refuseShard(shown, shard);
  return resolved;
}

/** A shard URL of a remote model.json resolved under its URL's folder, or refused. */
export function shardUrlInside(modelUrl: string, shard: string, shown: string): string {
  const folder = new URL('.', modelUrl);
  const resolved = new URL(shard, modelUrl);
  if (
    /^[a-z][\w+.-]*:/i.test(shard) ||
    resolved.origin !== folder.origin ||
    !resolved.pathname.startsWith(folder.pathname)
  )
    throw refuseShard(shown, shard);
  return resolved.toString();
}

/** A tfjs model.json (layers model) and its shards beside it. */
export async function readTfjsModelJson(file: string): Promise<WeightMap> {
  const folder = path.dirname(file);
  return decodeManifest(
    readManifest(file, file),
    async (name) => new Uint8Array(fs.readFileSync(shardPathInside(folder, name, file))),
  );
}

/** A remote tfjs model.json: it and its shards are downloaded into the cache. */
async function readRemoteTfjsModelJson(url: string, options: LoadWeightsOptions): Promise<WeightMap> {
  const cacheDir = resolveCacheDir(options.cacheDir);
  const shown = redactUrl(url);
  const manifest = await downloadToCache(url, { cacheDir, log: options.log, what: 'model.weights' });
  return decodeManifest(readManifest(manifest.file, shown), async (name) => {
    const shard = await downloadToCache(shardUrlInside(url, name, shown), {
      cacheDir,
      log: options.log,
      what: 'model.weights',
    });
    return new Uint8Array(fs.readFileSync(shard.file));
  });
}

/** The MobileNetV2 (alpha 1.0, Keras names) that the nsfwjs npm package ships as JS modules. */
export async function readNsfwjsMobileNetV2(): Promise<WeightMap> {
  const require = createRequire(import.meta.url);
  let packageDir: string;
  try {
    // dist/cjs/index.js -> the package folder (its package.json is not exported).
    packageDir = path.resolve(path.dirname(require.resolve('nsfwjs')), '..', '..');
  } catch {
    throw new UserError('model.weights: npm:nsfwjs needs the nsfwjs package; run `npm install`');
  }
  const modelDir = path.join(packageDir, 'dist', 'models', 'mobilenet_v2');
  const json = require(path.join(modelDir, 'model.min.js')) as { weightsManifest: ManifestGroup[] };
  return decodeManifest(json.weightsManifest, async (name) => {
    const base64 = require(path.join(modelDir, `${name}.min.js`)) as string;
    return new Uint8Array(Buffer.from(base64, 'base64'));
  });
}

export interface WeightsSource {
  /** What the config said: imagenet, none, npm:nsfwjs, a path or a URL. */
  spec: string;
  /** The file actually read, when there is one. */
  file?: string;
  note?: string;
}

export interface LoadWeightsOptions {
  baseDir: string;
  cacheDir?: string;
  model: Pick<ResolvedExperiment['model'], 'base' | 'alpha' | 'minimalistic'>;
  imageSize: [number, number];
  log?: Logger;
}

async function localOrDownloaded(spec: string, options: LoadWeightsOptions): Promise<string> {
  if (/^https?:\/\//.test(spec) || spec.startsWith('file:') || spec.startsWith(artifactScheme)) {
    return (
      await downloadToCache(spec, {
        cacheDir: resolveCacheDir(options.cacheDir),
        log: options.log,
        what: 'model.weights',
      })
    ).file;
  }
  const file = path.resolve(options.baseDir, spec);
  if (!fs.existsSync(file)) throw new UserError(`model.weights: ${spec}: file not found`);
  return file;
}

/** Resolves `model.weights` to named weights (undefined for `none`). */
export async function loadPretrainedWeights(
  spec: string,
  options: LoadWeightsOptions,
): Promise<{ weights?: WeightMap; source: WeightsSource }> {
  const log = options.log ?? silentLogger;
  if (spec === 'none') return { source: { spec } };
  if (spec === 'npm:nsfwjs') {
    const { base, alpha } = options.model;
    if (base !== 'mobilenet_v2' || alpha !== 1.0)
      throw new UserError(
        `model.weights: npm:nsfwjs is a MobileNetV2 with alpha 1.0; found base ${base}, alpha ${alpha}`,
      );
    return {
      weights: await readNsfwjsMobileNetV2(),
      source: {
        spec,
        note: 'nsfwjs MobileNetV2 (alpha 1.0): blocks 0-10 ImageNet, upper blocks tuned for its own task',
      },
    };
  }
  if (spec === 'imagenet') {
    const { base, alpha } = options.model;
    const file = imagenetWeightsFile(options.model, options.imageSize);
    if (!file)
      throw new UserError(
        `model.weights: Keras has no ImageNet weights for ${kerasApplicationOf(base)} at alpha ${alpha}${options.model.minimalistic ? ' (minimalistic)' : ''}`,
      );
    const [height, width] = options.imageSize;
    if (file.resolution !== undefined && (height !== width || height !== file.resolution)) {
      log.warn(
        { imageSize: options.imageSize, resolution: file.resolution },
        `Keras's ImageNet weights for this base were trained at ${file.resolution}x${file.resolution}; using them at ${height}x${width} (conv weights work at any size)`,
      );
    }
    const downloaded = await downloadToCache(file.url, {
      cacheDir: resolveCacheDir(options.cacheDir),
      md5: file.md5,
      log,
      what: 'model.weights',
    });
    return { weights: await readKerasH5(downloaded.file), source: { spec, file: file.url } };
  }
  if (spec.startsWith('npm:')) throw new UserError(`model.weights: ${spec}: unknown package; expected npm:nsfwjs`);
  if (/^https?:\/\//.test(spec) && new URL(spec).pathname.toLowerCase().endsWith('.json'))
    return {
      weights: await readRemoteTfjsModelJson(spec, options),
      source: { spec: redactUrl(spec), file: redactUrl(spec) },
    };
  const file = await localOrDownloaded(spec, options);
  const lower = file.toLowerCase();
  const source = { spec: redactUrl(spec), file: /^[a-z]+:/.test(spec) ? redactUrl(spec) : file };
  if (lower.endsWith('.h5') || lower.endsWith('.hdf5')) return { weights: await readKerasH5(file), source };
  if (lower.endsWith('.json')) return { weights: await readTfjsModelJson(file), source };
  throw new UserError(`model.weights: ${spec}: expected imagenet, none, npm:nsfwjs, or a .h5 / model.json path or URL`);
}

type Layer = LayersModel['layers'][number];
type LayerVariable = Layer['weights'][number];

/** The layers of a model that hold weights, nested models walked, in Keras's order. */
function weightedLayers(model: LayersModel): Layer[] {
  const found: Layer[] = [];
  const visit = (layers: Layer[]) => {
    for (const layer of layers) {
      const nested = (layer as unknown as { layers?: Layer[] }).layers;
      if (Array.isArray(nested)) visit(nested);
      else if (layer.weights.length > 0) found.push(layer);
    }
  };
  visit(model.layers);
  return found;
}

/** The file's weights grouped by layer, in the file's order. */
function layersOfFile(weights: WeightMap): NamedWeight[][] {
  const groups = new Map<string, NamedWeight[]>();
  for (const [key, value] of weights) {
    const layer = key.slice(0, key.lastIndexOf('/'));
    groups.set(layer, [...(groups.get(layer) ?? []), value]);
  }
  return [...groups.values()];
}

/**
 * Keras's rule for a legacy .h5 whose layer names differ from the model's (files saved by
 * Keras 2, where MobileNetV3's layers were named expanded_conv/depthwise): the i-th layer
 * with weights takes the file's i-th, when every shape agrees. Undefined when they do not.
 */
function pairByOrder(model: LayersModel, weights: WeightMap): [LayerVariable, NamedWeight][] | undefined {
  const layers = weightedLayers(model);
  const fileLayers = layersOfFile(weights);
  if (layers.length !== fileLayers.length) return undefined;
  const pairs: [LayerVariable, NamedWeight][] = [];
  for (const [i, layer] of layers.entries()) {
    if (layer.weights.length !== fileLayers[i].length) return undefined;
    for (const [j, variable] of layer.weights.entries()) {
      if (fileLayers[i][j].shape.join(',') !== variable.shape.join(',')) return undefined;
      pairs.push([variable, fileLayers[i][j]]);
    }
  }
  return pairs;
}

/**
 * Sets every weight of the model's layers from the map: by name (Keras 3's variable
 * paths), else, when names are missing but the layers agree in order and shape, by order
 * as Keras's own load_weights does for such a file. A weight the map has under the right
 * name with another shape is an error naming the layer; `requireAll` makes missing ones
 * errors. Nothing is written unless every check passed.
 */
export function assignWeights(
  model: LayersModel,
  weights: WeightMap,
  options: { requireAll: boolean; what: string },
): { assigned: number; missing: string[]; byOrder: boolean } {
  const missing: string[] = [];
  const pairs: [LayerVariable, NamedWeight][] = [];
  for (const [key, variable] of namedVariables(model)) {
    const found = weights.get(key);
    if (!found) {
      missing.push(key);
      continue;
    }
    if (found.shape.join(',') !== variable.shape.join(',')) {
      throw new UserError(
        `${options.what}: layer ${key.slice(0, key.lastIndexOf('/'))}: weight ${key} has shape [${found.shape.join(', ')}], the model expects [${variable.shape.join(', ')}]`,
      );
    }
    pairs.push([variable, found]);
  }
  let byOrder = false;
  if (missing.length > 0) {
    const ordered = pairByOrder(model, weights);
    if (ordered) {
      pairs.push(...ordered);
      missing.length = 0;
      byOrder = true;
    }
  }
  if (options.requireAll && missing.length > 0)
    throw new UserError(
      `${options.what}: no weights for ${missing.length} variable(s), e.g. ${missing.slice(0, 3).join(', ')}`,
    );
  for (const [variable, found] of pairs) {
    const value = tf.tensor(found.values, found.shape);
    variable.write(value);
    value.dispose();
  }
  return { assigned: pairs.length, missing, byOrder };
}
