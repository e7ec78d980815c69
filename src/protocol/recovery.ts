import { LockTargetMissingError, LockTimeoutError } from '../storage/storage.interfaces.js';
import { assembleFinal } from './concatenation.js';
import { dropHandedOver, finalizeUpload } from './finalize.js';
import { TusError } from './tus-error.js';
import type { TusContext } from './tus-context.js';

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
    if (record?.isFinal && !record.isComplete) {
      // A final whose partials all completed, but whose assembly a crash cut short.
      try {
        if (await assembleFinal(id, context)) finished++;
      } catch (e) {
        // A final that can never complete was removed (its partial gone, its total too large).
        if (!(e instanceof TusError)) throw e;
      }
      continue;
    }
    // A complete partial waits for its final; it never enters the queue on its own.
    if (!record?.isComplete || record.isPartial) continue;
    // Bytes that stay where they are (an object store) were handed over if the queue has the
    // upload: only the record is left (no data file moved away says so, as on the filesystem).
    if (store.storage.finishedObject) {
      const queued = await queue.lookup(id);
      if (queued) {
        await dropHandedOver(id, queued, context);
        finished++;
        continue;
      }
    }
    try {
      await store.withLock(id, 0, async () => {
        const current = await store.getRecord(id);
        if (!current?.isComplete) return;
        await finalizeUpload(id, current, context);
        finished++;
      });
    } catch (e) {
      const moved = e instanceof LockTargetMissingError ? await queue.lookup(id) : null;
      if (moved) {
        // The crash came after the data reached the queue (its data file is gone from staging).
        await dropHandedOver(id, moved, context);
        finished++;
      } else if (!(e instanceof LockTimeoutError) && !(e instanceof LockTargetMissingError)) {
        context.logger.error(`recovering upload ${id} failed`, e);
      }
    }
  }
  return finished;
}
