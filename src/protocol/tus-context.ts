import type { CompletedUploadQueue } from '../queue/completed-upload.queue.js';
import type { UploadStorageService } from '../storage/upload-storage.service.js';
import type { TusExtension } from './extensions.js';
import { TusError } from './tus-error.js';
import type { ProgressThrottle, TusEvent } from './tus-events.js';
import type { TusRequest, TusResponse } from './tus-request.js';

/** The abort reason of a body write stopped by a DELETE of its upload. */
export const TERMINATION: unique symbol = Symbol('nestjs-tussi.termination');

/**
 * The abort reason of a body write stopped by a newer PATCH of its upload (a client resuming
 * after a connection it gave up on, or a trickling request holding the lock): the bytes it
 * brought are kept, and the newer request takes the lock.
 */
export const PREEMPTION: unique symbol = Symbol('nestjs-tussi.preemption');

/**
 * tussi's `on_create`: called on every creation before anything is stored, with the request
 * headers (lower-case names), the decoded client metadata and the principal; what it returns is stored as the
 * upload's server metadata. An error with an HTTP status (`getStatus()`, as Nest's
 * `HttpException`) refuses the creation with that status; any other error is a 500.
 */
export type OnCreateHook = (
  headers: Record<string, string>,
  metadata: Record<string, string>,
  creation: OnCreateContext,
) => Promise<Record<string, string>> | Record<string, string>;

/** What `onCreate` knows of the creation besides its headers and metadata. */
export interface OnCreateContext {
  /**
   * The principal authentication established (`request.user`, or the `ownership` function),
   * which owns the upload when `ownership` is on; `undefined` for an anonymous request. Record
   * provenance from this, never from a header nobody checked.
   */
  owner: string | undefined;
}

/** Where the protocol reports what went wrong on the server side. */
export interface TusLogger {
  error(message: string, error?: unknown): void;
  warn(message: string): void;
  /** What happened, for the record (a refused request, an expired upload). */
  info?(message: string): void;
}

/** The limits and waits the protocol applies; all sizes in bytes, all times in milliseconds. */
export interface TusProtocolOptions {
  /** Largest upload accepted (`Tus-Max-Size`); none when undefined. */
  maxSize?: number;
  /** Largest body of one PATCH; none when undefined. */
  maxChunkSize?: number;
  /** Largest `Upload-Metadata` header. */
  maxMetadataSize: number;
  /** How long a request waits for an upload's lock before answering 423. */
  lockWaitMs: number;
  /** A body with no byte for this long is cut (its received bytes kept). 0 = never. */
  bodyIdleTimeoutMs: number;
  /** A long body commits its offset every this many bytes (0: only at the end). @default 64 MiB */
  checkpointBytes?: number;
  /** …and at least this often while bytes arrive (0: by size only). @default 5000 */
  checkpointIntervalMs?: number;
  /** At most one progress event per upload per this many milliseconds. */
  progressIntervalMs?: number;
  /** Serve the IETF draft's requests (`Upload-Draft-Interop-Version`). @default true */
  ietfDraft?: boolean;
  /** Extensions to switch off (`{ 'checksum-trailer': false }`); all are on by default. */
  extensions?: Partial<Record<TusExtension, boolean>>;
  /** An unfinished upload expires this long after its last write (expiration). @default 86400000 */
  expireAfterMs?: number;
  /** Delete partial uploads once a final upload has been assembled from them. @default true */
  removePartials?: boolean;
  /** Most partial uploads one final upload may name. @default 100 */
  maxPartsPerFinal?: number;
  /**
   * Most final uploads one partial upload may be part of: each delivers its bytes again, so this
   * bounds what one upload can turn into. @default 2 (a final, and a client's retry of it)
   */
  maxFinalsPerPartial?: number;
  /** Let a final upload name the same partial upload more than once. @default false */
  allowDuplicateParts?: boolean;
  /**
   * A body slower than this on average (after 10 s), or silent for 2 s, gives way to a newer
   * PATCH of its upload: its bytes are kept and it answers 423. @default 1024
   */
  minBytesPerSecond?: number;
  /**
   * Bind each upload to the request's `principal` at creation; no other principal can reach it
   * (HEAD, PATCH, DELETE, naming it in a final: 404). @default false
   */
  ownership?: boolean;
}

/**
 * A body write under way: abort it to stop it (its durable bytes are kept). It knows how fast
 * its body arrives, so that a newer PATCH can take over a trickling or stalled one.
 */
export class ActiveWrite extends AbortController {
  private readonly startedAt = Date.now();
  private lastByteAt = this.startedAt;
  private bytes = 0;

  private finished = false;

  /** The body is in: from now on nothing stops this write (it is never trickling). */
  finish(): void {
    this.finished = true;
  }

  /** Counts bytes as they arrive. */
  received(count: number): void {
    this.bytes += count;
    this.lastByteAt = Date.now();
  }

