import { LockTargetMissingError, LockTimeoutError } from '../../storage/storage.interfaces.js';
import { isUploadId } from '../headers.js';
import { assertOwnsUpload } from '../ownership.js';
import { wakeFinals } from '../concatenation.js';
import { TERMINATION, type MethodHandler, type TusContext } from '../tus-context.js';
import { TusErrors } from '../tus-error.js';
import { UploadTerminatedEvent } from '../tus-events.js';
import type { TusResponse } from '../tus-request.js';
import type { UploadRecord } from '../../core/upload-record.js';

/**
 * DELETE (termination): the upload's files are removed under its lock. A PATCH streaming into it
 * in this process is stopped first (it lets go of the lock and answers 410); one
 * holding the lock in another process makes this answer 423 after the lock wait (clients retry).
 */
export const handleDelete: MethodHandler = async (request, context) => {
  const { store, options, extensions } = context;
  if (!extensions.has('termination')) throw TusErrors.methodNotAllowed();
  if (request.id === undefined) throw TusErrors.methodNotAllowed();
  if (!isUploadId(request.id)) throw TusErrors.notFound();
  const id = request.id;
  await assertOwnsUpload(id, request, context);
  context.activeWrites.get(id)?.abort(TERMINATION);
  let removed: UploadRecord | null;
  try {
    removed = await store.withLock(id, options.lockWaitMs, async () => {
      const record = await store.getRecord(id);
      if (record) await store.remove(id, record);
      return record;
    });
    if (!removed) return await terminateFinished(id, context);
  } catch (e) {
    if (e instanceof LockTimeoutError) throw TusErrors.uploadLocked();
    if (e instanceof LockTargetMissingError) return terminateFinished(id, context);
    throw e;
  }
  context.progress.forget(id);
  context.emit(new UploadTerminatedEvent(id, removed.owner));
  // Finals waiting for a terminated partial can never complete: they fail now (410), not
  // when they expire.
  // (Those held for a body of this process that never stored them, too.)
  const held = context.pendingFinals.get(id) ?? [];
  context.pendingFinals.delete(id);
  wakeFinals(
    new Set([...removed.waitingFinals, ...held]),
    context,
    (finalId) => `final upload ${finalId} of a terminated partial`,
  );
  return { status: 204, headers: {} };
};

/** A finished upload is terminated in the completed queue, unless a consumer holds it (423). */
async function terminateFinished(id: string, context: TusContext): Promise<TusResponse> {
  const owner = (await context.queue?.lookup(id))?.owner ?? null;
  const outcome = (await context.queue?.remove(id)) ?? 'missing';
  if (outcome === 'held') throw TusErrors.uploadLocked();
  if (outcome === 'missing') throw TusErrors.notFound();
  context.emit(new UploadTerminatedEvent(id, owner));
  return { status: 204, headers: {} };
}
