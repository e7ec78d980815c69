import type { TusContext } from './tus-context.js';
import { TusErrors } from './tus-error.js';
import type { UploadRecord } from '../core/upload-record.js';

/** Default lifetime of an unfinished upload after its last write: tussi's `stale_upload_age`. */
export const DEFAULT_EXPIRE_AFTER_MS = 86_400_000;

/**
 * When an unfinished upload expires: `expireAfterMs` after its last write (a sliding window,
 * "its value MAY change over time"). `undefined` for complete uploads (a complete partial still
 * expires: it never enters the queue) or with the expiration extension off.
 */
export function expiresAt(record: UploadRecord, context: TusContext): Date | undefined {
  if (!context.extensions.has('expiration') || (record.isComplete && !record.isPartial))
    return undefined;
  const after = context.options.expireAfterMs ?? DEFAULT_EXPIRE_AFTER_MS;
  return new Date(record.lastWrite * 1000 + after);
}

/** `Upload-Expires` (RFC 9110 IMF-fixdate) for a response about `record`, when it expires. */
export function expiresHeader(record: UploadRecord, context: TusContext): Record<string, string> {
  const at = expiresAt(record, context);
  return at ? { 'Upload-Expires': at.toUTCString() } : {};
}

/** 410 for an upload past its expiry that the janitor has not removed yet. */
export function assertNotExpired(record: UploadRecord, context: TusContext): void {
  const at = expiresAt(record, context);
  if (at && at.getTime() <= Date.now()) throw TusErrors.uploadExpired();
}
