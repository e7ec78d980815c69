import { LockTargetMissingError, LockTimeoutError } from '../../storage/storage.interfaces.js';
import {
  isOffsetOctetStream,
  isUploadId,
  parseContentLength,
  parseUploadOffset,
} from '../headers.js';
import { TusErrors, isNoSpaceError } from '../tus-error.js';
import { finalizeUpload } from '../finalize.js';
import type { MethodHandler, TusContext } from '../tus-context.js';
import { UploadProgressEvent } from '../tus-events.js';
import type { TusResponse } from '../tus-request.js';

/**
 * PATCH on an upload URL: the body is streamed to storage at the upload's offset under the
 * upload's exclusive lock; the record moves forward only over bytes the storage made durable.
 */
export const handlePatch: MethodHandler = async (request, context) => {
  const { options, store } = context;
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
      if (!record) return answerFinished(id, offset, contentLength, context);
      if (record.length === null) throw TusErrors.notFound();
      // "If the offsets do not match, the Server MUST respond with 409 ... without modifying".
      if (record.offset !== offset) throw TusErrors.mismatchedOffset(record.offset);
      const remaining = record.length - offset;
      if (contentLength !== undefined && contentLength > remaining)
        throw TusErrors.uploadLengthExceeded();

      const limit = Math.min(remaining, maxChunk);
      let received = 0;
      const result = await store.storage.write(id, offset, request.body, {
        limit,
        idleTimeoutMs: options.bodyIdleTimeoutMs,
        onChunk: (chunk) => {
          received += chunk.length;
          if (context.progress.take(id)) {
            context.emit(new UploadProgressEvent(id, offset + received, record.length));
          }
        },
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
      if (record.isComplete) await finalizeUpload(id, record, context);
      return { status: 204, headers: { 'Upload-Offset': String(record.offset) } };
    });
  } catch (e) {
    if (e instanceof LockTimeoutError) throw TusErrors.uploadLocked();
    if (e instanceof LockTargetMissingError)
      return answerFinished(id, offset, contentLength, context);
    if (isNoSpaceError(e)) throw TusErrors.insufficientStorage();
    throw e;
  }
};

/**
 * A PATCH for an upload that is no longer in staging: if it finished (it waits in the completed
 * queue or was taken recently), a client that lost the last response learns the final offset;
 * nothing is ever written to a finished upload.
 */
async function answerFinished(
  id: string,
  offset: number,
  contentLength: number | undefined,
  { queue }: TusContext,
): Promise<TusResponse> {
  const finished = await queue?.lookup(id);
  if (!finished || finished.length === null) throw TusErrors.notFound();
  if (offset !== finished.length) throw TusErrors.mismatchedOffset(finished.length);
  if (contentLength !== undefined && contentLength > 0) throw TusErrors.uploadLengthExceeded();
  return { status: 204, headers: { 'Upload-Offset': String(finished.length) } };
}
