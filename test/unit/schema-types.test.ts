import assert from 'node:assert/strict';
import fs from 'node:fs';
import { test } from 'node:test';
// @ts-expect-error: a plain .mjs build script without type declarations
import { generateTypes, outputs } from '../../scripts/gen-types.mjs';

test('TypeScript types are derived from the schema and up to date (npm run gen:types)', async () => {
  const generated = (await generateTypes()) as Record<string, string>;
  for (const [key, file] of Object.entries(outputs as Record<string, string>)) {
    assert.equal(fs.readFileSync(file, 'utf8'), generated[key], `${file} is stale: run npm run gen:types`);
  }
});
