/**
 * CSV as spreadsheets read it (RFC 4180 quoting), with cells that a spreadsheet would run
 * as a formula (=, +, -, @, tab, carriage return first) prefixed with a quote, as OWASP
 * advises: a class name or an error message can never become a formula. Numbers are
 * written as numbers (a negative number is not a formula, whether a number or its text).
 */

const formulaStart = /^[=+\-@\t\r]/;

export function csvCell(value: string | number | undefined | null): string {
  if (value === undefined || value === null) return '';
  if (typeof value === 'number') return Number.isFinite(value) ? String(value) : '';
  const numeric = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(value);
  const safe = formulaStart.test(value) && !numeric ? `'${value}` : value;
  return /[",\n\r]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
}

export function csvTable(header: string[], rows: (string | number | undefined | null)[][]): string {
  return `${[header, ...rows].map((row) => row.map(csvCell).join(',')).join('\n')}\n`;
}
