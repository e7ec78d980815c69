import type { Readable } from 'node:stream';
import type { StorageState } from '../core/upload-record.js';
import { PartialBatchError, type UploadStorage } from '../storage/storage.interfaces.js';

export { PartialBatchError };

/**
 * Writes a batch of chunks that together hold `bytes` bytes, after every earlier batch. A sink
 * that fails after writing part of the batch throws a {@link PartialBatchError} so that part is
 * still counted.
 */
export type BatchSink = (chunks: Buffer[], bytes: number) => Promise<void>;

/** How much of a request body to take and how long to wait for it. */
export interface BodyWriteOptions {
  /** Most bytes to accept; a body with more stops at this count and reports `exceeded`. */
  limit: number;
  /** Cut the body when no byte arrives for this many milliseconds (0 = never). */
  idleTimeoutMs: number;
  /** Sees every accepted chunk in order, before it is written (checksums, progress). */
  onChunk?: (chunk: Buffer) => void;
  /** Stops reading when it fires (the bytes received before are still written). */
  signal?: AbortSignal;
}

/**
 * Commits in the middle of a long body: every `bytes` bytes or `intervalMs` (0: not by that
 * measure), the bytes written so far are made durable and handed to `commit` (which counts
 * them in the upload's offset). `commit` must not throw: a failed commit leaves the bytes to
 * the body's end.
 */
export interface Checkpoints {
  bytes: number;
  intervalMs: number;
  commit(bytes: number, state?: StorageState): Promise<void>;
}

/** What became of a request body. */
export interface BodyWriteResult {
  /** Bytes written to storage (and durable when the storage syncs). */
  bytes: number;
  /** The body ended normally. */
  ended: boolean;
  /** The body had more bytes than `limit`; reading stopped there. */
  exceeded: boolean;
  /** The client went away or stalled (the bytes received before are kept). */
  aborted: boolean;
  /** Writing failed after `bytes` bytes (e.g. ENOSPC). */
  error?: Error;
  /** The storage state that counts the bytes (see `WriteOutcome.state`). */
  state?: StorageState;
}

/**
 * Streams a request body into an upload at `offset`: the storage opens a write, this reads the
 * body into it, then the storage says what counts. The storage sees only bytes.
 */
export async function writeBody(
  storage: UploadStorage,
  id: string,
  offset: number,
  body: Readable,
  options: BodyWriteOptions & {
    state?: StorageState | null;
    lost?: AbortSignal;
    expected?: number;
    checkpoints?: Checkpoints;
  },
): Promise<BodyWriteResult> {
  const sink = await storage.openWrite(id, offset, {
    limit: options.limit,
    ...(options.expected !== undefined && { expected: options.expected }),
    state: options.state,
    lost: options.lost,
  });
  const every = options.checkpoints;
  const checkpoint = every && sink.checkpoint?.bind(sink);
  let write: BatchSink = (chunks, bytes) => sink.write(chunks, bytes);
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  if (every && checkpoint && (every.bytes > 0 || every.intervalMs > 0)) {
    let written = 0;
    let last = { bytes: 0, at: Date.now() };
    // One checkpoint at a time; bytes written meanwhile wait for the next.
    const run = (): Promise<void> | undefined => {
      // Not at the very end: the body's own commit counts those bytes.
      if (running || written <= last.bytes || written >= options.limit) return running;
      const bytes = written;
      last = { bytes, at: Date.now() };
      running = (async () => {
        const outcome = await checkpoint(bytes);
        if (!outcome.error && outcome.bytes > 0) await every.commit(outcome.bytes, outcome.state);
      })().finally(() => (running = undefined));
      return running;
    };
    write = async (chunks, bytes) => {
      await sink.write(chunks, bytes);
      written += bytes;
      if (every.bytes > 0 && written - last.bytes >= every.bytes) await run();
    };
    // By time too, also while the body is stalled: a crash then loses at most the interval.
    if (every.intervalMs > 0) {
      timer = setInterval(
        () => {
          if (Date.now() - last.at >= every.intervalMs) void run();
        },
        Math.min(every.intervalMs, 1000),
      );
      timer.unref();
    }
  }
  const pumped = await pumpBody(body, write, options);
  clearInterval(timer);
  await running;
  const outcome = await sink.finish(pumped.bytes);
  const error = pumped.error ?? outcome.error;
  return {
    ...pumped,
    bytes: outcome.bytes,
    ...(error && { error }),
    ...(outcome.state && { state: outcome.state }),
  };
}

/** A batch is written once this much is queued; one in flight plus one filling per body. */
const BATCH_BYTES = 256 << 10;

/**
 * Streams a request body into a sink with backpressure. While one batch is written the next is
 * collected (at most ~0.5 MiB held per body, so many concurrent uploads stay cheap), so the disk sees few large `writev` calls. Unlike a
 * `pipeline`, a body that is cut (client gone, idle timeout) still has every byte received
 * before the cut written, because the protocol says to "store as much of the received data as
 * possible".
 */
