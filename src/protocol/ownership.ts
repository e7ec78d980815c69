import type { TusContext } from './tus-context.js';
import { TusErrors } from './tus-error.js';
import type { TusRequest } from './tus-request.js';
import type { UploadRecord } from '../core/upload-record.js';

/**
 * With `ownership` on, whether the request's principal may reach an upload: only the principal
 * that created it (an upload created without one is reachable only without one).
 */
export function owns(record: UploadRecord, request: TusRequest, context: TusContext): boolean {
  return !context.options.ownership || record.owner === (request.principal ?? null);
}

/** Another principal's upload is answered as if it did not exist: 404. */
export function assertOwns(record: UploadRecord, request: TusRequest, context: TusContext): void {
  if (!owns(record, request, context)) throw TusErrors.notFound();
}

/**
 * Before a PATCH or DELETE takes the upload's lock (or stops a write under way): another
 * principal never makes the owner's requests wait, nor stops them. The owner is fixed at
 * creation, so reading it without the lock is enough. A no-op with ownership off.
 */
export async function assertOwnsUpload(
  id: string,
  request: TusRequest,
  context: TusContext,
): Promise<void> {
  if (!context.options.ownership) return;
  const record = (await context.store.getRecord(id)) ?? (await context.queue?.lookup(id));
  if (!record) throw TusErrors.notFound();
  assertOwns(record, request, context);
}
