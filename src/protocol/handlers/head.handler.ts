import { isUploadId } from '../headers.js';
import { serializeMetadata } from '../metadata.js';
import { TusErrors } from '../tus-error.js';
import type { MethodHandler } from '../tus-context.js';

/** HEAD on an upload URL: where to resume. */
export const handleHead: MethodHandler = async (request, { store, queue }) => {
  if (request.id === undefined) throw TusErrors.methodNotAllowed();
  if (!isUploadId(request.id)) throw TusErrors.notFound();
  // A finished upload answers from the completed queue: offset == length, never 404 while the
  // queue still knows it, so a client that lost the last response does not start over.
  const record = (await store.getRecord(request.id)) ?? (await queue?.lookup(request.id));
  if (!record) throw TusErrors.notFound();
  // "The Server MUST prevent the client and/or proxies from caching the response".
  const headers: Record<string, string> = {
    'Upload-Offset': String(record.offset),
    'Cache-Control': 'no-store',
  };
  if (record.length !== null) headers['Upload-Length'] = String(record.length);
  const metadata = serializeMetadata(record.metadata);
  if (metadata !== undefined) headers['Upload-Metadata'] = metadata;
  return { status: 200, headers };
};
