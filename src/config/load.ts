import path from 'node:path';
import YAML from 'yaml';
import { ConfigError, type Location, type Problem } from '../core/errors.ts';
import { canonicalJson, sha256Hex } from '../core/hash.ts';
import { baseLayerCount, baseOptionProblems } from './bases.ts';
import { explainSchemaErrors } from './messages.ts';
import { applyOverride, mergeConfigs, parseOverride, type Override } from './overrides.ts';
import type { ResolvedExperiment } from './resolved.ts';
import { experimentValidator } from './schema.ts';
import {
  forbiddenKeyMessage,
  forbiddenKeyPaths,
  isPlainObject,
  locationAt,
  matchPath,
  parseYamlFile,
  type PlainObject,
  type YamlSource,
} from './sources.ts';

export interface LoadOptions {
  /** `--set key.path=value` flags, applied after `extends` and the file itself. */
  overrides?: readonly string[];
  /** Sweep grid keys from the command line (`--grid`), added to `sweep.grid` before validation. */
  grid?: Readonly<Record<string, unknown>>;
}

export interface LoadedExperiment {
  config: ResolvedExperiment;
  /** The experiment file and the files it extends, child first. */
  files: string[];
  /** Folder of the experiment file: relative paths in the config are resolved against it. */
  baseDir: string;
  /** sha256 of the canonical JSON of the resolved config: identifies what was run. */
  configSha256: string;
}

const maxExtendsDepth = 10;

/** Reads a file and the chain of files it `extends`, child first. */
function readChain(file: string, displayName: string, problems: Problem[]): YamlSource[] {
  const chain: YamlSource[] = [];
  const visited = new Set<string>();
  let current: { file: string; displayName: string } | undefined = { file: path.resolve(file), displayName };
  while (current) {
    const source = parseYamlFile(current.file, current.displayName, problems);
    if (!source) break;
    chain.push(source);
    visited.add(source.file);
    const parent = source.value.extends;
    current = undefined;
    if (parent === undefined) break;
    const at = matchPath(source, ['extends']);
    const location = locationAt(source, at.valueOffset);
    if (typeof parent !== 'string' || parent.length === 0) {
      problems.push({ location, keyPath: 'extends', message: 'expected the path of another experiment file' });
      break;
    }
    const parentFile = path.resolve(path.dirname(source.file), parent);
    if (visited.has(parentFile)) {
      problems.push({
        location,
        keyPath: 'extends',
        message: `"${parent}" is already in the chain of extended files (a cycle)`,
      });
      break;
    }
    if (chain.length >= maxExtendsDepth) {
      problems.push({ location, keyPath: 'extends', message: `more than ${maxExtendsDepth} levels of extends` });
      break;
    }
    const before = problems.length;
    const parentDisplay = path.join(path.dirname(source.displayName), parent);
    const probe = parseYamlFile(parentFile, parentDisplay, []);
    if (!probe) {
      // Report the bad parent at the `extends:` line of the child, then the parent's own errors.
      parseYamlFile(parentFile, parentDisplay, problems);
      const reasons = problems.splice(before).map((p) => p.message);
      problems.push({ location, keyPath: 'extends', message: `cannot use "${parent}": ${reasons[0] ?? 'unreadable'}` });
      break;
    }
    current = { file: parentFile, displayName: parentDisplay };
  }
  return chain;
}

/** Keys holding file paths, relative to the file that declares them. */
const pathKeys: [string, string][] = [
  ['dataset', 'path'],
  ['model', 'weights'],
];

function isRelativeFilePath(value: unknown): value is string {
  return (
    typeof value === 'string' &&
    value.length > 0 &&
    !path.isAbsolute(value) &&
    !/^[a-z][\w+.-]*:/i.test(value) &&
    !['imagenet', 'none'].includes(value)
  );
}

/**
 * A relative path in an extended file means relative to that file; the resolved config
 * states it relative to the experiment file, where every stage resolves it.
 */
function rebaseRelativePaths(merged: PlainObject, chain: YamlSource[], baseDir: string): void {
  for (const [section, key] of pathKeys) {
    const holder = merged[section] as PlainObject | undefined;
    if (!holder || !isRelativeFilePath(holder[key])) continue;
    const declaring = chain.find((source) => (source.value[section] as PlainObject | undefined)?.[key] !== undefined);
    if (!declaring) continue;
    const absolute = path.resolve(path.dirname(declaring.file), holder[key] as string);
    holder[key] = path.relative(baseDir, absolute) || '.';
  }
}

/** Where a key path came from: the --set flag that wrote it, or the most precise YAML node. */
function locate(keyPath: string[], atKey: boolean, chain: YamlSource[], overrides: Override[]): Location {
  for (const override of [...overrides].reverse()) {
    const shorter = Math.min(override.keyPath.length, keyPath.length);
    if (
      override.keyPath.slice(0, shorter).join('.') === keyPath.slice(0, shorter).join('.') &&
      override.keyPath.length <= keyPath.length
    ) {
      return { file: `--set ${override.flag}` };
    }
  }
  let best: { source: YamlSource; offset: number; depth: number } | undefined;
  for (const source of chain) {
    const match = matchPath(source, keyPath);
    const exact = match.depth === keyPath.length;
    const offset = exact && !atKey ? match.valueOffset : match.keyOffset;
    if (!best || match.depth > best.depth) best = { source, offset, depth: match.depth };
  }
  if (!best) return { file: '(config)' };
  return locationAt(best.source, best.offset);
}

function byPosition(a: Problem, b: Problem): number {
  return (
    a.location.file.localeCompare(b.location.file) ||
    (a.location.line ?? 0) - (b.location.line ?? 0) ||
    (a.location.column ?? 0) - (b.location.column ?? 0)
  );
}

