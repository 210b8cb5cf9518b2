import type { SchemaError, SchemaNode } from './schema.ts';
import { allowedKeys } from './schema.ts';
import { didYouMean } from './suggest.ts';

/** An ajv error turned into what a person needs: which key, what was found, what was expected. */
export interface ExplainedError {
  keyPath: string[];
  /** Point at the key itself (unknown keys) rather than at its value. */
  atKey: boolean;
  message: string;
}

function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return `a list of ${value.length}`;
  if (typeof value === 'object') return 'a mapping';
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 57)}...` : value);
  return String(value);
}

function article(type: string): string {
  return /^[aeiou]/.test(type) ? `an ${type}` : `a ${type}`;
}

function expectedType(type: unknown): string {
  const names: Record<string, string> = {
    object: 'mapping',
    array: 'list',
    integer: 'integer',
    number: 'number',
    string: 'string',
    boolean: 'boolean (true/false)',
  };
  const types = (Array.isArray(type) ? type : [type]).map((t) => names[String(t)] ?? String(t));
  return types.map(article).join(' or ');
}

function numberKind(schema: SchemaNode | undefined): string {
  return schema?.type === 'integer' ? 'an integer' : 'a number';
}

function splitPointer(pointer: string): string[] {
  return pointer
    .split('/')
    .slice(1)
    .map((part) => part.replace(/~1/g, '/').replace(/~0/g, '~'));
}

/** A list, a mapping or a string of the wrong size. */
function sizeMessage(error: SchemaError, found: string, keyPath: string[]): string {
  const parent = error.parentSchema as SchemaNode | undefined;
  const limit = String((error.params as Record<string, unknown>).limit);
  switch (error.keyword) {
    case 'minItems':
    case 'maxItems': {
      const exact = parent && (parent as { minItems?: number }).minItems === (parent as { maxItems?: number }).maxItems;
      const expected = exact ? `exactly ${limit}` : `${error.keyword === 'minItems' ? 'at least' : 'at most'} ${limit}`;
      return `found ${found}, expected a list of ${expected} items`;
    }
    case 'minProperties':
    case 'maxProperties':
      return limit === '1' && keyPath[0] === 'augmentation'
        ? `found ${Object.keys((error.data as object) ?? {}).length} keys, expected exactly one augmentation op per list item (e.g. "- random_flip: horizontal")`
        : `found ${found}, expected ${error.keyword === 'minProperties' ? 'at least' : 'at most'} ${limit} keys`;
    case 'minLength':
      return `found ${found}, expected a non-empty string`;
    default:
      return `found a string of ${String((error.data as string).length)} characters, expected at most ${limit}`;
  }
}

/** An unknown key: the nearest allowed key, or the allowed keys. */
function unknownKey(keyPath: string[], key: string): ExplainedError {
  const candidates = allowedKeys(keyPath);
  const guess = didYouMean(key, candidates);
  const hint = guess
    ? `did you mean "${guess}"?`
    : candidates.length
      ? `expected one of: ${candidates.join(', ')}`
      : '';
  return { keyPath: [...keyPath, key], atKey: true, message: `unknown key${hint ? `; ${hint}` : ''}` };
}

function enumMessage(error: SchemaError, found: string): string {
  const allowed = ((error.params as Record<string, unknown>).allowedValues as unknown[]) ?? [];
  const guess = typeof error.data === 'string' ? didYouMean(error.data, allowed.map(String)) : undefined;
  return `found ${found}, expected one of: ${allowed.map((v) => String(v)).join(', ')}${guess ? ` (did you mean "${guess}"?)` : ''}`;
}

/** A string that does not match: the key's own description says what is expected, when it has one. */
function patternMessage(parent: SchemaNode | undefined, found: string, pattern: string): string {
  const description = parent?.description?.split(/(?<=\.)\s/)[0];
  return `found ${found}, expected ${description ? `${description.replace(/\.$/, '')} (pattern ${pattern})` : `a match of ${pattern}`}`;
}

function explainOne(error: SchemaError): ExplainedError {
  const keyPath = splitPointer(error.instancePath);
  const found = describeValue(error.data);
  const parent = error.parentSchema as SchemaNode | undefined;
  const params = error.params as Record<string, unknown>;
  switch (error.keyword) {
    case 'additionalProperties':
      return unknownKey(keyPath, String(params.additionalProperty));
    case 'required':
      return { keyPath, atKey: true, message: `missing required key "${String(params.missingProperty)}"` };
    case 'type':
      return { keyPath, atKey: false, message: `found ${found}, expected ${expectedType(params.type)}` };
    case 'enum':
      return { keyPath, atKey: false, message: enumMessage(error, found) };
    case 'minimum':
    case 'maximum':
    case 'exclusiveMinimum':
    case 'exclusiveMaximum':
      return {
        keyPath,
        atKey: false,
        message: `found ${found}, expected ${numberKind(parent)} ${String(params.comparison)} ${String(params.limit)}`,
      };
    case 'minItems':
    case 'maxItems':
    case 'minProperties':
    case 'maxProperties':
    case 'minLength':
    case 'maxLength':
      return { keyPath, atKey: false, message: sizeMessage(error, found, keyPath) };
    case 'pattern':
      return { keyPath, atKey: false, message: patternMessage(parent, found, String(params.pattern)) };
    case 'oneOf': {
      const branches = (error.schema as SchemaNode[]) ?? [];
      const types = branches.map((branch) => branch.type ?? (branch.enum ? 'string' : 'value'));
      return { keyPath, atKey: false, message: `found ${found}, expected ${expectedType([...new Set(types.flat())])}` };
    }
    default:
      return { keyPath, atKey: false, message: `${error.message ?? 'is invalid'} (found ${found})` };
  }
}

function jsonType(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'array';
  if (typeof value === 'number') return Number.isInteger(value) ? 'integer' : 'number';
  return typeof value;
}

function branchAccepts(branch: SchemaNode, value: unknown): boolean {
  const types = branch.type === undefined ? [] : Array.isArray(branch.type) ? branch.type : [branch.type];
  const actual = jsonType(value);
  if (branch.enum && typeof value === 'string') return true;
  return types.includes(actual) || (actual === 'integer' && types.includes('number'));
}

/**
 * ajv reports every branch of a oneOf. Keep only the errors of the branch whose type
 * fits the value ("rotation factor 3 > 1", not "... or expected a mapping").
 */
function pruneOneOf(errors: SchemaError[]): SchemaError[] {
  let result = errors;
  for (const oneOf of errors.filter((e) => e.keyword === 'oneOf')) {
    const branches = (oneOf.schema as SchemaNode[]) ?? [];
    const fitting = branches.findIndex((branch) => branchAccepts(branch, oneOf.data));
    const prefix = `${oneOf.schemaPath}/`;
    result = result.filter((e) => {
      if (e === oneOf) return fitting < 0;
      if (!e.schemaPath.startsWith(prefix)) return true;
      return fitting >= 0 && e.schemaPath.startsWith(`${prefix}${fitting}/`);
    });
  }
  return result;
}

export function explainSchemaErrors(errors: SchemaError[]): ExplainedError[] {
  const seen = new Set<string>();
  const explained: ExplainedError[] = [];
  for (const error of pruneOneOf(errors)) {
    const item = explainOne(error);
    const key = `${item.keyPath.join('.')}|${item.message}`;
    if (!seen.has(key)) {
      seen.add(key);
      explained.push(item);
    }
  }
  return explained;
}
