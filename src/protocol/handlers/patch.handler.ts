import type { Readable } from 'node:stream';
import { pumpBody } from '../body-pump.js';
import { LockTargetMissingError, LockTimeoutError } from '../../storage/storage.interfaces.js';
import { assertNotExpired, expiresHeader } from '../expiration.js';
import {
  headerValue,
  isOffsetOctetStream,
  isUploadId,
  parseContentLength,
  parseNonNegativeInteger,
  parseUploadOffset,
  type RequestHeaders,
} from '../headers.js';
import { assertOwnsUpload } from '../ownership.js';
import { bodyChecksum, receiveBody } from '../receive-body.js';
import { PREEMPTION, type MethodHandler, type TusContext } from '../tus-context.js';
import { TusErrors, isNoSpaceError, isTooLargeError } from '../tus-error.js';
import type { TusResponse } from '../tus-request.js';
import type { UploadRecord } from '../../core/upload-record.js';

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
  const declaredLength = readDeclaredLength(request.headers);
  if (contentLength !== undefined && contentLength > (options.maxChunkSize ?? Infinity)) {
    throw TusErrors.chunkTooLarge();
  }
  const checksum = bodyChecksum(request, context);
  await assertOwnsUpload(id, request, context);
  // A body trickling into this upload gives way (its bytes are kept): the client that resumes
  // matters, not a connection it gave up on or one holding the lock on purpose. A body that
  // streams keeps the lock; this request waits for it, then answers 409 or 423 as ever.
  const current = context.activeWrites.get(id);
  if (current?.isTrickling(options.minBytesPerSecond ?? 1024)) current.abort(PREEMPTION);

  try {
    return await store.withLock(id, options.lockWaitMs, async (lock) => {
      const record = await store.getRecord(id);
      if (!record) return answerFinished(id, offset, contentLength, request.body, context);
      // "The Server MUST respond with the 403 Forbidden status to PATCH requests against a final".
      if (record.isFinal) throw TusErrors.modifyFinal();
      assertNotExpired(record, context);
      // "If the offsets do not match, the Server MUST respond with 409 ... without modifying".
      if (record.offset !== offset) throw TusErrors.mismatchedOffset(record.offset);
      // Idle long enough that its room was given to others: promised again, or 507 (retry later).
      if (record.promiseLapsed) {
        await store.promise(record.remaining);
        record.promiseLapsed = false;
        await store.records.put(id, record);
      }
      const lengthChanged =
        declaredLength !== undefined && (await settleLength(id, record, declaredLength, context));
      try {
        await receiveBody(request, context, id, record, contentLength, checksum, lock, {
          lengthChanged,
        });
      } catch (e) {
        // A declared length is stored with the request's bytes only: a request refused before
        // that takes its promise back.
        if (lengthChanged && (await store.getRecord(id))?.length === null) {
          await store.settle(declaredLength - offset);
        }
        throw e;
      }
      return {
        status: 204,
        headers: { 'Upload-Offset': String(record.offset), ...expiresHeader(record, context) },
        upload: { offset: record.offset, length: record.length },
      };
    });
  } catch (e) {
    if (e instanceof LockTimeoutError) throw TusErrors.uploadLocked();
    if (e instanceof LockTargetMissingError) {
      return answerFinished(id, offset, contentLength, request.body, context);
    }
    if (isNoSpaceError(e)) throw TusErrors.insufficientStorage();
    // A length the filesystem cannot hold at all (above its file size limit).
    if (isTooLargeError(e)) throw TusErrors.maxSizeExceeded();
    throw e;
  }
};

/** `Upload-Length` on a PATCH: how a deferred length arrives (creation-defer-length). */
function readDeclaredLength(headers: RequestHeaders): number | undefined {
  const raw = headerValue(headers, 'upload-length', TusErrors.invalidUploadLength);
  if (raw === undefined) return undefined;
  const length = parseNonNegativeInteger(raw);
  if (length === undefined) throw TusErrors.invalidUploadLength();
  return length;
}

/**
 * "Once set the length MUST NOT be changed": the same value again is accepted, another is 400.
 * A deferred length is set once, checked against `maxSize` and the bytes already received, and
 * the remaining bytes are promised then (507 when they do not fit). True when this request sets it.
 */
async function settleLength(
  id: string,
  record: UploadRecord,
  length: number,
  context: TusContext,
): Promise<boolean> {
  if (record.length !== null) {
    if (record.length !== length) throw TusErrors.lengthAlreadySet();
    return false;
  }
  if (!context.extensions.has('creation-defer-length')) throw TusErrors.lengthAlreadySet();
  const { maxSize } = context.options;
  if (maxSize !== undefined && length > maxSize) throw TusErrors.maxSizeExceeded();
  if (length < record.offset) throw TusErrors.invalidUploadLength();
  const state = await context.store.storage.allocate?.(id, length, record.storage);
  if (state) record.storage = state;
  await context.store.promise(length - record.offset);
  // Stored with the request's bytes (receiveBody), so a refused request leaves it unset.
  record.length = length;
  return true;
}

/**
 * A PATCH for an upload that is no longer in staging: if it finished (it waits in the completed
 * queue or was taken recently), a client that lost the last response learns the final offset;
 * nothing is ever written to a finished upload.
 */
async function answerFinished(
  id: string,
  offset: number,
  contentLength: number | undefined,
  body: Readable,
  context: TusContext,
): Promise<TusResponse> {
  const finished = await context.queue?.lookup(id);
  if (!finished || finished.length === null) throw TusErrors.notFound();
  if (finished.isFinal) throw TusErrors.modifyFinal();
  if (offset !== finished.length) throw TusErrors.mismatchedOffset(finished.length);
  if (contentLength === undefined ? await bodyHasBytes(body, context) : contentLength > 0) {
    throw TusErrors.uploadLengthExceeded();
  }
  return {
    status: 204,
    headers: { 'Upload-Offset': String(finished.length) },
    upload: { offset: finished.length, length: finished.length },
  };
}

/** Whether a body of unknown length (chunked) brings any byte: reads at most its first chunk. */
async function bodyHasBytes(body: Readable, context: TusContext): Promise<boolean> {
  const probe = await pumpBody(body, async () => {}, {
    limit: 0,
    idleTimeoutMs: context.options.bodyIdleTimeoutMs,
  });
  return probe.exceeded;
}
