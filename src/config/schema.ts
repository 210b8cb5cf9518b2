import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';

/** A JSON Schema node as this project writes them (draft-07 subset). */
export interface SchemaNode {
  type?: string | string[];
  properties?: Record<string, SchemaNode>;
  additionalProperties?: boolean | SchemaNode;
  items?: SchemaNode;
  oneOf?: SchemaNode[];
  allOf?: SchemaNode[];
  enum?: unknown[];
  $ref?: string;
  description?: string;
  default?: unknown;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  pattern?: string;
  required?: string[];
  definitions?: Record<string, SchemaNode>;
}

const schemaPath = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '..',
  '..',
  'schemas',
  'experiment.schema.json',
);

const experimentSchema: SchemaNode = JSON.parse(fs.readFileSync(schemaPath, 'utf8')) as SchemaNode;

let compiled: ValidateFunction | undefined;

/** ajv validator of experiment files; fills defaults in place (useDefaults). */
export function experimentValidator(): ValidateFunction {
  compiled ??= new Ajv({
    allErrors: true,
    useDefaults: true,
    verbose: true,
    strict: true,
    allowUnionTypes: true,
  }).compile(experimentSchema);
  return compiled;
}

export type SchemaError = ErrorObject;

/** Follows $ref and single-element allOf wrappers to the node that describes a value. */
function resolveSchema(node: SchemaNode | undefined): SchemaNode | undefined {
  let current = node;
  for (let guard = 0; current && guard < 10; guard++) {
    if (current.$ref) {
      const target = current.$ref
        .replace(/^#\//, '')
        .split('/')
        .reduce<unknown>((value, key) => (value as Record<string, unknown>)[key], experimentSchema);
      current = target as SchemaNode;
    } else if (current.allOf?.length === 1 && !current.type && !current.properties) {
      current = current.allOf[0];
    } else {
      return current;
    }
  }
  return current;
}

/** The schema node of a dotted key path, or undefined when the path is not in the schema. */
export function schemaAtPath(keyPath: readonly string[]): SchemaNode | undefined {
  let node = resolveSchema(experimentSchema);
  for (const key of keyPath) {
    if (!node) return undefined;
    if (node.properties && key in node.properties) node = resolveSchema(node.properties[key]);
    else if (node.items && /^\d+$/.test(key)) node = resolveSchema(node.items);
    else if (typeof node.additionalProperties === 'object') node = resolveSchema(node.additionalProperties);
    else return undefined;
  }
  return node;
}

/** The keys an object at this path may have (for "did you mean"). */
export function allowedKeys(keyPath: readonly string[]): string[] {
  return Object.keys(schemaAtPath(keyPath)?.properties ?? {});
}

/**
 * The schema's defaults for an object at a key path (e.g. export.tflite when an experiment
 * did not ask for an export but `tlx convert` makes one): defaults live only in the schema.
 */
export function schemaDefaults<T>(keyPath: readonly string[]): T {
  const node = schemaAtPath(keyPath);
  if (!node) throw new Error(`no schema node at ${keyPath.join('.')}`);
  const validate = new Ajv({ useDefaults: true, strict: false, allowUnionTypes: true }).compile({
    ...node,
    definitions: experimentSchema.definitions,
  });
  const value = {};
  validate(value);
  return value as T;
}
