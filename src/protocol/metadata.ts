import type { UploadMetadata } from '../core/upload-record.js';
import { TusErrors } from './tus-error.js';

/** Decoded `Upload-Metadata`: key → UTF-8 value (`''` for a key without value). */
export type { UploadMetadata };

const KEY = /^[a-zA-Z0-9_-]+$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$/;

export interface MetadataLimits {
  /** Largest accepted header, in bytes. */
  maxSize: number;
}

/**
 * Parses `Upload-Metadata` with tussi's rules: a header over `maxSize` bytes is refused (400);
 * pairs whose key is not `[a-zA-Z0-9_-]+` or whose value is not Base64 are ignored; a repeated
 * key is refused ("All keys MUST be unique"). A value may hold any text, in any script, or any
 * bytes: a `filename` is kept exactly as sent, and made safe only where it is used as a path
 * (see `safeFilename`), so a client is never refused for what its user named a file.
 */
export function parseMetadata(header: string | undefined, limits: MetadataLimits): UploadMetadata {
  return parseMetadataHeader(header, limits).metadata;
}

/** `Upload-Metadata` decoded, plus the values whose decoding cannot give back what was sent. */
export interface ParsedMetadata {
  /** Key → UTF-8 value (bytes that are not UTF-8 read as U+FFFD). */
  metadata: UploadMetadata;
  /**
   * Key → the Base64 exactly as the client sent it, only for values that re-encoding the decoded
   * string would change (bytes that are not UTF-8, Base64 without its padding or with stray
   * bits): HEAD returns every value "as specified by the Client".
   */
  encoded: Record<string, string>;
}

/** {@link parseMetadata}, also keeping, as sent, the values that decoding would alter. */
export function parseMetadataHeader(
  header: string | undefined,
  limits: MetadataLimits,
): ParsedMetadata {
  const metadata: UploadMetadata = {};
  const encoded: Record<string, string> = {};
  if (header === undefined || header.trim() === '') return { metadata, encoded };
  if (Buffer.byteLength(header, 'latin1') > limits.maxSize) throw TusErrors.metadataTooLarge();
  for (const pair of header.split(',')) {
    const parts = pair.trim().split(' ');
    if (parts.length > 2) continue;
    const [key, sent = ''] = parts as [string, string?];
    if (!KEY.test(key) || !BASE64.test(sent)) continue;
    if (Object.hasOwn(metadata, key)) throw TusErrors.invalidMetadata();
    const value = Buffer.from(sent, 'base64').toString('utf8');
    define(metadata, key, value);
    if (Buffer.from(value, 'utf8').toString('base64') !== sent) define(encoded, key, sent);
  }
  return { metadata, encoded };
}

// defineProperty: a key such as `__proto__` is data like any other, never the prototype.
function define(target: Record<string, string>, key: string, value: string): void {
  Object.defineProperty(target, key, {
    value,
    enumerable: true,
    writable: true,
    configurable: true,
  });
}

/**
 * The `Upload-Metadata` header value for decoded metadata, as HEAD returns it; values listed in
 * `encoded` (see {@link ParsedMetadata}) are given as they were sent.
 */
export function serializeMetadata(
  metadata: UploadMetadata,
  encoded: Record<string, string> = {},
): string | undefined {
  const pairs = Object.entries(metadata).map(([key, value]) => {
    if (value === '') return key;
    const sent = Object.hasOwn(encoded, key) ? encoded[key] : undefined;
    return `${key} ${sent ?? Buffer.from(value, 'utf8').toString('base64')}`;
  });
  return pairs.length > 0 ? pairs.join(',') : undefined;
}
