import fs from 'node:fs';
import path from 'node:path';
import readline from 'node:readline';
import type { Options, ResultPromise } from 'execa';
import { InterruptedError } from '../core/errors.ts';
import { minimalEnv, signalGroup, spawnChild } from '../core/child.ts';
import { projectRoot, venvPython } from '../core/project.ts';

/**
 * The bridge to python/ (TensorFlow's TFLite converter, the LiteRT interpreter, MediaPipe):
 * one long-lived `python/tlx_worker.py` per process that needs it, so TensorFlow is imported
 * once (a sweep exports every trial through the same worker). Requests and replies are
 * JSON lines on its stdin and stdout; its stderr goes to the debug log.
 *
 * The worker runs in its own process group (a terminal's Ctrl-C reaches only tlx, which
 * stops it deliberately) and exits when its stdin closes, so it never outlives tlx, even a
 * SIGKILLed one. It writes its outputs into a staging folder that only tlx moves into place.
 */

class PythonBridgeError extends Error {
  override name = 'PythonBridgeError';
  constructor(
    message: string,
    readonly command: string,
    readonly exitCode: number | undefined,
    readonly stderrTail: string,
  ) {
    super(message);
  }
}

/** What a Python child may see: locale, paths, TensorFlow's log level; no MLflow or cloud secrets. */
function pythonEnv(): Record<string, string> {
  return minimalEnv({
    TF_CPP_MIN_LOG_LEVEL: process.env.TF_CPP_MIN_LOG_LEVEL ?? '2',
    PYTHONUNBUFFERED: '1',
    PYTHONPATH: path.join(projectRoot, 'python'),
    TLX_TEST_KILL_AT: process.env.TLX_TEST_KILL_AT,
    TLX_TEST_EXPORT_NOISE: process.env.TLX_TEST_EXPORT_NOISE,
    TLX_TEST_EXPORT_FAIL: process.env.TLX_TEST_EXPORT_FAIL,
    TLX_TEST_EXPORT_HANG: process.env.TLX_TEST_EXPORT_HANG,
  });
}

interface Pending {
  resolve: (report: unknown) => void;
  reject: (error: Error) => void;
  progress: (step: string) => void;
}

export interface CallOptions {
  /** When it aborts, the worker is stopped and the call throws InterruptedError. */
  signal?: AbortSignal;
  /**
   * The worker reports progress (a step done, an image through the interpreter) at least every
   * few seconds while it works; silent this long, it is stuck: it is stopped and the call fails.
   */
  stallMs?: number;
}

/** How long an export may go without progress: TLX_EXPORT_STALL_SECONDS, 10 minutes by default. */
export function exportStallMs(env: NodeJS.ProcessEnv = process.env): number {
  const seconds = Number(env.TLX_EXPORT_STALL_SECONDS);
  return Number.isFinite(seconds) && seconds > 0 ? seconds * 1000 : 600_000;
}

/** Something that runs python/ operations: a long-lived worker (or a test double-free one-shot). */
export interface Exporter {
  call<Report>(op: string, request: Record<string, unknown>, options?: CallOptions): Promise<Report>;
}

export class PythonWorker implements Exporter {
  private readonly child: ResultPromise<Options>;
  private readonly pending = new Map<number, Pending>();
  private readonly stderr: string[] = [];
  private nextId = 1;
  private exited = false;
  private readonly command: string;

  private constructor(onStderr: (line: string) => void) {
    const python = venvPython();
    if (!fs.existsSync(python))
      throw new PythonBridgeError(
        `the Python environment is missing (${python}); run \`npm install\` (scripts/setup.mjs creates .venv)`,
        python,
        undefined,
        '',
      );
    const script = path.join(projectRoot, 'python', 'tlx_worker.py');
    this.command = `${python} ${script}`;
    this.child = spawnChild(python, [script], { env: pythonEnv(), watchParent: true, buffer: false });
    readline.createInterface({ input: this.child.stdout! }).on('line', (line) => this.onReply(line));
    readline.createInterface({ input: this.child.stderr! }).on('line', (line) => {
      this.stderr.push(line);
      if (this.stderr.length > 40) this.stderr.shift();
      onStderr(line);
    });
    void this.child.then((result) => {
      this.exited = true;
      const error = new PythonBridgeError(
        `python/tlx_worker.py exited (code ${result.exitCode ?? result.signal}):\n${this.stderrTail()}`,
        this.command,
        result.exitCode,
        this.stderrTail(),
      );
      for (const pending of this.pending.values()) pending.reject(error);
      this.pending.clear();
    });
  }