  /**
   * No byte for 2 s, or, after 10 s, fewer than `minBytesPerSecond` on average: a connection
   * its client gave up on, a phone gone out of coverage, or a client holding the lock on purpose.
   */
  isTrickling(minBytesPerSecond: number, now = Date.now()): boolean {
    if (this.finished) return false;
    return now - this.lastByteAt >= 2000 || this.isTooSlow(minBytesPerSecond, now);
  }

  /**
   * After 10 s, fewer than `minBytesPerSecond` on average: such a body is cut even when nobody
   * is waiting for its upload here (the rightful client may be waiting on another process or
   * replica, which cannot preempt it). Its bytes are kept; the client resumes.
   */
  isTooSlow(minBytesPerSecond: number, now = Date.now()): boolean {
    const seconds = (now - this.startedAt) / 1000;
    return (
      !this.finished &&
      minBytesPerSecond > 0 &&
      seconds >= 10 &&
      this.bytes / seconds < minBytesPerSecond
    );
  }
}

const rateWatches = new WeakMap<TusContext, NodeJS.Timeout>();

/**
 * Registers a body write of `id`, and makes sure that, once a second while any write is under
 * way, every write slower than `minBytesPerSecond` is stopped with {@link PREEMPTION} (one timer
 * per handler, none when idle). Returns the function that unregisters it.
 */
export function trackWrite(context: TusContext, id: string, write: ActiveWrite): () => void {
  context.activeWrites.set(id, write);
  if (!rateWatches.has(context)) {
    const timer = setInterval(() => {
      const now = Date.now();
      const min = context.options.minBytesPerSecond ?? 1024;
      for (const active of context.activeWrites.values()) {
        if (!active.signal.aborted && active.isTooSlow(min, now)) active.abort(PREEMPTION);
      }
      if (context.activeWrites.size === 0) {
        clearInterval(timer);
        rateWatches.delete(context);
      }
    }, 1000);
    timer.unref();
    rateWatches.set(context, timer);
  }
  return () => {
    if (context.activeWrites.get(id) === write) context.activeWrites.delete(id);
  };
}

/**
 * The abort reason of a body write cut because the server shuts down and its deadline passed:
 * the bytes it brought are kept, and it answers 503 (the client resumes, on another replica).
 */
export const SHUTDOWN: unique symbol = Symbol('nestjs-tussi.shutdown');

/**
 * What the protocol reports as it goes, for metrics: every call is synchronous and cheap, and
 * what one throws is logged, never seen by a request.
 */
export interface TusObserver {
  /** A lifecycle event, as it is emitted (before any listener runs). */
  event?(event: TusEvent): void;
  /** Bytes stored durably and counted in an upload's offset (PATCH, creation-with-upload). */
  bytesStored?(bytes: number): void;
}

/** What every method handler gets. */
export interface TusContext {
  readonly options: TusProtocolOptions;
  readonly store: UploadStorageService;
  /** Where finished uploads go; without one they stay in storage with offset == length. */
  readonly queue?: CompletedUploadQueue;
  readonly logger: TusLogger;
  /** Receives lifecycle events; never throws, never blocks (see `TusHandler`). */
  readonly emit: (event: TusEvent) => void;
  readonly progress: ProgressThrottle;
  readonly onCreate?: OnCreateHook;
  /** The extensions served and advertised. */
  readonly extensions: ReadonlySet<TusExtension>;
  /**
   * Body writes under way in this process, by upload id: termination stops them first, with
   * {@link TERMINATION} as the abort reason, and a newer PATCH with {@link PREEMPTION}.
   */
  readonly activeWrites: Map<string, ActiveWrite>;
  /** Work a request started and left running (final assembly): see `TusHandler.settled()`. */
  readonly background: Set<Promise<void>>;
  /**
   * Finals waiting for a partial that a body write of this process held locked when they were
   * created, by partial id: the write records them with its bytes, and its completion wakes them.
   */
  readonly pendingFinals: Map<string, Set<string>>;
  /** Metrics; none when undefined. */
  readonly observer?: TusObserver;
  /** Set when the server shuts down: new requests answer 503 with `Retry-After`. */
  readonly lifecycle: { draining: boolean };
}

/**
 * Runs `work` after the current request step, as background work of the handler: tracked until
 * it ends, its failure logged with `failure` (never thrown at anyone).
 */
export function runInBackground(
  context: TusContext,
  work: () => Promise<unknown>,
  failure: string,
): void {
  const task = new Promise<void>((resolve) => setImmediate(resolve))
    .then(work)
    .then(
      () => undefined,
      (e: unknown) =>
        // A TUS error is the client's doing (a final whose partial was deleted): not a failure.
        e instanceof TusError
          ? context.logger.warn(`${failure}: ${e.code}: ${e.message}`)
          : context.logger.error(failure, e),
    )
    .finally(() => context.background.delete(task));
  context.background.add(task);
}

export type MethodHandler = (request: TusRequest, context: TusContext) => Promise<TusResponse>;
