import { randomUUID } from 'node:crypto';
import { headerValue, parseHost, parseUploadLength } from '../headers.js';
import { parseMetadata } from '../metadata.js';
import { TusErrors, isNoSpaceError } from '../tus-error.js';
import { UploadRecord } from '../upload-record.js';
import { finalizeUpload } from '../finalize.js';
import type { MethodHandler } from '../tus-context.js';

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

  const id = randomUUID();
  const record = new UploadRecord(length, 0, metadata);
  try {
    await store.create(id, record);
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
