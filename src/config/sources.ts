import fs from 'node:fs';
import YAML, { LineCounter, isMap, isPair, isScalar, isSeq, type Document, type Node } from 'yaml';
import type { Location, Problem } from '../errors.ts';

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

export function isPlainObject(value: unknown): value is PlainObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

export function locationAt(source: YamlSource, offset: number): Location {
  const { line, col } = source.lineCounter.linePos(offset);
  return { file: source.displayName, line, column: col };
}

/** Reads and parses one YAML file; syntax errors become problems with line and column. */
export function parseYamlFile(file: string, displayName: string, problems: Problem[]): YamlSource | undefined {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const reason = code === 'ENOENT' ? 'file not found' : code === 'EISDIR' ? 'is a folder, expected a YAML file' : String(error);
    problems.push({ location: { file: displayName }, keyPath: '', message: reason });
    return undefined;
  }
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
  const value: unknown = doc.toJS({ maxAliasCount: 100 });
  if (!isPlainObject(value)) {
    const found = value === null || value === undefined ? 'an empty document' : Array.isArray(value) ? 'a list' : `a ${typeof value}`;
    problems.push({ location: { file: displayName, line: 1, column: 1 }, keyPath: '', message: `found ${found}, expected a mapping of keys (name:, dataset:, ...)` });
    return undefined;
  }
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
