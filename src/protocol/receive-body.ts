import {
  CHECKSUM_ALGORITHMS,
  StreamingChecksum,
  announcesChecksumTrailer,
  parseChecksum,
  requestChecksum,
  type Checksum,
} from './checksum.js';
import { writeBody, type Checkpoints } from './body-pump.js';
import { completeUpload, takePendingFinals, wakeFinals } from './concatenation.js';
import { headerValue } from './headers.js';
import {
  ActiveWrite,
  PREEMPTION,
  SHUTDOWN,
  TERMINATION,
  trackWrite,
  type TusContext,
} from './tus-context.js';
import { TusErrors, isNoSpaceError } from './tus-error.js';
import { UploadProgressEvent } from './tus-events.js';
import type { TusRequest } from './tus-request.js';
import type { StorageState, UploadRecord } from '../core/upload-record.js';
import type { UploadLock } from '../storage/storage.interfaces.js';

/** What a body brings with it to check its bytes: a checksum header, or one in a trailer. */
export interface BodyChecksum {
  expected?: Checksum;
  trailer: boolean;
}

/** The checksum a PATCH (or POST with data) asks to be verified; 400 when it is malformed. */
export function bodyChecksum(request: TusRequest, context: TusContext): BodyChecksum | undefined {
  if (!context.extensions.has('checksum')) return undefined;
  const expected = requestChecksum(request.headers);
  const trailer =
    context.extensions.has('checksum-trailer') && announcesChecksumTrailer(request.headers);
  // Two checksums for one body: checking one would leave the other unchecked.
  if (expected && trailer) throw TusErrors.invalidChecksum();
  if (expected) return { expected, trailer: false };
  return trailer ? { trailer: true } : undefined;
}

/**
 * Streams a request body into an upload at its current offset and moves the record over the
 * bytes that are durable (and, with a checksum, verified). Runs under the upload's lock. A
 * checksum mismatch (460) or a body that cannot be verified (cut short) leaves the offset
 * where it was: "the uploaded chunk MUST be discarded".
 */
