import cliProgress from 'cli-progress';
import { colorEnabled, styleFor, type Style } from './format.ts';

/**
 * The terminal a person watches: log lines, progress bars, the final block. Bars exist only
 * when stderr is a terminal (nothing animates in a pipe or a CI log); while bars are shown,
 * log lines are printed above them instead of through them.
 */

export interface Bar {
  update(value: number, payload?: Record<string, string | number>): void;
  setTotal(total: number): void;
  stop(): void;
}

export class Terminal {
  readonly interactive: boolean;
  readonly style: Style;
  readonly outputStyle: Style;
  private multibar?: cliProgress.MultiBar;
  private bars = 0;

  constructor(
    private readonly stderr: NodeJS.WriteStream = process.stderr,
    private readonly stdout: NodeJS.WriteStream = process.stdout,
  ) {
    this.interactive = Boolean(stderr.isTTY);
    this.style = styleFor(colorEnabled(stderr));
    this.outputStyle = styleFor(colorEnabled(stdout));
  }

  /** Whether results on stdout are for a person (a terminal) rather than a script. */
  get humanOutput(): boolean {
    return Boolean(this.stdout.isTTY);
  }

  /** A log line (stderr), above any bars. */
  printLine(line: string): void {
    if (this.multibar) this.multibar.log(`${line}\n`);
    else this.stderr.write(`${line}\n`);
  }

  /** A bar with a cli-progress format ({bar}, {value}, {total}, {eta_formatted} and payload keys); a no-op without a terminal. */
  bar(format: string, total: number, payload: Record<string, string | number> = {}): Bar {
    if (!this.interactive) return { update() {}, setTotal() {}, stop() {} };
    this.multibar ??= new cliProgress.MultiBar(
      {
        stream: this.stderr,
        hideCursor: true,
        clearOnComplete: true,
        autopadding: true,
        barsize: 12,
        format: '{bar}',
        linewrap: false,
        fps: 10,
        forceRedraw: false,
      },
      cliProgress.Presets.shades_classic,
    );
    const bar = this.multibar.create(total, 0, payload, { format });
    this.bars++;
    let stopped = false;
    return {
      update: (value, next) => bar.update(value, next),
      setTotal: (next) => bar.setTotal(next),
      stop: () => {
        if (stopped) return;
        stopped = true;
        this.multibar?.remove(bar);
        if (--this.bars === 0) {
          this.multibar?.stop();
          this.multibar = undefined;
        }
      },
    };
  }

  /** A result for a person (stdout). */
  print(text: string): void {
    this.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
  }
}
