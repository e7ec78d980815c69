import {
  LockTargetMissingError,
  LockTimeoutError,
  UnsafeFileError,
  type UploadLock,
} from '../storage/storage.interfaces.js';
import { writeBody } from './body-pump.js';
import { finalizeUpload } from './finalize.js';
import { isUploadId } from './headers.js';
import { runInBackground, type TusContext } from './tus-context.js';
import { TusError, TusErrors } from './tus-error.js';
import { UploadFailedEvent } from './tus-events.js';
import type { UploadRecord } from '../core/upload-record.js';

/**
 * The ids of the partial uploads named by `Upload-Concat: final;<url> <url> ...`. Each URL,
 * absolute or relative, must be this creation URL followed by a UUID, nothing else (no
 * traversal, no query). The host of an absolute URL is not compared (as tusd does): a server
 * answers to several names (`localhost`, `127.0.0.1`, a proxy's), and the id alone decides.
 */
export function parseFinalConcat(value: string, basePath: string): string[] {
  const list = value.slice('final;'.length).trim();
  if (list === '') throw TusErrors.invalidConcat();
  return list.split(/ +/).map((url) => {
    let path = url;
    if (/^https?:\/\//i.test(url)) {
      let parsed: URL;
      try {
        parsed = new URL(url);
      } catch {
        throw TusErrors.invalidConcat();
      }
      if (parsed.search || parsed.hash) throw TusErrors.invalidConcat();
      path = url.slice(url.indexOf('/', url.indexOf('//') + 2));
    }
    const prefix = `${basePath}/`;
    const id = path.startsWith(prefix) ? path.slice(prefix.length) : undefined;
    if (!isUploadId(id)) throw TusErrors.invalidConcat();
    return id;
  });
}

/**
 * A complete upload goes on: a partial waits to be concatenated (it never enters the completed
 * queue) and wakes the finals waiting for it; anything else is finalized.
 */
export async function completeUpload(
  id: string,
  record: UploadRecord,
  context: TusContext,
  lock?: UploadLock,
): Promise<void> {
  if (!record.isPartial) {
    await finalizeUpload(id, record, context, lock);
    return;
  }
  // Its bytes become readable (an object store completes its multipart upload); the finals
  // are assembled after this request lets go of the partial's lock (assembly takes the
  // partials' locks to remove them), so the work is handed over, not awaited here.
  await context.store.storage.complete?.(id, record.storage);
  wakeFinals(record.waitingFinals, context);
}

/**
 * Hands finals to background assembly (after the current request lets go of its locks): each
 * is assembled if all its partials are complete, or failed if one is gone.
 */
export function wakeFinals(
  finalIds: Iterable<string>,
  context: TusContext,
  failure = (finalId: string) => `assembling final upload ${finalId} failed`,
): void {
  for (const finalId of finalIds) {
    runInBackground(context, () => assembleFinal(finalId, context), failure(finalId));
  }
}

/**
 * Assembles a final upload once all its partials are complete: their bytes are streamed in
 * order into the final's data (never loaded into memory), each under its partial's lock (a
 * DELETE of a partial waits for the assembly), then the final is finalized like any upload and,
 * unless kept by option or needed by another final, the partials are removed. Returns false when
 * a partial is not complete yet. A final that can never complete fails with a TUS error and is
 * removed: a partial gone (410), a total above `maxSize` (413). Safe to call again after a crash.
 */
