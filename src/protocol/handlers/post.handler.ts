import { randomUUID } from 'node:crypto';
import { noteUploadId } from '../../core/request-context.js';
import { completeUpload, parseFinalConcat, registerWaitingFinal } from '../concatenation.js';
import { expiresHeader } from '../expiration.js';
import {
  headerValue,
  isOffsetOctetStream,
  parseContentLength,
  parseHost,
  parseUploadLength,
  type RequestHeaders,
} from '../headers.js';
import { parseMetadataHeader } from '../metadata.js';
import { owns } from '../ownership.js';
import { bodyChecksum, receiveBody } from '../receive-body.js';
import type { MethodHandler, OnCreateHook, TusContext } from '../tus-context.js';
import { TusError, TusErrors, isNoSpaceError, isTooLargeError } from '../tus-error.js';
import { UploadCreatedEvent } from '../tus-events.js';
import type { TusRequest } from '../tus-request.js';
import { UploadRecord } from '../../core/upload-record.js';

/** POST on the creation URL: a new upload, stored under a random UUID, never a client name. */
export const handlePost: MethodHandler = async (request, context) => {
  const { options, store, extensions } = context;
  if (!extensions.has('creation')) throw TusErrors.methodNotAllowed();
  if (request.id !== undefined) throw TusErrors.methodNotAllowed();
  const { headers } = request;
  const host = parseHost(request.host ?? headerValue(headers, 'host', TusErrors.invalidHost));
  const concat = readConcat(headers, context);
  const finalParts =
    concat?.startsWith('final') === true ? parseFinalConcat(concat, request.basePath) : [];
  if (finalParts.length > (options.maxPartsPerFinal ?? 100)) throw TusErrors.tooManyParts();
  // One partial listed again and again would deliver its bytes as many times.
  if (!options.allowDuplicateParts && new Set(finalParts).size !== finalParts.length) {
    throw TusErrors.duplicatePart();
  }
  const length =
    finalParts.length > 0
      ? await finalLength(finalParts, request, context)
      : readLength(headers, context);
  // "If the length of the upload exceeds the maximum ... the Server MUST respond with 413".
  if (length !== null && options.maxSize !== undefined && length > options.maxSize) {
    throw TusErrors.maxSizeExceeded();
  }
  const { metadata, encoded } = parseMetadataHeader(
    headerValue(headers, 'upload-metadata', TusErrors.invalidMetadata),
    { maxSize: options.maxMetadataSize },
  );
  // creation-with-upload: "The Client MUST include the Content-Type: application/offset+octet-stream".
  const withData =
    extensions.has('creation-with-upload') &&
    finalParts.length === 0 &&
    isOffsetOctetStream(headers);
  const contentLength = withData ? parseContentLength(headers) : undefined;
  if (withData && contentLength !== undefined) {
    if (contentLength > (options.maxChunkSize ?? Infinity)) throw TusErrors.chunkTooLarge();
    if (length !== null && contentLength > length) throw TusErrors.uploadLengthExceeded();
  }
  const checksum = withData ? bodyChecksum(request, context) : undefined;
  const serverMetadata = context.onCreate
    ? await runOnCreate(context.onCreate, headers, metadata, request.principal)
    : {};

  const id = randomUUID();
  noteUploadId(id);
  const record = new UploadRecord(length, 0, metadata, serverMetadata);
  record.encodedMetadata = encoded;
  record.concat = concat ?? null;
  record.parts = finalParts;
  if (options.ownership) record.owner = request.principal ?? null;
  const response: Record<string, string> = {
    Location: `${request.scheme}://${host}${request.basePath}/${id}`,
  };
  try {
    await store.create(id, record);
    context.emit(new UploadCreatedEvent(id, record, { method: request.method, headers }));
    request.onCreated?.(response.Location);
    if (finalParts.length > 0) {
      await registerWaitingFinal(id, finalParts, context);
      const final = await store.getRecord(id);
      if (final) Object.assign(response, expiresHeader(final, context));
    } else {
      // Nobody else knows the id yet: the lock is only for a body's write and a finalize.
      if (withData || record.isComplete) {
        await store.withLock(id, options.lockWaitMs, async (lock) => {
          if (withData) {
            await receiveBody(request, context, id, record, contentLength, checksum, lock, {
              finishOnRefusal: false,
            });
          } else {
            // "Such an upload is immediately complete after its creation".
            await completeUpload(id, record, context, lock);
          }
        });
      }
      if (withData) response['Upload-Offset'] = String(record.offset);
      Object.assign(response, expiresHeader(record, context));
    }
  } catch (e) {
    // A refused creation (checksum mismatch, over-long body, full disk) leaves no upload the
    // client never got a Location for.
    await removeQuietly(id, context);
    if (isNoSpaceError(e)) throw TusErrors.insufficientStorage();
    // A length the filesystem cannot hold at all (above its file size limit).
    if (isTooLargeError(e)) throw TusErrors.maxSizeExceeded();
    throw e;
  }
  return { status: 201, headers: response };
};

