import { styleText } from 'node:util';
import type { HumanStyle } from '../core/log.ts';

/** Formatting for people: rounded numbers, durations, sizes, aligned tables that fit 80 columns, colours. */

export function percent(value: number | undefined, digits = 1): string {
  return value === undefined || !Number.isFinite(value) ? 'n/a' : `${(value * 100).toFixed(digits)}%`;
}

export function fixed(value: number | undefined, digits = 4): string {
  return value === undefined || !Number.isFinite(value) ? 'n/a' : value.toFixed(digits);
}

export function duration(seconds: number | undefined): string {
  if (seconds === undefined || !Number.isFinite(seconds)) return 'n/a';
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m${String(Math.round(seconds % 60)).padStart(2, '0')}s`;
  return `${Math.floor(minutes / 60)}h${String(minutes % 60).padStart(2, '0')}m`;
}

export function bytes(count: number | undefined): string {
  if (count === undefined) return 'n/a';
  if (count < 1024) return `${count} B`;
  if (count < 1024 ** 2) return `${(count / 1024).toFixed(1)} KiB`;
  if (count < 1024 ** 3) return `${(count / 1024 ** 2).toFixed(1)} MiB`;
  return `${(count / 1024 ** 3).toFixed(2)} GiB`;
}

/** Colours only on a terminal, never with NO_COLOR (no-color.org) or TERM=dumb. */
export function colorEnabled(stream: NodeJS.WriteStream): boolean {
  return (
    Boolean(stream.isTTY) && !('NO_COLOR' in process.env && process.env.NO_COLOR !== '') && process.env.TERM !== 'dumb'
  );
}

export interface Style extends HumanStyle {
  bold(text: string): string;
  green(text: string): string;
}

export function styleFor(enabled: boolean): Style {
  // colorEnabled decides; styleText would otherwise drop colours on its own when CI is set.
  const paint = (format: Parameters<typeof styleText>[0]) => (text: string) =>
    enabled ? styleText(format, text, { validateStream: false }) : text;
  return { dim: paint('dim'), yellow: paint('yellow'), red: paint('red'), bold: paint('bold'), green: paint('green') };
}

/** Visible width (escape codes excluded). */
function width(text: string): number {
  return text.replace(/\u001b\[[0-9;]*m/g, '').length;
}

function cut(text: string, max: number): string {
  return width(text) <= max ? text : `${text.slice(0, Math.max(1, max - 1))}…`;
}

export interface Column<Row> {
  header: string;
  value: (row: Row) => string;
  /** Right-align (numbers). */
  right?: boolean;
  /** May be shortened to fit the width. */
  shrink?: boolean;
}

/** An aligned table; shrinkable columns are cut so each line fits `maxWidth` (80 by default). */
export function table<Row>(
  columns: Column<Row>[],
  rows: Row[],
  options: { maxWidth?: number; mark?: (row: Row) => string } = {},
): string {
  const maxWidth = options.maxWidth ?? 80;
  const cells = rows.map((row) => columns.map((column) => column.value(row)));
  const widths = columns.map((column, i) => Math.max(width(column.header), ...cells.map((row) => width(row[i]))));
  const markWidth = options.mark ? 2 : 0;
  const total = () => markWidth + widths.reduce((a, b) => a + b, 0) + 2 * (columns.length - 1);
  for (let guard = 0; total() > maxWidth && guard < 200; guard++) {
    const widest = columns
      .map((c, i) => (c.shrink ? i : -1))
      .filter((i) => i >= 0)
      .sort((a, b) => widths[b] - widths[a])[0];
    if (widest === undefined || widths[widest] <= 8) break;
    widths[widest]--;
  }
  const line = (values: string[], mark: string) =>
    `${options.mark ? `${mark} ` : ''}${values
      .map((value, i) => {
        const text = cut(value, widths[i]);
        const pad = ' '.repeat(Math.max(0, widths[i] - width(text)));
        return columns[i].right ? pad + text : text + pad;
      })
      .join('  ')}`.trimEnd();
  return [
    line(
      columns.map((c) => c.header),
      ' ',
    ),
    ...rows.map((row, i) => line(cells[i], options.mark?.(row) ?? ' ')),
  ].join('\n');
}