export async function assembleFinal(finalId: string, context: TusContext): Promise<boolean> {
  const { store, options } = context;
  let partsToRemove: string[] = [];
  try {
    const assembled = await store.withLock(finalId, options.lockWaitMs, async (lock) => {
      const final = await store.getRecord(finalId);
      // A complete final in staging is one a crash cut short after assembly (recovery finalizes
      // it); a final of zero bytes is complete from its creation and is finalized here.
      if (!final?.isFinal || (final.isComplete && final.length !== 0)) return false;
      const parts = await Promise.all(final.parts.map((partId) => store.getRecord(partId)));
      if (parts.some((part) => part === null)) {
        await failFinal(finalId, context);
        throw TusErrors.partialGone();
      }
      if (parts.some((part) => !part?.isComplete)) return false;
      const complete = parts as UploadRecord[];
      const length = complete.reduce((sum, part) => sum + (part.length ?? 0), 0);
      // Known only now when a partial's length was deferred.
      if (options.maxSize !== undefined && length > options.maxSize) {
        await failFinal(finalId, context);
        throw TusErrors.maxSizeExceeded();
      }
      if (final.length === null) {
        // Promised only now (a partial's length was deferred): 507 if it does not fit.
        await store.promise(length);
        final.length = length;
        // Stored before any byte is copied: a failure from here removes the final with its
        // promise, and a crash leaves a record the ledger is rebuilt from.
        await store.records.put(finalId, final);
      }
      let position = 0;
      for (const [index, partId] of final.parts.entries()) {
        const partLength = complete[index].length ?? 0;
        await copyPart(partId, partLength, final, finalId, position, lock, context);
        position += partLength;
      }
      const promised = final.promised;
      final.offset = final.length;
      final.lastWrite = Date.now() / 1000;
      await store.records.put(finalId, final);
      await store.settle(promised);
      await finalizeUpload(finalId, final, context);
      partsToRemove = final.parts;
      return true;
    });
    if (assembled && options.removePartials !== false)
      await removePartials(partsToRemove, finalId, context);
    return assembled;
  } catch (e) {
    if (e instanceof LockTimeoutError || e instanceof LockTargetMissingError) return false;
    // A partial (or the final) whose data was planted: refused, moved aside and logged where
    // it was found; the final stays unassembled.
    if (e instanceof UnsafeFileError) return false;
    throw e;
  }
}

/** Streams one partial's bytes into the final, under the partial's lock. */
async function copyPart(
  partId: string,
  length: number,
  final: UploadRecord,
  finalId: string,
  position: number,
  lock: UploadLock,
  context: TusContext,
): Promise<void> {
  const { store, options } = context;
  try {
    await store.withLock(partId, options.lockWaitMs, async () => {
      const part = await store.getRecord(partId);
      if (!part) throw TusErrors.partialGone();
      // Completed when its last byte came, unless a crash came between.
      await store.storage.complete?.(partId, part.storage);
      // Copied inside the storage when it can (an object store), else streamed through. The
      // final's storage state follows; it is stored with the final's offset once all are in.
      const copied = await store.storage.copyFrom?.(
        finalId,
        position,
        partId,
        length,
        final.storage,
        part.storage,
      );
      if (copied) {
        final.storage = copied;
        return;
      }
      const source = store.storage.read(partId, 0, length, part.storage);
      // The body pump takes a failing source for a cut body: its error is kept to be told.
      let readError: Error | undefined;
      source.once('error', (e: Error) => (readError = e));
      const result = await writeBody(store.storage, finalId, position, source, {
        limit: length,
        idleTimeoutMs: 0,
        signal: lock.signal,
        lost: lock.signal,
        state: final.storage,
      });
      if (result.state) final.storage = result.state;
      if (lock.signal?.aborted) throw TusErrors.lockLost();
      if (result.error) throw result.error;
      if (readError !== undefined) throw readError;
      if (result.bytes !== length) {
        throw new Error(`partial ${partId} gave ${result.bytes} of ${length} bytes`);
      }
    });
  } catch (e) {
    if (!(e instanceof LockTargetMissingError) && !(e instanceof TusError && e.status === 410)) {
      throw e;
    }
    await failFinal(finalId, context);
    throw TusErrors.partialGone();
  }
}

/** Removes a final that can never complete (under its lock, held by the caller). */
async function failFinal(finalId: string, context: TusContext): Promise<void> {
  await context.store.remove(finalId);
  context.progress.forget(finalId);
  context.emit(new UploadFailedEvent(finalId, 410, TusErrors.partialGone()));
}

/** Removes partials used by `finalId`, except those other unassembled finals still wait for. */
async function removePartials(
  partIds: string[],
  finalId: string,
  context: TusContext,
): Promise<void> {
  const { store } = context;
  for (const partId of new Set(partIds)) {
    try {
      await store.withLock(partId, context.options.lockWaitMs, async () => {
        const part = await store.getRecord(partId);
        if (!part) return;
        const others = part.waitingFinals.filter((f) => f !== finalId);
        const pending = await Promise.all(others.map((f) => store.getRecord(f)));
        // Another final still needs it: kept, and this final stays listed, so that it still
        // counts against maxFinalsPerPartial (the bound is on deliveries, not on finals waiting).
        if (pending.some((f) => f !== null)) return;
        await store.remove(partId, part);
      });
    } catch (e) {
      if (!(e instanceof LockTimeoutError || e instanceof LockTargetMissingError)) throw e;
    }
  }
}

