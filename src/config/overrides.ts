import YAML from 'yaml';
import type { Problem } from '../core/errors.ts';
import { schemaAtPath } from './schema.ts';
import { forbiddenKeyMessage, forbiddenKeys, isPlainObject, type PlainObject } from './sources.ts';

/** One `--set key.path=value` flag, parsed. */
export interface Override {
  flag: string;
  keyPath: string[];
  value: unknown;
}

const keyPathPattern = /^[A-Za-z_$][\w$]*(\.[\w$]+)*$/;

function expectsOnlyStrings(keyPath: string[]): boolean {
  const node = schemaAtPath(keyPath);
  if (!node) return false;
  if (node.type === 'string') return true;
  return Array.isArray(node.enum) && node.enum.every((value) => typeof value === 'string') && node.type === undefined;
}

/**
 * Parses `key.path=value`. The value is read as YAML (so 5 is a number, [96, 96] a list,
 * true a boolean), except where the schema expects a string: `name=123` stays "123".
 */
export function parseOverride(flag: string, problems: Problem[]): Override | undefined {
  const location = { file: `--set ${flag}` };
  const equals = flag.indexOf('=');
  if (equals <= 0) {
    problems.push({ location, keyPath: '', message: 'expected key.path=value, e.g. --set train.fine_tune.epochs=5' });
    return undefined;
  }
  const rawKey = flag.slice(0, equals).trim();
  const rawValue = flag.slice(equals + 1);
  if (!keyPathPattern.test(rawKey)) {
    problems.push({ location, keyPath: rawKey, message: 'expected a dotted key path such as train.fine_tune.epochs' });
    return undefined;
  }
  const keyPath = rawKey.split('.');
  const forbidden = keyPath.find((key) => forbiddenKeys.has(key));
  if (forbidden) {
    problems.push({ location, keyPath: rawKey, message: forbiddenKeyMessage(forbidden) });
    return undefined;
  }
  if (expectsOnlyStrings(keyPath)) return { flag, keyPath, value: rawValue };
  const doc = YAML.parseDocument(rawValue, { prettyErrors: false });
  if (doc.errors.length > 0) {
    problems.push({ location, keyPath: rawKey, message: `invalid value: ${doc.errors[0].message.split('\n')[0]}` });
    return undefined;
  }
  return { flag, keyPath, value: doc.toJS() };
}

/** Sets the override's value in a copy of the config, creating intermediate mappings. */
export function applyOverride(config: PlainObject, override: Override, problems: Problem[]): PlainObject {
  const result = structuredClone(config);
  let node: PlainObject = result;
  const { keyPath } = override;
  for (let i = 0; i < keyPath.length - 1; i++) {
    const key = keyPath[i];
    const next = node[key];
    if (next === undefined || next === null) {
      node[key] = {};
    } else if (!isPlainObject(next)) {
      problems.push({
        location: { file: `--set ${override.flag}` },
        keyPath: keyPath.slice(0, i + 1).join('.'),
        message: `is ${Array.isArray(next) ? 'a list' : `a ${typeof next}`}, so it has no key "${keyPath[i + 1]}"`,
      });
      return config;
    }
    node = node[key] as PlainObject;
  }
  node[keyPath[keyPath.length - 1]] = override.value;
  return result;
}

/** Deep merge for `extends`: mappings merge key by key, anything else is replaced. */
export function mergeConfigs(base: PlainObject, override: PlainObject): PlainObject {
  const result: PlainObject = { ...base };
  for (const [key, value] of Object.entries(override)) {
    const current = result[key];
    result[key] = isPlainObject(current) && isPlainObject(value) ? mergeConfigs(current, value) : value;
  }
  return result;
}