async function removeQuietly(id: string, context: TusContext): Promise<void> {
  try {
    await context.store.withLock(id, context.options.lockWaitMs, () => context.store.remove(id));
  } catch {
    // Nothing was created, or the janitor will find it: the original error is what matters.
  }
}

/** `Upload-Length`, or `null` for `Upload-Defer-Length: 1` (creation-defer-length). */
function readLength(headers: RequestHeaders, context: TusContext): number | null {
  const defer = headerValue(headers, 'upload-defer-length', TusErrors.invalidDeferLength);
  if (defer === undefined || !context.extensions.has('creation-defer-length')) {
    return parseUploadLength(headers);
  }
  // "If the Upload-Defer-Length header contains any other value than 1 ... 400".
  if (defer.trim() !== '1') throw TusErrors.invalidDeferLength();
  if (headers['upload-length'] !== undefined) throw TusErrors.lengthAndDefer();
  return null;
}

/** `Upload-Concat` of a creation, when concatenation is on: `partial` or `final;<urls>`. */
function readConcat(headers: RequestHeaders, context: TusContext): string | undefined {
  if (!context.extensions.has('concatenation')) return undefined;
  const value = headerValue(headers, 'upload-concat', TusErrors.invalidConcat)?.trim();
  if (value === undefined) return undefined;
  if (value === 'partial') return value;
  if (!value.startsWith('final;')) throw TusErrors.invalidConcat();
  // "The Client MUST NOT include the Upload-Length header in the final upload creation."
  if (headers['upload-length'] !== undefined || headers['upload-defer-length'] !== undefined) {
    throw TusErrors.invalidConcat();
  }
  return value;
}

/**
 * The length of a final upload: the sum of its partials' lengths, when all are known. Every
 * part must be a partial upload of this server (one that does not exist, or another principal's,
 * is 404); unfinished ones only with concatenation-unfinished.
 */
async function finalLength(
  parts: string[],
  request: TusRequest,
  context: TusContext,
): Promise<number | null> {
  const records = await Promise.all(parts.map((id) => context.store.getRecord(id)));
  let sum: number | null = 0;
  // What the final holds at least: the lengths known, and the bytes of the deferred ones so far.
  let least = 0;
  for (const part of records) {
    if (!part || !owns(part, request, context)) throw TusErrors.notFound();
    if (!part.isPartial) throw TusErrors.invalidConcat();
    if (!part.isComplete && !context.extensions.has('concatenation-unfinished')) {
      throw TusErrors.unfinishedPartials();
    }
    sum = part.length === null || sum === null ? null : sum + part.length;
    least += part.length ?? part.offset;
  }
  const { maxSize } = context.options;
  if (maxSize !== undefined && least > maxSize) throw TusErrors.maxSizeExceeded();
  return sum;
}

/** Runs the hook; an error carrying an HTTP status (Nest's `HttpException`) refuses with it. */
async function runOnCreate(
  hook: OnCreateHook,
  headers: RequestHeaders,
  metadata: Record<string, string>,
  owner: string | undefined,
): Promise<Record<string, string>> {
  const flat: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined) flat[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  try {
    return { ...(await hook(flat, { ...metadata }, { owner })) };
  } catch (e) {
    const status = (e as { getStatus?: () => unknown }).getStatus?.();
    if (typeof status === 'number' && status >= 400 && status < 600) {
      throw new TusError(
        'ERR_CREATION_REFUSED',
        status,
        (e as Error).message || 'creation refused',
      );
    }
    throw e;
  }
}