  static start(onStderr: (line: string) => void = () => {}): PythonWorker {
    return new PythonWorker(onStderr);
  }

  private stderrTail(): string {
    return this.stderr.slice(-20).join('\n');
  }

  private bridgeError(message: string): PythonBridgeError {
    return new PythonBridgeError(message, this.command, undefined, this.stderrTail());
  }

  /** Whether the worker still runs (a stuck one is stopped; a sweep then starts another). */
  get running(): boolean {
    return !this.exited;
  }

  private onReply(line: string): void {
    let reply: { id: number; ok: boolean; progress?: string; report?: unknown; error?: string; traceback?: string };
    try {
      reply = JSON.parse(line) as typeof reply;
    } catch {
      return;
    }
    const pending = this.pending.get(reply.id);
    if (!pending) return;
    if (reply.progress !== undefined) return pending.progress(reply.progress);
    this.pending.delete(reply.id);
    if (reply.ok) pending.resolve(reply.report);
    else
      pending.reject(new PythonBridgeError(`python: ${reply.error}`, this.command, undefined, reply.traceback ?? ''));
  }

  call<Report>(op: string, request: Record<string, unknown>, options: CallOptions = {}): Promise<Report> {
    if (this.exited)
      return Promise.reject(this.bridgeError(`python/tlx_worker.py is not running:\n${this.stderrTail()}`));
    const id = this.nextId++;
    return new Promise<Report>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      let lastStep = 'its start';
      const onStall = () => {
        this.pending.delete(id);
        done();
        this.kill();
        reject(
          this.bridgeError(
            `python ${op} made no progress for ${options.stallMs! / 1000} s after ${lastStep}; stopped it (TLX_EXPORT_STALL_SECONDS sets the limit)`,
          ),
        );
      };
      const watch = () => {
        clearTimeout(timer);
        if (options.stallMs) timer = setTimeout(onStall, options.stallMs);
      };
      const onAbort = () => {
        this.pending.delete(id);
        done();
        this.kill();
        reject(new InterruptedError(`interrupted during ${op}`));
      };
      const done = () => {
        clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
      };
      this.pending.set(id, {
        resolve: (report) => {
          done();
          resolve(report as Report);
        },
        reject: (error) => {
          done();
          reject(error);
        },
        progress: (step) => {
          lastStep = `step "${step}"`;
          watch();
        },
      });
      watch();
      if (options.signal?.aborted) return onAbort();
      options.signal?.addEventListener('abort', onAbort, { once: true });
      this.child.stdin!.write(`${JSON.stringify({ id, op, ...request })}\n`);
    });
  }

  /** Ends the worker: it exits when its stdin closes. */
  async close(): Promise<void> {
    if (this.exited) return;
    this.child.stdin!.end();
    const timer = setTimeout(() => this.kill(), 10_000);
    await this.child;
    clearTimeout(timer);
  }

  kill(): void {
    if (!this.exited) signalGroup(this.child, 'SIGKILL');
  }
}

/** Runs one operation in a worker started for it. */
export async function callPythonOnce<Report>(
  op: string,
  request: Record<string, unknown>,
  options: CallOptions & { onStderr?: (line: string) => void } = {},
): Promise<Report> {
  const worker = PythonWorker.start(options.onStderr);
  try {
    return await worker.call<Report>(op, request, options);
  } finally {
    await worker.close();
  }
}