export function pumpBody(
  body: Readable,
  sink: BatchSink,
  options: BodyWriteOptions,
): Promise<BodyWriteResult> {
  return new Promise((resolve) => {
    let queue: Buffer[] = [];
    let queuedBytes = 0;
    let accepted = 0;
    let written = 0;
    let writing = false;
    let finished = false;
    let settled = false;
    const result: Omit<BodyWriteResult, 'bytes'> = {
      ended: false,
      exceeded: false,
      aborted: false,
    };
    let idle: NodeJS.Timeout | undefined;

    // One timer per body, pushed back with refresh() on each chunk (not a new timer per chunk).
    const armIdle = () => {
      if (options.idleTimeoutMs <= 0) return;
      if (idle) {
        idle.refresh();
        return;
      }
      idle = setTimeout(() => {
        result.aborted = true;
        body.destroy();
        finish();
      }, options.idleTimeoutMs);
    };
    const pauseIdle = () => {
      clearTimeout(idle);
      idle = undefined;
    };

    const resume = () => {
      body.resume();
      armIdle();
    };

    const detach = () => {
      pauseIdle();
      options.signal?.removeEventListener('abort', onAbort);
      body.off('data', onData);
      body.off('end', onEnd);
      body.off('close', onClose);
      body.off('error', onError);
      // Never leave an 'error' without a listener: a late socket error must not crash the process.
      body.on('error', () => {});
    };

    const settle = () => {
      if (settled) return;
      settled = true;
      detach();
      resolve({ ...result, bytes: written });
    };

    const flush = () => {
      if (writing || settled) return;
      if (queue.length === 0) {
        if (finished) settle();
        else if (body.isPaused()) resume();
        return;
      }
      const batch = queue;
      const bytes = queuedBytes;
      queue = [];
      queuedBytes = 0;
      writing = true;
      if (!finished && body.isPaused()) resume();
      sink(batch, bytes).then(
        () => {
          written += bytes;
          writing = false;
          flush();
        },
        (error: unknown) => {
          if (error instanceof PartialBatchError) {
            written += Math.min(Math.max(0, error.bytesWritten), bytes);
            error = error.cause;
          }
          // An error of another realm (the native addon's, under a VM) keeps its code.
          result.error =
            error instanceof Error ||
            (typeof error === 'object' && error !== null && 'message' in error)
              ? (error as Error)
              : new Error(String(error));
          writing = false;
          finished = true;
          body.pause();
          settle();
        },
      );
    };

    const finish = () => {
      if (finished) return;
      // Bytes that arrived but were not yet delivered (the body was paused for backpressure,
      // or cut before reading began) are still in its buffer: take them too.
      if (!result.exceeded) {
        body.pause();
        for (
          let chunk = readBuffered();
          chunk !== null && !result.exceeded;
          chunk = readBuffered()
        ) {
          accept(chunk);
        }
      }
      finished = true;
      pauseIdle();
      body.off('data', onData);
      body.pause();
      flush();
    };

    const readBuffered = (): Buffer | null => {
      try {
        return body.readableLength > 0 ? (body.read() as Buffer | null) : null;
      } catch {
        return null;
      }
    };

    /** Queues what fits under the limit; true when the limit was passed. */
    const accept = (chunk: Buffer) => {
      const room = options.limit - accepted;
      let piece = chunk;
      if (piece.length > room) {
        piece = piece.subarray(0, room);
        result.exceeded = true;
      }
      if (piece.length > 0) {
        accepted += piece.length;
        options.onChunk?.(piece);
        queue.push(piece);
        queuedBytes += piece.length;
      }
    };

    function onData(chunk: Buffer) {
      if (finished) return;
      armIdle();
      accept(chunk);
      if (result.exceeded) return finish();
      if (queuedBytes >= BATCH_BYTES) {
        // While we hold the body paused, the client is not idle: the timer waits for us.
        body.pause();
        pauseIdle();
      }
      flush();
    }
    function onEnd() {
      result.ended = true;
      finish();
    }
    function onClose() {
      if (!result.ended) result.aborted = true;
      finish();
    }
    function onError() {
      result.aborted = true;
      finish();
    }

    const onAbort = () => {
      result.aborted = true;
      finish();
    };
    if (options.signal?.aborted) {
      result.aborted = true;
      finished = true;
      return settle();
    }
    options.signal?.addEventListener('abort', onAbort, { once: true });

    if (body.readableEnded) {
      result.ended = true;
      finished = true;
      return settle();
    }
    if (body.destroyed) {
      result.aborted = true;
      return finish();
    }
    body.on('data', onData);
    body.on('end', onEnd);
    body.on('close', onClose);
    body.on('error', onError);
    armIdle();
  });
}
