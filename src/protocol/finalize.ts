import type { TusContext } from './tus-context.js';
import { UploadCompletedEvent } from './tus-events.js';
import type { UploadRecord } from '../core/upload-record.js';
import type { FinishedBytes } from '../queue/completed-upload.queue.js';
import type { UploadLock } from '../storage/storage.interfaces.js';

/**
 * Finalizes an upload whose last byte is durable: stamps `finished_at` and `duration`, hands
 * the upload to the completed queue (record, then data), then drops the staging record. Runs
 * under the upload's lock (`lock`, when the caller has it: a lock on the very file the queue
 * receives may become a consumer's claim). Each step can be repeated after a crash (see
 * `recoverFinalizes`).
 */
export async function finalizeUpload(
  id: string,
  record: UploadRecord,
  context: TusContext,
  lock?: UploadLock,
): Promise<void> {
  if (!context.queue) return;
  const { storage, records } = context.store;
  try {
    await storage.complete?.(id, record.storage);
  } catch (e) {
    // Handed over before a crash kept the record from being dropped: only that is left to do.
    const queued =
      (e as NodeJS.ErrnoException).code === 'ENOENT' ? await context.queue.lookup(id) : null;
    if (!queued) throw e;
    await dropHandedOver(id, queued, context);
    return;
  }
  const finishedAt = new Date();
  record.finishedAt = finishedAt;
  record.duration = Math.max(0, finishedAt.getTime() / 1000 - record.createdAt);
  // A file is moved into the queue; an object stays where it is (the queue keeps where); the
  // bytes of another storage are copied, then dropped.
  const object = storage.finishedObject?.(id);
  const path = object ? undefined : storage.localPath?.(id);
  const bytes: FinishedBytes = object
    ? { object }
    : path !== undefined
      ? { path }
      : { read: () => storage.read(id, 0, record.length ?? 0, record.storage) };
  // The queue's entry has no storage state: the bytes are where it says.
  const state = record.storage;
  record.storage = null;
  const file = lock?.file;
  const held =
    file && lock.detachFile && 'path' in bytes && file.path === bytes.path
      ? () => lock.detachFile!()
      : undefined;
  await context.queue.enqueue(id, record, bytes, held);
  // A crash before the record goes leaves one that recovery drops (the queue knows the upload).
  await records.remove(id);
  if ('read' in bytes) await storage.remove(id, state);
  context.progress.forget(id);
  context.emit(new UploadCompletedEvent(id, record));
}

/**
 * A crash came after the upload reached the queue and before its staging record was dropped:
 * only the record is left to drop, and the completed event (with the queue's record) was
 * never sent.
 */
export async function dropHandedOver(
  id: string,
  queued: UploadRecord,
  context: TusContext,
): Promise<void> {
  await context.store.records.remove(id);
  context.emit(new UploadCompletedEvent(id, queued));
}
