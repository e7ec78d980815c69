import { createHash, type Hash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import { headerValue, type RequestHeaders } from './headers.js';
import { TusErrors } from './tus-error.js';

/** Algorithms of `Upload-Checksum`, as `Tus-Checksum-Algorithm` lists them (sha1 is required). */
export const CHECKSUM_ALGORITHMS = ['sha1', 'md5', 'sha256', 'sha512', 'crc32'] as const;
export type ChecksumAlgorithm = (typeof CHECKSUM_ALGORITHMS)[number];

export interface Checksum {
  algorithm: ChecksumAlgorithm;
  digest: Buffer;
}

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/**
 * `Upload-Checksum: <algorithm> <base64>`; `undefined` when absent. A malformed value or an
 * algorithm the server does not support is 400, as the protocol says.
 */
export function parseChecksum(value: string | undefined): Checksum | undefined {
  if (value === undefined) return undefined;
  const [algorithm = '', encoded = '', ...rest] = value.trim().split(' ');
  if (!(CHECKSUM_ALGORITHMS as readonly string[]).includes(algorithm)) {
    throw TusErrors.unsupportedChecksumAlgorithm();
  }
  if (rest.length > 0 || encoded === '' || !BASE64.test(encoded)) throw TusErrors.invalidChecksum();
  return { algorithm: algorithm as ChecksumAlgorithm, digest: Buffer.from(encoded, 'base64') };
}

/** The checksum header of a request, if any. */
export function requestChecksum(headers: RequestHeaders): Checksum | undefined {
  return parseChecksum(headerValue(headers, 'upload-checksum', TusErrors.invalidChecksum));
}

/** True when the request announces `Upload-Checksum` as a trailer (`Trailer: Upload-Checksum`). */
export function announcesChecksumTrailer(headers: RequestHeaders): boolean {
  const trailer = headerValue(headers, 'trailer', TusErrors.invalidChecksum);
  return !!trailer?.split(',').some((name) => name.trim().toLowerCase() === 'upload-checksum');
}

/** Hashes a body while it streams (no copy of it is kept) with the given algorithms. */
export class StreamingChecksum {
  private readonly hashes = new Map<ChecksumAlgorithm, Hash>();
  private crc: number | undefined;

  constructor(algorithms: readonly ChecksumAlgorithm[]) {
    for (const algorithm of algorithms) {
      if (algorithm === 'crc32') this.crc = 0;
      else this.hashes.set(algorithm, createHash(algorithm));
    }
  }

  update(chunk: Buffer): void {
    for (const hash of this.hashes.values()) hash.update(chunk);
    if (this.crc !== undefined) this.crc = crc32(chunk, this.crc);
  }

  /** True when the body hashed so far has the expected checksum. */
  matches(expected: Checksum): boolean {
    let digest: Buffer | undefined;
    if (expected.algorithm === 'crc32') {
      if (this.crc === undefined) return false;
      digest = Buffer.alloc(4);
      digest.writeUInt32BE(this.crc >>> 0);
    } else {
      digest = this.hashes.get(expected.algorithm)?.digest();
    }
    return digest !== undefined && digest.equals(expected.digest);
  }
}
