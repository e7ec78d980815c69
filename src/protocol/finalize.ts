import { LockTargetMissingError, LockTimeoutError } from '../storage/storage.interfaces.js';
import type { TusContext } from './tus-context.js';
import { UploadCompletedEvent } from './tus-events.js';
import type { UploadRecord } from './upload-record.js';

/**
 * Finalizes an upload whose last byte is durable: stamps `finished_at` and `duration`, hands
 * the upload to the completed queue (record, then data), then drops the staging record. Runs
 * under the upload's lock. Each step can be repeated after a crash (see `recoverFinalizes`).
 */
export async function finalizeUpload(
  id: string,
  record: UploadRecord,
  context: TusContext,
): Promise<void> {
  if (!context.queue) return;
  const finishedAt = new Date();
  record.finishedAt = finishedAt;
  record.duration = Math.max(0, finishedAt.getTime() / 1000 - record.createdAt);
  await context.queue.enqueue(id, record);
  await context.store.records.remove(id);
  context.progress.forget(id);
  context.emit(new UploadCompletedEvent(id, record));
}

/**
 * Finishes what a crash interrupted in finalize: a complete upload still in staging is handed to
 * the queue; a staging record whose data already reached the queue is dropped. Uploads another
 * request holds are left alone. Returns how many uploads it finished.
 */
export async function recoverFinalizes(context: TusContext): Promise<number> {
  const { store, queue } = context;
  if (!queue) return 0;
  let finished = 0;
  for (const id of await store.records.list()) {
    const record = await store.getRecord(id).catch(() => null);
    if (!record?.isComplete) continue;
    try {
      await store.withLock(id, 0, async () => {
        const current = await store.getRecord(id);
        if (!current?.isComplete) return;
        await finalizeUpload(id, current, context);
        finished++;
      });
    } catch (e) {
      if (e instanceof LockTargetMissingError && (await queue.lookup(id))) {
        await store.records.remove(id);
        finished++;
      } else if (!(e instanceof LockTimeoutError) && !(e instanceof LockTargetMissingError)) {
        context.logger.error(`recovering upload ${id} failed`, e);
      }
    }
  }
  return finished;
}
