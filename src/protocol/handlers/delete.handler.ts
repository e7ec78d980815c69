import { LockTargetMissingError, LockTimeoutError } from '../../storage/storage.interfaces.js';
import { isUploadId } from '../headers.js';
import { TERMINATION, type MethodHandler, type TusContext } from '../tus-context.js';
import { TusErrors } from '../tus-error.js';
import { UploadTerminatedEvent } from '../tus-events.js';
import type { TusResponse } from '../tus-request.js';

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
  context.activeWrites.get(id)?.abort(TERMINATION);
  try {
    const removed = await store.withLock(id, options.lockWaitMs, async () => {
      if (!(await store.getRecord(id))) return false;
      await store.remove(id);
      return true;
    });
    if (!removed) return await terminateFinished(id, context);
  } catch (e) {
    if (e instanceof LockTimeoutError) throw TusErrors.uploadLocked();
    if (e instanceof LockTargetMissingError) return terminateFinished(id, context);
    throw e;
  }
  context.progress.forget(id);
  context.emit(new UploadTerminatedEvent(id));
  return { status: 204, headers: {} };
};

/** A finished upload is terminated in the completed queue, unless a consumer holds it (423). */
async function terminateFinished(id: string, context: TusContext): Promise<TusResponse> {
  const outcome = (await context.queue?.remove(id)) ?? 'missing';
  if (outcome === 'held') throw TusErrors.uploadLocked();
  if (outcome === 'missing') throw TusErrors.notFound();
  context.emit(new UploadTerminatedEvent(id));
  return { status: 204, headers: {} };
}
