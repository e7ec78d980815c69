import type { TusContext } from './tus-context.js';
import { UploadCompletedEvent } from './tus-events.js';
import type { UploadRecord } from '../core/upload-record.js';

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
  await context.store.storage.complete?.(id);
  const finishedAt = new Date();
  record.finishedAt = finishedAt;
  record.duration = Math.max(0, finishedAt.getTime() / 1000 - record.createdAt);
  const { storage } = context.store;
  // A file is moved into the queue; the bytes of another storage are copied, then dropped.
  const path = storage.localPath?.(id);
  await context.queue.enqueue(
    id,
    record,
    path !== undefined ? { path } : { read: () => storage.read(id, 0, record.length ?? 0) },
  );
  await context.store.records.remove(id);
  if (path === undefined) await storage.remove(id);
  context.progress.forget(id);
  context.emit(new UploadCompletedEvent(id, record));
}
