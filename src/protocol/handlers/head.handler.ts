import { assertNotExpired, expiresHeader } from '../expiration.js';
import { isUploadId } from '../headers.js';
import { serializeMetadata } from '../metadata.js';
import { assertOwns } from '../ownership.js';
import { TusErrors } from '../tus-error.js';
import type { MethodHandler } from '../tus-context.js';

/** HEAD on an upload URL: where to resume. */
export const handleHead: MethodHandler = async (request, context) => {
  const { store, queue } = context;
  if (request.id === undefined) throw TusErrors.methodNotAllowed();
  if (!isUploadId(request.id)) throw TusErrors.notFound();
  const staged = await store.getRecord(request.id);
  // A finished upload answers from the completed queue: offset == length, never 404 while the
  // queue still knows it, so a client that lost the last response does not start over.
  const record = staged ?? (await queue?.lookup(request.id));
  if (!record) throw TusErrors.notFound();
  assertOwns(record, request, context);
  if (staged) assertNotExpired(staged, context);

  // "The Server MUST prevent the client and/or proxies from caching the response".
  const headers: Record<string, string> = { 'Cache-Control': 'no-store' };
  // A final upload has no offset before its concatenation is done ("SHOULD NOT contain").
  if (!record.isFinal || record.isComplete) headers['Upload-Offset'] = String(record.offset);
  if (record.length !== null) headers['Upload-Length'] = String(record.length);
  // "As long as the length of the upload is not known, the Server MUST set Upload-Defer-Length: 1".
  else headers['Upload-Defer-Length'] = '1';
  const metadata = serializeMetadata(record.metadata, record.encodedMetadata);
  if (metadata !== undefined) headers['Upload-Metadata'] = metadata;
  if (record.concat !== null) headers['Upload-Concat'] = record.concat;
  if (staged) Object.assign(headers, expiresHeader(staged, context));
  return { status: 200, headers };
};
