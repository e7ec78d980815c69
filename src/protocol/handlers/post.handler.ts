import { randomUUID } from 'node:crypto';
import { headerValue, parseHost, parseUploadLength } from '../headers.js';
import { parseMetadata } from '../metadata.js';
import { TusErrors, isNoSpaceError } from '../tus-error.js';
import { UploadRecord } from '../upload-record.js';
import { finalizeUpload } from '../finalize.js';
import type { MethodHandler, OnCreateHook } from '../tus-context.js';
import { UploadCreatedEvent } from '../tus-events.js';
import { TusError } from '../tus-error.js';
import type { RequestHeaders } from '../headers.js';

/** POST on the creation URL: a new upload, stored under a random UUID, never a client name. */
export const handlePost: MethodHandler = async (request, context) => {
  const { options, store } = context;
  if (request.id !== undefined) throw TusErrors.methodNotAllowed();
  const { headers } = request;
  const length = parseUploadLength(headers);
  // "If the length of the upload exceeds the maximum ... the Server MUST respond with 413".
  if (options.maxSize !== undefined && length > options.maxSize) throw TusErrors.maxSizeExceeded();
  const metadata = parseMetadata(
    headerValue(headers, 'upload-metadata', TusErrors.invalidMetadata),
    {
      maxSize: options.maxMetadataSize,
    },
  );
  const host = parseHost(request.host ?? headerValue(headers, 'host', TusErrors.invalidHost));

  const serverMetadata = context.onCreate
    ? await runOnCreate(context.onCreate, headers, metadata)
    : {};

  const id = randomUUID();
  const record = new UploadRecord(length, 0, metadata, serverMetadata);
  try {
    await store.create(id, record);
    context.emit(new UploadCreatedEvent(id, record, { method: request.method, headers }));
    // "Such an upload is immediately complete after its creation".
    if (record.isComplete)
      await store.withLock(id, options.lockWaitMs, () => finalizeUpload(id, record, context));
  } catch (e) {
    if (isNoSpaceError(e)) throw TusErrors.insufficientStorage();
    throw e;
  }
  return {
    status: 201,
    headers: { Location: `${request.scheme}://${host}${request.basePath}/${id}` },
  };
};

/** Runs the hook; an error carrying an HTTP status (Nest's `HttpException`) refuses with it. */
async function runOnCreate(
  hook: OnCreateHook,
  headers: RequestHeaders,
  metadata: Record<string, string>,
): Promise<Record<string, string>> {
  const flat: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined) flat[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  try {
    return { ...(await hook(flat, { ...metadata })) };
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
