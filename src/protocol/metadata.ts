import { TusErrors } from './tus-error.js';

/** Decoded `Upload-Metadata`: key → UTF-8 value (`''` for a key without value). */
export type UploadMetadata = Record<string, string>;

const KEY = /^[a-zA-Z0-9_-]+$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}(?:==)?|[A-Za-z0-9+/]{3}=?)?$/;
const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

export interface MetadataLimits {
  /** Largest accepted header, in bytes. */
  maxSize: number;
}

/**
 * Parses `Upload-Metadata` with tussi's rules: a header over `maxSize` bytes is refused (400);
 * pairs whose key is not `[a-zA-Z0-9_-]+` or whose value is not Base64 are ignored; a repeated
 * key is refused ("All keys MUST be unique"); a `filename` must be printable ASCII (400).
 */
export function parseMetadata(header: string | undefined, limits: MetadataLimits): UploadMetadata {
  const metadata: UploadMetadata = {};
  if (header === undefined || header.trim() === '') return metadata;
  if (Buffer.byteLength(header, 'latin1') > limits.maxSize) throw TusErrors.metadataTooLarge();
  for (const pair of header.split(',')) {
    const parts = pair.trim().split(' ');
    if (parts.length > 2) continue;
    const [key, encoded = ''] = parts as [string, string?];
    if (!KEY.test(key) || !BASE64.test(encoded)) continue;
    if (Object.hasOwn(metadata, key)) throw TusErrors.invalidMetadata();
    // defineProperty: a key such as `__proto__` is data like any other, never the prototype.
    Object.defineProperty(metadata, key, {
      value: Buffer.from(encoded, 'base64').toString('utf8'),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  if (metadata.filename !== undefined && !PRINTABLE_ASCII.test(metadata.filename)) {
    throw TusErrors.invalidFilename();
  }
  return metadata;
}

/** The `Upload-Metadata` header value for decoded metadata, as HEAD returns it. */
export function serializeMetadata(metadata: UploadMetadata): string | undefined {
  const pairs = Object.entries(metadata).map(([key, value]) =>
    value === '' ? key : `${key} ${Buffer.from(value, 'utf8').toString('base64')}`,
  );
  return pairs.length > 0 ? pairs.join(',') : undefined;
}
