import { LockTargetMissingError, LockTimeoutError } from '../../storage/storage.interfaces.js';
import { isOffsetOctetStream, isUploadId, parseContentLength, parseUploadOffset } from '../headers.js';
import { TusErrors, isNoSpaceError } from '../tus-error.js';
import type { MethodHandler } from '../tus-context.js';

/**
 * PATCH on an upload URL: the body is streamed to storage at the upload's offset under the
 * upload's exclusive lock; the record moves forward only over bytes the storage made durable.
 */
export const handlePatch: MethodHandler = async (request, { options, store }) => {
  if (request.id === undefined) throw TusErrors.methodNotAllowed();
  if (!isUploadId(request.id)) throw TusErrors.notFound();
  const id = request.id;
  // "All PATCH requests MUST use Content-Type: application/offset+octet-stream" (else 415).
  if (!isOffsetOctetStream(request.headers)) throw TusErrors.invalidContentType();
  const offset = parseUploadOffset(request.headers);
  const contentLength = parseContentLength(request.headers);
  const maxChunk = options.maxChunkSize ?? Number.POSITIVE_INFINITY;
  if (contentLength !== undefined && contentLength > maxChunk) throw TusErrors.chunkTooLarge();

  try {
    return await store.withLock(id, options.lockWaitMs, async () => {
      const record = await store.getRecord(id);
      if (!record || record.length === null) throw TusErrors.notFound();
      // "If the offsets do not match, the Server MUST respond with 409 ... without modifying".
      if (record.offset !== offset) throw TusErrors.mismatchedOffset(record.offset);
      const remaining = record.length - offset;
      if (contentLength !== undefined && contentLength > remaining) throw TusErrors.uploadLengthExceeded();

      const limit = Math.min(remaining, maxChunk);
      const result = await store.storage.write(id, offset, request.body, {
        limit,
        idleTimeoutMs: options.bodyIdleTimeoutMs,
      });
      if (result.bytes > 0) {
        record.offset += result.bytes;
        record.lastWrite = Date.now() / 1000;
        await store.records.put(id, record);
      }
      if (result.error) throw result.error;
      if (result.exceeded) {
        throw limit < remaining ? TusErrors.chunkTooLarge() : TusErrors.uploadLengthExceeded();
      }
      return { status: 204, headers: { 'Upload-Offset': String(record.offset) } };
    });
  } catch (e) {
    if (e instanceof LockTimeoutError) throw TusErrors.uploadLocked();
    if (e instanceof LockTargetMissingError) throw TusErrors.notFound();
    if (isNoSpaceError(e)) throw TusErrors.insufficientStorage();
    throw e;
  }
};
