import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Where tlx is installed: package.json, schemas/, python/ and .venv/ live here. */
export const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export const version: string = (
  JSON.parse(fs.readFileSync(path.join(projectRoot, 'package.json'), 'utf8')) as { version: string }
).version;

/** The Python of tlx's .venv (TLX_PYTHON overrides it): the TFLite converter, the interpreter, MLflow. */
export function venvPython(): string {
  return process.env.TLX_PYTHON ?? path.join(projectRoot, '.venv', 'bin', 'python');
}
