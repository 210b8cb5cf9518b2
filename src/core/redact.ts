/**
 * The one place where secrets leave URLs: user-info (user:password@) and the query string
 * and fragment (signed URLs, tokens) are removed; scheme, host and path stay, so a person
 * still sees which server and which file. Used for every URL that reaches a log line, an
 * error message, a file in a run folder or an MLflow param.
 */

export const redactedMark = '[redacted]';

export function redactUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return url;
  }
  const hadSecrets = parsed.username !== '' || parsed.password !== '' || parsed.search !== '' || parsed.hash !== '';
  if (!hadSecrets) return url;
  const query = parsed.search !== '' || parsed.hash !== '' ? `?${redactedMark}` : '';
  parsed.username = '';
  parsed.password = '';
  parsed.search = '';
  parsed.hash = '';
  // URL adds a "/" to an empty path; keep the address as it was written.
  const written = url.split(/[?#]/)[0];
  const text = parsed.toString();
  return `${written.endsWith('/') ? text : text.replace(/\/$/, '')}${query}`;
}

// Scheme://anything up to whitespace or a closing quote/bracket: URLs inside free text.
const urlInText = /\b[a-z][a-z0-9+.-]*:\/\/[^\s"'<>`)\]]+/gi;

/** Every URL inside a text, redacted (error messages, log lines). */
export function redactText(text: string): string {
  return text.replace(urlInText, (url) => redactUrl(url));
}
