import type { Readable } from 'node:stream';
import type { UploadRecord } from '../core/upload-record.js';
import type { CompletedUpload } from './completed-upload.js';
import type { WakeSignal } from './wake-signal.js';

/** A finished upload's bytes left where an object store keeps them. */
export interface ObjectLocation {
  bucket: string;
  key: string;
}

/** The `object` a queue entry's JSON names (bytes left in an object store), if any. */
export function objectLocationOf(json: unknown): ObjectLocation | undefined {
  const object = (json as { object?: Partial<ObjectLocation> } | null)?.object;
  return typeof object?.bucket === 'string' && typeof object.key === 'string'
    ? { bucket: object.bucket, key: object.key }
    : undefined;
}

/**
 * The object store a queue hands out finished uploads from without moving their bytes (the S3
 * storage): read to stream or save them, deleted once a consumer is done or they expire.
 */
export interface StoredObjects {
  read(location: ObjectLocation): Promise<Readable>;
  remove(location: ObjectLocation): Promise<void>;
}

/** Where the bytes of a finished upload are when it is handed to the queue. */
export type FinishedBytes =
  /** A local file, moved into the queue. */
  | { path: string }
  /** Bytes of another storage, read once and copied into the queue. */
  | { read: () => Readable }
  /** An object that stays where it is: the queue keeps where it is (needs `StoredObjects`). */
  | { object: ObjectLocation };

/** `waitForFile` found nothing within its timeout. */
export class TimeoutError extends Error {
  override readonly name = 'TimeoutError';
}

/** `waitForFile` was aborted by its signal or by the queue shutting down. */
export class AbortError extends Error {
  override readonly name = 'AbortError';
}

export interface WaitForFileOptions {
  /** Give up after this many milliseconds with a `TimeoutError`. @default no timeout */
  timeout?: number;
  /** Give up when this signal fires, with an `AbortError`. */
  signal?: AbortSignal;
}

/**
 * The `flock` a finalizing request holds on an upload's data file, offered to the queue: calling
 * it takes the descriptor out of the request's lock (the queue closes it when done).
 */
export type HeldFileLock = () => number;

/**
 * Finished uploads as work items: each is handed to exactly one consumer, across every process
 * that shares the queue. Inject it in a consumer service:
 *
 * ```ts
 * await using upload = await queue.waitForFile({ timeout: 60_000 });
 * await upload.save(`/srv/files/${upload.name}`);
 * ```
 *
 * An abstract class, so it serves as the injection token; the filesystem queue is the default.
 */
export abstract class CompletedUploadQueue {
  /**
   * Waits for a finished upload and claims it for this caller alone. Release it (`release()`,
   * `await using`, or use `withFile`) when done: its files left in the queue are then deleted.
   */
  abstract waitForFile(options?: WaitForFileOptions): Promise<CompletedUpload>;

  /**
   * Hands a finished upload to the queue. Called by the server, under the upload's lock, with
   * where its bytes are (default: `{stagingDirectory}/{id}`): a local file is moved, the bytes of
   * any other storage are copied in. `held`, when given, takes the descriptor through which
   * the caller holds a `flock` on that file: a queue that claims uploads by that very lock may
   * take it to hand the upload to a consumer of this process at once.
   */
  abstract enqueue(
    id: string,
    record: UploadRecord,
    bytes?: FinishedBytes,
    held?: HeldFileLock,
  ): Promise<void>;

  /**
   * The record of an upload the queue holds or handed out recently (until it expires), so a
   * client that lost the last response learns that its upload is complete. `null` otherwise.
   */
  abstract lookup(id: string): Promise<UploadRecord | null>;

  /**
   * Deletes finished uploads nobody claimed for `ageMs`, and receipts of taken ones as old;
   * never one a consumer holds. Returns how many uploads it deleted.
   */
  abstract expire(ageMs: number): Promise<number>;

  /**
   * Terminates a finished upload: removes it (and its receipt) from the queue unless a consumer
   * holds it. `'held'` when a consumer has it, `'missing'` when the queue never knew it.
   */
  abstract remove(id: string): Promise<'removed' | 'held' | 'missing'>;

  /**
   * Deletes leftovers of writes a crash interrupted (temp files of records and of copied bytes)
   * older than `ageMs`; returns how many. Nothing to do for a queue without files.
   */
  async sweep(_ageMs: number): Promise<number> {
    return 0;
  }

  /** Stops every pending `waitForFile` with an `AbortError`. */
  abstract close(): Promise<void>;

  /**
   * Finished uploads in the queue and not yet released (waiting for a consumer, or with one),
   * across every process that shares it; `undefined` when the queue cannot tell.
   */
  async depth(): Promise<number | undefined> {
    return undefined;
  }

  /** Told of every upload `waitForFile` hands to a consumer here (metrics); must not throw. */
  claimObserver?: (upload: CompletedUpload) => void;

  /**
   * The waiting loop both queues share: `attempt` tries one claim; between attempts the loop
   * sleeps until `wake` fires, `retryMs` (or `pollMs`) passes, the signal or shutdown aborts,
   * or the timeout runs out. A wake during an attempt is not lost: the next attempt comes at once.
   */
  protected async waitLoop(
    options: WaitForFileOptions,
    closing: AbortSignal,
    wake: WakeSignal,
    pollMs: number,
    attempt: () => Promise<{ upload?: CompletedUpload; retryMs?: number }>,
  ): Promise<CompletedUpload> {
    const deadline = options.timeout === undefined ? Infinity : Date.now() + options.timeout;
    const { signal, dispose } = options.signal
      ? eitherSignal(options.signal, closing)
      : { signal: closing, dispose: () => {} };
    try {
      for (;;) {
        if (signal.aborted) throw new AbortError('waitForFile aborted', { cause: signal.reason });
        const seen = wake.count;
        const { upload, retryMs } = await attempt();
        if (upload) {
          this.claimObserver?.(upload);
          return upload;
        }
        const left = deadline - Date.now();
        if (left <= 0) throw new TimeoutError(`no completed upload within ${options.timeout} ms`);
        if (wake.count === seen) await wake.wait(Math.min(left, retryMs ?? pollMs), signal);
      }
    } finally {
      dispose();
    }
  }

  /** Claims one upload, runs `work` with it, and releases it whatever `work` does. */
  async withFile<T>(
    work: (upload: CompletedUpload) => Promise<T>,
    options?: WaitForFileOptions,
  ): Promise<T> {
    const upload = await this.waitForFile(options);
    try {
      return await work(upload);
    } finally {
      await upload.release();
    }
  }
}

/**
 * A signal that aborts when `a` or `b` does, and lets go of both when disposed. Not
 * `AbortSignal.any`: each call of it leaves a WeakRef in a long-lived source signal's set of
 * dependants (the queue's shutdown signal, a consumer's stop signal), one more per `waitForFile`
 * for the life of the process.
 */
function eitherSignal(
  a: AbortSignal,
  b: AbortSignal,
): { signal: AbortSignal; dispose: () => void } {
  const either = new AbortController();
  const forward = (event: Event) => either.abort((event.target as AbortSignal).reason);
  for (const source of [a, b]) {
    if (source.aborted) either.abort(source.reason);
    else source.addEventListener('abort', forward, { once: true });
  }
  return {
    signal: either.signal,
    dispose: () => {
      a.removeEventListener('abort', forward);
      b.removeEventListener('abort', forward);
    },
  };
}