export async function receiveBody(
  request: TusRequest,
  context: TusContext,
  id: string,
  record: UploadRecord,
  contentLength: number | undefined,
  checksum: BodyChecksum | undefined,
  lock?: UploadLock,
  how: { lengthChanged?: boolean; finishOnRefusal?: boolean } = {},
): Promise<void> {
  const { options, store } = context;
  const offset = record.offset;
  const room =
    record.length !== null
      ? record.length - offset
      : (options.maxSize ?? Number.MAX_SAFE_INTEGER) - offset;
  const tooLong = () =>
    record.length !== null ? TusErrors.uploadLengthExceeded() : TusErrors.maxSizeExceeded();
  if (contentLength !== undefined && contentLength > room) throw tooLong();
  const maxChunk = options.maxChunkSize ?? Number.POSITIVE_INFINITY;
  const limit = Math.min(room, maxChunk);

  // A checksum header names its algorithm before the body: one hash runs while it streams. A
  // trailer names it only after the body: the bytes are hashed once it came, read back from
  // storage with that algorithm alone (a client cannot make the server run every algorithm).
  // A storage that cannot read back the bytes of an open upload (an object store) has the
  // body hashed with every algorithm while it streams instead: a constant cost per byte.
  const readBack = store.storage.readsOpenUploads !== false;
  const hasher = checksum?.expected
    ? new StreamingChecksum([checksum.expected.algorithm])
    : checksum?.trailer && !readBack
      ? new StreamingChecksum(CHECKSUM_ALGORITHMS)
      : undefined;
  let received = 0;
  // Bytes of this body already counted in the record by checkpoints (a long body without a
  // checksum: its bytes count as they become durable, so a crash loses only the last stretch).
  let committed = 0;
  const checkpoints: Checkpoints | undefined = checksum
    ? undefined
    : {
        bytes: options.checkpointBytes ?? 64 * 1024 * 1024,
        intervalMs: options.checkpointIntervalMs ?? 5000,
        commit: async (bytes, state) => {
          if (bytes <= committed || lock?.signal?.aborted) return;
          try {
            // Never by shortening the file: the body goes on writing after these bytes.
            const claim = bytes - committed;
            record.offset += await commitOffset(context, id, record, claim, state, false);
            committed = bytes;
          } catch (e) {
            // The body's end commits them (or says why it cannot).
            context.logger.warn(`${id}: a checkpoint of the offset failed: ${String(e)}`);
          }
        },
      };
  const stop = new ActiveWrite();
  const untrack = trackWrite(context, id, stop);
  let result;
  try {
    result = await writeBody(store.storage, id, offset, request.body, {
      limit,
      expected: contentLength,
      idleTimeoutMs: options.bodyIdleTimeoutMs,
      // A lock with a lease (Redis) that is lost mid-body stops the write as DELETE does.
      signal: lock?.signal ? AbortSignal.any([stop.signal, lock.signal]) : stop.signal,
      lost: lock?.signal,
      state: record.storage,
      checkpoints,
      onChunk: (chunk) => {
        hasher?.update(chunk);
        received += chunk.length;
        stop.received(chunk.length);
        if (context.progress.take(id)) {
          context.emit(new UploadProgressEvent(id, offset + received, record.length, record.owner));
        }
      },
    });
    // The body is in: nothing may stop it any more (it stays registered until its pending
    // finals are taken, so that a final created meanwhile is held for it, not lost).
    stop.finish();
  } catch (e) {
    untrack();
    throw e;
  }
  try {
    let accepted = result.bytes;
    // An empty body is verified too (its checksum is that of zero bytes); a cut one cannot be.
    if (checksum && (accepted > 0 || result.ended)) {
      if (!result.ended || result.exceeded || result.error) {
        accepted = 0;
      } else if (checksum.expected) {
        if (!hasher?.matches(checksum.expected)) throw TusErrors.checksumMismatch();
      } else {
        const expected = trailerChecksum(request);
        let computed = hasher;
        if (!computed) {
          computed = new StreamingChecksum([expected.algorithm]);
          for await (const chunk of store.storage.read(id, offset, accepted)) {
            computed.update(chunk as Buffer);
          }
        }
        if (!computed.matches(expected)) throw TusErrors.checksumMismatch();
      }
    }
    // A checksum trailer that was not announced (no `Trailer: Upload-Checksum`) shows up only
    // after the bytes went by unhashed: they cannot be verified, so none of them count.
    if (
      !checksum &&
      result.ended &&
      context.extensions.has('checksum-trailer') &&
      request.trailers?.()['upload-checksum'] !== undefined
    ) {
      throw TusErrors.unannouncedChecksumTrailer();
    }
    // Another holder may own the upload now: nothing of this request may be claimed.
    if (lock?.signal?.aborted) throw TusErrors.lockLost();
    // Finals created while this write held the partial's lock are recorded with its bytes.
    const pendingFinals = context.pendingFinals.has(id);
    takePendingFinals(id, record, context);
    // A length declared on this request is stored with its bytes, never by a refused request.
    // Bytes a checkpoint counted stay counted (they were durable then), whatever the end says.
    const rest = Math.max(0, accepted - committed);
    if (rest > 0 || how.lengthChanged || pendingFinals) {
      // The storage's state that counts the bytes is stored with them; refused bytes leave
      // the state as it was.
      const state = rest > 0 && accepted === result.bytes ? result.state : undefined;
      record.offset += await commitOffset(context, id, record, rest, state);
    }
    // A PATCH cut by an error or a limit may still have brought the last byte: finish the upload
    // before answering the refusal, so it does not linger in staging looking complete. (A POST
    // refused this way is removed whole instead: its client never got the Location.)
    const refused = result.error !== undefined || result.exceeded;
    if (record.isComplete && (!refused || how.finishOnRefusal !== false)) {
      await completeUpload(id, record, context, lock);
    }
    await recordLateFinals(id, record, context);
    if (result.error) throw result.error;
    if (result.exceeded) throw limit < room ? TusErrors.chunkTooLarge() : tooLong();
    // Stopped by a DELETE of this upload, whose files are removed as soon as this request lets
    // go of the lock: an offset would describe an upload that no longer exists. (One that this
    // request completed went to the queue first, and answers as finished.)
    if (stop.signal.reason === TERMINATION && !record.isComplete) {
      throw TusErrors.uploadTerminated();
    }
    // Stopped by a newer PATCH: 423, which clients retry (after a HEAD, at the offset stored).
    // Cut by a shutdown at its deadline: 503, the client resumes (elsewhere).
    if (stop.signal.reason === SHUTDOWN && !record.isComplete) throw TusErrors.shuttingDown();
    if (stop.signal.reason === PREEMPTION && !record.isComplete) {
      throw TusErrors.uploadInterrupted();
    }
  } finally {
    // Unregistered once (a newer write of the upload may be registered by now).
    untrack();
  }
}

