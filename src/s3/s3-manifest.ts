import { MAX_PARTS, MAX_PART_SIZE, MIN_PART_SIZE, MAX_OBJECT_SIZE } from './s3-client.js';

/** One part of the multipart upload, in order (its number is its index + 1). */
export interface ManifestPart {
  etag: string;
  size: number;
}

/** Bytes after the last part, below a part's size: an object of their own until the next write. */
export interface ManifestTail {
  key: string;
  size: number;
}

/**
 * What the S3 storage knows of one upload's bytes: its storage state, kept in the upload's
 * record (`{prefix}{id}.info`) and stored with the offset in one write, so the two never
 * disagree. `end` bytes are in `parts`, then `tail`.
 */
export interface Manifest {
  v: 1;
  /** The S3 multipart upload of `{prefix}{id}`. */
  uploadId: string;
  /** Content-Type and Content-Disposition of the object (from the client's metadata). */
  headers: { ContentType?: string; ContentDisposition?: string };
  /** Declared length (`null` while deferred): the part size grows so that it fits. */
  length: number | null;
  parts: ManifestPart[];
  tail: ManifestTail | null;
  end: number;
  /** Trailing pieces this state replaced: deleted by the next write (this state is stored). */
  garbage: string[];
}

/** The state a record holds; throws when it holds none (not an upload of this storage). */
export function parseManifest(state: unknown): Manifest {
  const m = state as Partial<Manifest> | null | undefined;
  if (
    m?.v !== 1 ||
    typeof m.uploadId !== 'string' ||
    !Array.isArray(m.parts) ||
    !Number.isSafeInteger(m.end)
  ) {
    throw new SyntaxError('the record holds no S3 upload state');
  }
  return { ...m, garbage: Array.isArray(m.garbage) ? m.garbage : [] } as Manifest;
}

/** The bytes the parts hold (the tail not counted). */
export function partsEnd(parts: ManifestPart[]): number {
  return parts.reduce((sum, p) => sum + p.size, 0);
}

/**
 * The size of the next part, the `index`-th (0-based), starting at byte `start`: at least
 * `base`, and large enough that the rest of `bound` fits in the part numbers left (a tenth of
 * them kept spare). Without a bound (a deferred length and no maxSize) the size doubles every
 * 1,000 parts, which reaches S3's 5 TiB before its 10,000 parts.
 */
export function nextPartSize(
  index: number,
  start: number,
  bound: number | null,
  base: number,
): number {
  const floor = Math.max(base, MIN_PART_SIZE);
  let size: number;
  if (bound === null) {
    size = floor * 2 ** Math.floor(index / 1000);
  } else {
    const left = Math.max(1, MAX_PARTS * 0.9 - index);
    size = Math.max(floor, Math.ceil(Math.max(0, bound - start) / left));
  }
  // Whole MiB, below S3's largest part.
  return Math.min(MAX_PART_SIZE, Math.ceil(size / 1048576) * 1048576);
}

/** The largest upload the storage takes: S3's largest object. */
export const MAX_UPLOAD_SIZE = MAX_OBJECT_SIZE;
