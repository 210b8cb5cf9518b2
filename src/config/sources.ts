import fs from 'node:fs';
import YAML, { LineCounter, isMap, isPair, isScalar, isSeq, type Document, type Node } from 'yaml';
import type { Location, Problem } from '../core/errors.ts';

/** One parsed experiment file, kept with its YAML tree so errors can point at lines. */
export interface YamlSource {
  file: string;
  /** The file as the user named it (relative paths stay relative in messages). */
  displayName: string;
  doc: Document.Parsed;
  lineCounter: LineCounter;
  value: Record<string, unknown>;
}

export type PlainObject = Record<string, unknown>;

/** Keys that would reach Object.prototype when a config is merged or overridden: refused wherever keys come from users. */
export const forbiddenKeys: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

export function forbiddenKeyMessage(key: string): string {
  return `the key "${key}" is not allowed (it could change JavaScript's object prototype)`;
}

/** An experiment file larger than this is refused before it is parsed. */
const maxExperimentFileBytes = 1024 * 1024;

/** Every mapping key in the document that is a forbidden key, with its position. */
function forbiddenKeyProblems(source: YamlSource): Problem[] {
  const problems: Problem[] = [];
  const visit = (node: Node | null | undefined, keyPath: string[]) => {
    if (isMap(node)) {
      for (const item of node.items) {
        if (!isPair(item)) continue;
        const key = isScalar(item.key) ? String(item.key.value) : '';
        if (forbiddenKeys.has(key)) {
          problems.push({
            location: locationAt(source, (item.key as Node).range?.[0] ?? 0),
            keyPath: [...keyPath, key].join('.'),
            message: forbiddenKeyMessage(key),
          });
          continue;
        }
        visit(item.value as Node, [...keyPath, key]);
      }
    } else if (isSeq(node)) {
      node.items.forEach((item, index) => visit(item as Node, [...keyPath, String(index)]));
    }
  };
  visit(source.doc.contents, []);
  return problems;
}

/** Key paths of forbidden keys anywhere in a value parsed from JSON (where `__proto__` is an own key). */
export function forbiddenKeyPaths(value: unknown, keyPath: string[] = []): string[][] {
  if (Array.isArray(value)) return value.flatMap((item, index) => forbiddenKeyPaths(item, [...keyPath, String(index)]));
  if (!isPlainObject(value)) return [];
  return Object.keys(value).flatMap((key) =>
    forbiddenKeys.has(key) ? [[...keyPath, key]] : forbiddenKeyPaths(value[key], [...keyPath, key]),
  );
}

export function isPlainObject(value: unknown): value is PlainObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function locationAt(source: YamlSource, offset: number): Location {
  const { line, col } = source.lineCounter.linePos(offset);
  return { file: source.displayName, line, column: col };
}

/** The file's text, or a problem: missing, a folder, or larger than an experiment may be. */
function readExperimentText(file: string, displayName: string, problems: Problem[]): string | undefined {
  const problem = (message: string) => problems.push({ location: { file: displayName }, keyPath: '', message });
  try {
    const size = fs.statSync(file).size;
    if (size > maxExperimentFileBytes) {
      problem(`${size} bytes; an experiment file may be at most ${maxExperimentFileBytes} bytes (1 MiB)`);
      return undefined;
    }
    return fs.readFileSync(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    problem(
      code === 'ENOENT' ? 'file not found' : code === 'EISDIR' ? 'is a folder, expected a YAML file' : String(error),
    );
    return undefined;
  }
}

/** The document as plain values, or a problem: aliases that expand too far, or not a mapping at the top. */
function documentValue(source: YamlSource, problems: Problem[]): PlainObject | undefined {
  let value: unknown;
  try {
    value = source.doc.toJS({ maxAliasCount: 100 });
  } catch (error) {
    // The yaml library refuses documents whose aliases expand too far (a "billion laughs").
    const reason = error instanceof Error ? error.message.split('\n')[0] : String(error);
    problems.push({ location: { file: source.displayName }, keyPath: '', message: `cannot read the YAML: ${reason}` });
    return undefined;
  }
  if (isPlainObject(value)) return value;
  const found =
    value === null || value === undefined ? 'an empty document' : Array.isArray(value) ? 'a list' : `a ${typeof value}`;
  problems.push({
    location: { file: source.displayName, line: 1, column: 1 },
    keyPath: '',
    message: `found ${found}, expected a mapping of keys (name:, dataset:, ...)`,
  });
  return undefined;
}

/** Reads and parses one YAML file; syntax errors become problems with line and column. */
export function parseYamlFile(file: string, displayName: string, problems: Problem[]): YamlSource | undefined {
  const text = readExperimentText(file, displayName, problems);
  if (text === undefined) return undefined;
  const lineCounter = new LineCounter();
  const doc = YAML.parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const source: YamlSource = { file, displayName, doc, lineCounter, value: {} };
  if (doc.errors.length > 0) {
    for (const error of doc.errors) {
      problems.push({
        location: locationAt(source, error.pos[0]),
        keyPath: '',
        message: `invalid YAML: ${error.message.split('\n')[0]}`,
      });
    }
    return undefined;
  }
  const forbidden = forbiddenKeyProblems(source);
  if (forbidden.length > 0) {
    problems.push(...forbidden);
    return undefined;
  }
  const value = documentValue(source, problems);
  if (!value) return undefined;
  source.value = value;
  return source;
}

export interface NodeMatch {
  /** How many leading segments of the path exist in this document. */
  depth: number;
  /** Offset of the key of the deepest existing segment, or of its value when keys are absent (list items). */
  keyOffset: number;
  valueOffset: number;
}

/** Finds the deepest YAML node along a key path: errors point at the most precise place. */
export function matchPath(source: YamlSource, keyPath: readonly string[]): NodeMatch {
  let node: Node | null | undefined = source.doc.contents;
  const rootOffset = node?.range?.[0] ?? 0;
  const match: NodeMatch = { depth: 0, keyOffset: rootOffset, valueOffset: rootOffset };
  for (const segment of keyPath) {
    if (isMap(node)) {
      const pair = node.items.find((item) => isPair(item) && isScalar(item.key) && String(item.key.value) === segment);
      if (!pair) break;
      const keyNode = pair.key as Node;
      node = pair.value as Node | null;
      match.keyOffset = keyNode.range?.[0] ?? match.keyOffset;
      match.valueOffset = node?.range?.[0] ?? match.keyOffset;
    } else if (isSeq(node) && /^\d+$/.test(segment) && Number(segment) < node.items.length) {
      node = node.items[Number(segment)] as Node;
      match.keyOffset = node?.range?.[0] ?? match.keyOffset;
      match.valueOffset = match.keyOffset;
    } else {
      break;
    }
    match.depth++;
  }
  return match;
}