/** Rules that involve several keys or facts about the base model: not expressible in the schema. */
function crossFieldProblems(config: ResolvedExperiment): { keyPath: string[]; message: string; atValue?: boolean }[] {
  const found: { keyPath: string[]; message: string; atValue?: boolean }[] = [];
  const { dataset } = config;
  if (dataset.url === undefined && dataset.path === undefined)
    found.push({ keyPath: ['dataset'], message: 'expected either url: or path:' });
  if (dataset.url !== undefined && dataset.path !== undefined)
    found.push({ keyPath: ['dataset', 'path'], message: 'expected either url: or path:, not both' });
  if ((dataset.train_dir === undefined) !== (dataset.validation_dir === undefined)) {
    const missing = dataset.train_dir === undefined ? 'train_dir' : 'validation_dir';
    found.push({ keyPath: ['dataset'], message: `train_dir and validation_dir go together; missing ${missing}` });
  }
  if (dataset.train_dir !== undefined && dataset.validation_split !== undefined) {
    found.push({
      keyPath: ['dataset', 'validation_split'],
      message: 'expected either train_dir/validation_dir or validation_split, not both',
    });
  }
  if (dataset.train_dir === undefined && dataset.validation_split === undefined) {
    found.push({
      keyPath: ['dataset'],
      message: 'expected train_dir + validation_dir, or validation_split to split one folder',
    });
  }
  found.push(...baseOptionProblems(config.model));
  const layerCount = baseLayerCount(config.model);
  if (config.train.fine_tune.fine_tune_at > layerCount) {
    found.push({
      keyPath: ['train', 'fine_tune', 'fine_tune_at'],
      message: `found ${config.train.fine_tune.fine_tune_at}, expected at most ${layerCount} (${config.model.base}${config.model.minimalistic ? ' minimalistic' : ''} has ${layerCount} layers)`,
      atValue: true,
    });
  }
  return found;
}

/**
 * Loads an experiment file: parses YAML, follows `extends`, applies `--set`, fills the
 * schema's defaults and validates. Throws a ConfigError listing every problem, each with
 * file:line:col, key path, what was found and what was expected.
 */
export function loadExperiment(file: string, options: LoadOptions = {}): LoadedExperiment {
  const problems: Problem[] = [];
  const chain = readChain(file, file, problems);
  const overrides = (options.overrides ?? [])
    .map((flag) => parseOverride(flag, problems))
    .filter((o): o is Override => o !== undefined);
  if (problems.length > 0 || chain.length === 0) throw new ConfigError(problems);

  let merged: PlainObject = {};
  for (const source of [...chain].reverse()) merged = mergeConfigs(merged, source.value);
  rebaseRelativePaths(merged, chain, path.dirname(path.resolve(file)));
  for (const override of overrides) merged = applyOverride(merged, override, problems);
  if (problems.length > 0) throw new ConfigError(problems);
  if (options.grid && Object.keys(options.grid).length > 0) {
    const sweep = isPlainObject(merged.sweep) ? merged.sweep : {};
    merged = {
      ...merged,
      sweep: { ...sweep, grid: { ...(isPlainObject(sweep.grid) ? sweep.grid : {}), ...options.grid } },
    };
  }
  const config = validateMerged(merged, (keyPath, atKey) => locate(keyPath, atKey, chain, overrides));
  return {
    config,
    files: chain.map((source) => source.file),
    baseDir: path.dirname(path.resolve(file)),
    configSha256: sha256Hex(canonicalJson(config)),
  };
}

/** Schema, defaults and cross-field rules over a merged config; every problem located by `where`. */
function validateMerged(
  merged: PlainObject,
  where: (keyPath: string[], atKey: boolean) => Location,
): ResolvedExperiment {
  const problems: Problem[] = [];
  const validate = experimentValidator();
  if (!validate(merged)) {
    for (const error of explainSchemaErrors(validate.errors ?? []))
      problems.push({
        location: where(error.keyPath, error.atKey),
        keyPath: error.keyPath.join('.'),
        message: error.message,
      });
    throw new ConfigError(problems.sort(byPosition));
  }
  const { extends: _extends, $schema: _schema, ...rest } = merged;
  const config = rest as unknown as ResolvedExperiment;
  for (const problem of crossFieldProblems(config))
    problems.push({
      location: where(problem.keyPath, !problem.atValue),
      keyPath: problem.keyPath.join('.'),
      message: problem.message,
    });
  if (problems.length > 0) throw new ConfigError(problems);
  return config;
}

/**
 * A config that arrives as a value rather than a file (a queued job): checked exactly as a
 * file is, prototype keys first, with `source` in place of file:line:col in every message.
 */
export function validateExperimentValue(value: unknown, source: string): ResolvedExperiment {
  if (!isPlainObject(value))
    throw new ConfigError([
      {
        location: { file: source },
        keyPath: '',
        message: `expected a mapping of config keys, found ${Array.isArray(value) ? 'a list' : typeof value}`,
      },
    ]);
  const forbidden = forbiddenKeyPaths(value);
  if (forbidden.length > 0)
    throw new ConfigError(
      forbidden.map((keyPath) => ({
        location: { file: source },
        keyPath: keyPath.join('.'),
        message: forbiddenKeyMessage(keyPath.at(-1)!),
      })),
    );
  if ('extends' in value)
    throw new ConfigError([
      {
        location: { file: source },
        keyPath: 'extends',
        message: 'expected a resolved config (extends is resolved before a config is sent)',
      },
    ]);
  return validateMerged(structuredClone(value), () => ({ file: source }));
}

/** The resolved config as YAML, as a run records it. */
export function resolvedConfigYaml(config: ResolvedExperiment): string {
  return YAML.stringify(config, { lineWidth: 0 });
}
