import {
  LockTargetMissingError,
  LockTimeoutError,
  UnsafeFileError,
} from '../storage/storage.interfaces.js';
import { finalizeUpload } from './finalize.js';
import { isUploadId } from './headers.js';
import { runInBackground, type TusContext } from './tus-context.js';
import { TusErrors } from './tus-error.js';
import type { UploadRecord } from './upload-record.js';

/**
 * The ids of the partial uploads named by `Upload-Concat: final;<url> <url> ...`. Each URL,
 * absolute or relative, must point at an upload of this server: this host (for absolute URLs)
 * and this creation URL followed by a UUID, nothing else (no traversal, no query).
 */
export function parseFinalConcat(value: string, basePath: string, host: string): string[] {
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
      if (parsed.host.toLowerCase() !== host.toLowerCase() || parsed.search || parsed.hash) {
        throw TusErrors.invalidConcat();
      }
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
): Promise<void> {
  if (!record.isPartial) {
    await finalizeUpload(id, record, context);
    return;
  }
  // The finals are assembled after this request lets go of the partial's lock (assembly takes
  // the partials' locks to remove them), so the work is handed over, not awaited here.
  for (const finalId of record.waitingFinals) {
    runInBackground(
      context,
      () => assembleFinal(finalId, context),
      `assembling final upload ${finalId} failed`,
    );
  }
}

/**
 * Assembles a final upload once all its partials are complete: their bytes are streamed in
 * order into the final's data (never loaded into memory), then the final is finalized like any
 * upload and, unless kept by option or needed by another final, the partials are removed.
 * Returns false when a partial is not complete yet. Safe to call again after a crash.
 */
export async function assembleFinal(finalId: string, context: TusContext): Promise<boolean> {
  const { store, options } = context;
  let partsToRemove: string[] = [];
  try {
    const assembled = await store.withLock(finalId, options.lockWaitMs, async (lock) => {
      const final = await store.getRecord(finalId);
      if (!final?.isFinal || final.isComplete) return false;
      const parts = await Promise.all(final.parts.map((partId) => store.getRecord(partId)));
      if (parts.some((part) => !part?.isComplete)) return false;
      const complete = parts as UploadRecord[];
      const length = complete.reduce((sum, part) => sum + (part.length ?? 0), 0);
      if (final.length === null) {
        final.length = length;
        await store.storage.allocate(finalId, length);
      }
      let position = 0;
      for (const [index, partId] of final.parts.entries()) {
        const partLength = complete[index].length ?? 0;
        const source = store.storage.read(partId, 0, partLength);
        // The body pump takes a failing source for a cut body: its error is kept to be told.
        let readError: Error | undefined;
        source.once('error', (e: Error) => (readError = e));
        const result = await store.storage.write(finalId, position, source, {
          limit: partLength,
          idleTimeoutMs: 0,
          signal: lock.signal,
        });
        if (lock.signal?.aborted) throw TusErrors.lockLost();
        if (result.error) throw result.error;
        if (readError !== undefined) throw readError;
        if (result.bytes !== partLength) {
          throw new Error(`partial ${partId} gave ${result.bytes} of ${partLength} bytes`);
        }
        position += partLength;
      }
      final.offset = final.length;
      final.lastWrite = Date.now() / 1000;
      await store.records.put(finalId, final);
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
        if (pending.some((f) => f !== null)) {
          part.waitingFinals = others;
          await store.records.put(partId, part);
          return;
        }
        await store.remove(partId);
      });
    } catch (e) {
      if (!(e instanceof LockTimeoutError || e instanceof LockTargetMissingError)) throw e;
    }
  }
}

/**
 * Records on each unfinished partial that `finalId` waits for it, so its completion wakes the
 * final (concatenation-unfinished). Then tries to assemble, for partials that completed while
 * this ran.
 */
export async function registerWaitingFinal(
  finalId: string,
  partIds: string[],
  context: TusContext,
): Promise<void> {
  const { store, options } = context;
  let unregistered = false;
  for (const partId of new Set(partIds)) {
    try {
      await store.withLock(partId, options.lockWaitMs, async () => {
        const part = await store.getRecord(partId);
        if (!part || part.isComplete || part.waitingFinals.includes(finalId)) return;
        part.waitingFinals.push(finalId);
        await store.records.put(partId, part);
      });
    } catch (e) {
      // A partial whose PATCH is still streaming ("the Client MAY send the concatenation
      // request while the partial uploads are still in progress"): it cannot be told now.
      if (!(e instanceof LockTimeoutError)) throw e;
      unregistered = true;
    }
  }
  if (!(await assembleFinal(finalId, context)) && unregistered) watchFinal(finalId, context);
}

/**
 * Polls a final some partial could not be told about until it is assembled, gone, or expired.
 * Should this process stop first, the janitor's recovery assembles the final later.
 */
function watchFinal(finalId: string, context: TusContext): void {
  const until = Date.now() + (context.options.expireAfterMs ?? 86_400_000);
  const timer = setInterval(() => {
    runInBackground(
      context,
      async () => {
        const final = await context.store.getRecord(finalId).catch(() => null);
        if (!final || final.isComplete || Date.now() > until) return clearInterval(timer);
        try {
          if (await assembleFinal(finalId, context)) clearInterval(timer);
        } catch (e) {
          clearInterval(timer);
          throw e;
        }
      },
      `assembling final upload ${finalId} failed`,
    );
  }, 1000);
  timer.unref();
}
