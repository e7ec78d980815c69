import { InvalidArgumentError } from 'commander';
import { readFileSync } from 'node:fs';

const UNITS: Record<string, number> = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 };

/**
 * A size in bytes: `1048576`, or with a binary suffix `512K`, `64M`, `1.5G`, `2T` (`KiB`, `MB`
 * and `b` spellings too; every suffix is a power of 1024).
 */
export function parseSize(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(?:([kmgt])(?:i?b)?|b)?\s*$/i.exec(text);
  if (!match) {
    throw new InvalidArgumentError(
      `"${text}" is not a size (bytes, or with a K, M, G or T suffix)`,
    );
  }
  const bytes = Math.round(Number(match[1]) * UNITS[(match[2] ?? '').toLowerCase()]);
  if (!Number.isSafeInteger(bytes)) throw new InvalidArgumentError(`"${text}" is too large`);
  return bytes;
}

/** `parseSize`, or `Infinity` for `Infinity`/`inf` (tus-js-client's whole-file chunk). */
export function parseChunkSize(text: string): number {
  if (/^\s*(infinity|inf)\s*$/i.test(text)) return Infinity;
  const bytes = parseSize(text);
  if (bytes < 1) throw new InvalidArgumentError('the chunk size must be at least 1 byte');
  return bytes;
}

/** An integer in [min, max]. */
export function integerIn(min: number, max: number): (text: string) => number {
  return (text) => {
    const value = Number(text);
    if (!/^\s*\d+\s*$/.test(text) || !Number.isSafeInteger(value) || value < min || value > max) {
      throw new InvalidArgumentError(`"${text}" is not an integer from ${min} to ${max}`);
    }
    return value;
  };
}

/**
 * A parser for a repeatable option whose values may also be comma-separated (the environment
 * variable form): every occurrence adds to the list.
 */
export function commaList(text: string, previous: string[] | undefined): string[] {
  const items = text
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  return [...(previous ?? []), ...items];
}

/** `--header 'Name: value'`, repeatable. */
export function parseHeader(text: string, previous: [string, string][] = []): [string, string][] {
  const colon = text.indexOf(':');
  const name = colon > 0 ? text.slice(0, colon).trim() : '';
  if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) {
    throw new InvalidArgumentError(`"${text}" is not a header (expected 'Name: value')`);
  }
  return [...previous, [name, text.slice(colon + 1).trim()]];
}

/** `--metadata key=value`, repeatable; keys follow TUS metadata rules (`[a-zA-Z0-9_-]+`). */
export function parseMetadataPair(
  text: string,
  previous: Record<string, string> = {},
): Record<string, string> {
  const equals = text.indexOf('=');
  const key = equals > 0 ? text.slice(0, equals) : '';
  if (!/^[A-Za-z0-9_-]+$/.test(key)) {
    throw new InvalidArgumentError(
      `"${text}" is not metadata (expected key=value, the key of letters, digits, _ and -)`,
    );
  }
  return { ...previous, [key]: text.slice(equals + 1) };
}

/** `--retry-delays 0,1000,3000` (milliseconds); empty or `none` for no retries. */
export function parseRetryDelays(text: string): number[] {
  if (/^\s*(none)?\s*$/i.test(text)) return [];
  return text.split(',').map((part) => {
    const value = Number(part.trim());
    if (part.trim() === '' || !Number.isSafeInteger(value) || value < 0) {
      throw new InvalidArgumentError(`"${text}" is not a list of delays in milliseconds`);
    }
    return value;
  });
}

/** `1.5 MiB`. */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes)) return '?';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** `45 s`, `3 min 20 s`, `2 h 05 min`. */
export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
}

/** The package's version, read from its package.json (two levels above dist/cli/). */
export function packageVersion(): string {
  try {
    const json = readFileSync(new URL('../../package.json', import.meta.url), 'utf8');
    return (JSON.parse(json) as { version?: string }).version ?? '0.0.0';
  } catch {
    return '0.0.0';
  }
}