/**
 * Finals created while this request stored its bytes (it still holds the partial's lock): they
 * are recorded too, and woken if the partial is complete. Nothing awaits between the last look
 * and the caller unregistering the write, so a later final waits for the lock instead.
 */
async function recordLateFinals(
  id: string,
  record: UploadRecord,
  context: TusContext,
): Promise<void> {
  while (context.pendingFinals.has(id) && record.isPartial) {
    const known = new Set(record.waitingFinals);
    takePendingFinals(id, record, context);
    await context.store.records.put(id, record);
    if (record.isComplete)
      wakeFinals(
        record.waitingFinals.filter((f) => !known.has(f)),
        context,
      );
  }
}

/** The checksum sent as a trailer of a chunked body; 400 when it was announced but not sent. */
function trailerChecksum(request: TusRequest): Checksum {
  const trailers = request.trailers?.() ?? {};
  const checksum = parseChecksum(
    headerValue(trailers, 'upload-checksum', TusErrors.invalidChecksum),
  );
  if (!checksum) throw TusErrors.invalidChecksum();
  return checksum;
}

/**
 * Stores the record with `accepted` more bytes; returns how many it could claim. On a disk the
 * body filled up (an upload of deferred length grows its file), the record's own write can
 * fail: the last bytes are then given back (the data file shortened) until the record fits, so
 * what was written durably is counted instead of all of it being lost.
 */
async function commitOffset(
  context: TusContext,
  id: string,
  record: UploadRecord,
  accepted: number,
  state?: StorageState,
  mayGiveBack = true,
): Promise<number> {
  const { store } = context;
  const base = record.offset;
  const baseState = record.storage;
  for (let claim = accepted, attempt = 0; ; attempt++) {
    record.offset = base + claim;
    record.lastWrite = Date.now() / 1000;
    if (state && claim === accepted) record.storage = state;
    try {
      await store.records.put(id, record);
      record.offset = base;
      // Written and counted: no longer promised (while the length is deferred, nothing was).
      if (record.length !== null && !record.promiseLapsed) await store.settle(claim);
      if (claim > 0) context.observer?.bytesStored?.(claim);
      return claim;
    } catch (e) {
      record.offset = base;
      record.storage = baseState;
      // Only a file that grows as it is written (deferred length) is given back: shortening a
      // pre-allocated one would only move the shortage to its next write.
      const growing = record.length === null;
      if (
        !mayGiveBack ||
        !isNoSpaceError(e) ||
        !growing ||
        !store.storage.truncate ||
        claim === 0 ||
        attempt >= 4
      ) {
        throw e;
      }
      claim = Math.max(0, claim - 256 * 1024 * 2 ** attempt);
      await store.storage.truncate(id, base + claim);
    }
  }
}
