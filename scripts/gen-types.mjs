#!/usr/bin/env node
// Derives the TypeScript types of experiment files from schemas/experiment.schema.json,
// the single source of truth:
//   src/config/experiment.ts  Experiment: what a user may write (defaults optional);
//   src/config/resolved.ts    ResolvedExperiment: after validation filled the defaults,
//                             every key that has a default is present.
// `npm run gen:types` rewrites both; a test fails when they are stale.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { compile } from 'json-schema-to-typescript';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const schemaPath = path.join(root, 'schemas', 'experiment.schema.json');
export const outputs = {
  experiment: path.join(root, 'src', 'config', 'experiment.ts'),
  resolved: path.join(root, 'src', 'config', 'resolved.ts'),
};

const banner = '/* Generated from schemas/experiment.schema.json by `npm run gen:types`. Do not edit. */';
const options = { bannerComment: banner, additionalProperties: false, style: { singleQuote: true, printWidth: 120 } };

function resolveRef(schema, node) {
  if (!node || typeof node !== 'object' || typeof node.$ref !== 'string') return node;
  return node.$ref
    .replace(/^#\//, '')
    .split('/')
    .reduce((value, key) => value[key], schema);
}

function hasDefault(schema, node) {
  const target = resolveRef(schema, node);
  if (target && 'default' in target) return true;
  return Array.isArray(node?.allOf) && 'default' in node;
}

/** Marks every property that has a default as required, at every depth. */
function withDefaultsRequired(schema) {
  const copy = structuredClone(schema);
  const visit = (node) => {
    if (Array.isArray(node)) return node.forEach(visit);
    if (!node || typeof node !== 'object') return;
    if (node.properties) {
      const required = new Set(node.required ?? []);
      for (const [key, child] of Object.entries(node.properties)) if (hasDefault(copy, child)) required.add(key);
      node.required = [...required];
    }
    Object.values(node).forEach(visit);
  };
  visit(copy);
  copy.title = 'ResolvedExperiment';
  return copy;
}

export async function generateTypes() {
  const schema = JSON.parse(fs.readFileSync(schemaPath, 'utf8'));
  return {
    experiment: await compile(schema, 'Experiment', options),
    resolved: await compile(withDefaultsRequired(schema), 'ResolvedExperiment', options),
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const generated = await generateTypes();
  for (const [key, file] of Object.entries(outputs)) {
    fs.writeFileSync(file, generated[key]);
    console.log(`wrote ${path.relative(root, file)}`);
  }
}