/**
 * Records on each partial that `finalId` uses it: the completion of an unfinished partial wakes
 * the final (concatenation-unfinished), and no partial is part of more than
 * `maxFinalsPerPartial` finals (409). Then tries to assemble, for partials that completed while
 * this ran. A partial whose body a request is writing cannot be told now: a write of this
 * process records the final with its bytes; one of another process is watched for.
 */
export async function registerWaitingFinal(
  finalId: string,
  partIds: string[],
  context: TusContext,
): Promise<void> {
  const { store, options } = context;
  const most = options.maxFinalsPerPartial ?? 2;
  const elsewhere: string[] = [];
  const registered: string[] = [];
  try {
    for (const partId of new Set(partIds)) {
      try {
        await store.withLock(partId, options.lockWaitMs, async () => {
          const part = await store.getRecord(partId);
          if (!part) throw TusErrors.partialGone();
          takePendingFinals(partId, part, context);
          if (!part.waitingFinals.includes(finalId)) {
            if (part.waitingFinals.length >= most) throw TusErrors.partialInUse();
            part.waitingFinals.push(finalId);
          }
          await store.records.put(partId, part);
          registered.push(partId);
        });
      } catch (e) {
        if (e instanceof LockTargetMissingError) throw TusErrors.partialGone();
        // A partial whose PATCH is still streaming ("the Client MAY send the concatenation
        // request while the partial uploads are still in progress").
        if (!(e instanceof LockTimeoutError)) throw e;
        const recorded = context.activeWrites.has(partId)
          ? ((await store.getRecord(partId))?.waitingFinals.length ?? 0)
          : 0;
        // Checked again after the read: a write that ended meanwhile would never take it.
        if (!context.activeWrites.has(partId)) {
          elsewhere.push(partId);
          continue;
        }
        // From here to the add, nothing awaits: concurrent finals count one another.
        let pending = context.pendingFinals.get(partId);
        if (!pending) context.pendingFinals.set(partId, (pending = new Set<string>()));
        if (recorded + pending.size >= most) {
          if (pending.size === 0) context.pendingFinals.delete(partId);
          throw TusErrors.partialInUse();
        }
        pending.add(finalId);
      }
    }
  } catch (e) {
    // A refused final leaves no trace on the partials it named (it would count against them).
    await unregister(finalId, registered, context);
    throw e;
  }
  if (!(await assembleFinal(finalId, context)) && elsewhere.length > 0) {
    watchFinal(finalId, context, Date.now() + (options.expireAfterMs ?? 86_400_000));
  }
}

async function unregister(finalId: string, partIds: string[], context: TusContext): Promise<void> {
  for (const partId of partIds) {
    context.pendingFinals.get(partId)?.delete(finalId);
    await context.store
      .withLock(partId, context.options.lockWaitMs, async () => {
        const part = await context.store.getRecord(partId);
        if (!part?.waitingFinals.includes(finalId)) return;
        part.waitingFinals = part.waitingFinals.filter((f) => f !== finalId);
        await context.store.records.put(partId, part);
      })
      .catch(() => {});
  }
}

/**
 * Finals a body write of this process could not be told about while it held the partial's
 * lock: recorded with the write's bytes (moved into `waitingFinals` before its record is put).
 */
export function takePendingFinals(id: string, record: UploadRecord, context: TusContext): void {
  const pending = context.pendingFinals.get(id);
  if (!pending) return;
  context.pendingFinals.delete(id);
  for (const finalId of pending) {
    if (!record.waitingFinals.includes(finalId)) record.waitingFinals.push(finalId);
  }
}

/**
 * Watches a final whose partial another process was writing when it was created, with a
 * backoff (1 s doubling to 60 s), until it is assembled, fails, is gone, or expires: it never
 * outlives its upload. Should this process stop first, the janitor's recovery assembles it.
 */
function watchFinal(finalId: string, context: TusContext, until: number, delayMs = 1000): void {
  const timer = setTimeout(() => {
    runInBackground(
      context,
      async () => {
        const final = await context.store.getRecord(finalId).catch(() => null);
        if (!final || final.isComplete || Date.now() > until) return;
        if (!(await assembleFinal(finalId, context))) {
          watchFinal(finalId, context, until, Math.min(delayMs * 2, 60_000));
        }
      },
      `assembling final upload ${finalId} failed`,
    );
  }, delayMs);
  timer.unref();
}
