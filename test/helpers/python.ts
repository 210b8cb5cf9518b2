import { execa } from 'execa';
import path from 'node:path';
import { venvPython } from '../../src/core/project.ts';
import { projectRoot } from '../../src/core/project.ts';

/** Runs Python from the project's .venv (real TensorFlow/Keras) with a script given inline. */
export async function python(code: string, args: string[] = [], input?: string): Promise<string> {
  const result = await execa(venvPython(), ['-c', code, ...args], {
    // MLflow's client telemetry (a background thread that sets and unsets an environment
    // variable other threads read: a KeyError, once in a full suite) and any call out of the machine: off.
    env: {
      TF_CPP_MIN_LOG_LEVEL: '3',
      PYTHONPATH: path.join(projectRoot, 'python'),
      MLFLOW_DISABLE_TELEMETRY: 'true',
      DO_NOT_TRACK: 'true',
    },
    input,
    reject: false,
    timeout: 600_000,
  });
  if (result.exitCode !== 0)
    throw new Error(`python failed (${result.exitCode}):\n${String(result.stderr).split('\n').slice(-15).join('\n')}`);
  return String(result.stdout);
}

/** A zip archive with exactly these entry names (zip-slip names included), built by Python's zipfile. */
export async function makeZip(file: string, entries: { name: string; file?: string; text?: string }[]): Promise<void> {
  await python(
    `import json, sys, zipfile
spec = json.load(sys.stdin)
with zipfile.ZipFile(spec["file"], "w") as z:
    for e in spec["entries"]:
        if "file" in e: z.write(e["file"], e["name"])
        else: z.writestr(e["name"], e.get("text", ""))`,
    [],
    JSON.stringify({ file, entries }),
  );
}
