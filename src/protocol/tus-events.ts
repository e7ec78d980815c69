import type { UploadRecord } from '../core/upload-record.js';

/** Names of the lifecycle events, for `@OnEvent(TusEvents.Completed)`. */
export const TusEvents = Object.freeze({
  Created: 'tus.upload.created',
  Progress: 'tus.upload.progress',
  Completed: 'tus.upload.completed',
  Failed: 'tus.upload.failed',
  Terminated: 'tus.upload.terminated',
} as const);

export type TusEventName = (typeof TusEvents)[keyof typeof TusEvents];

/** Who asked, for events caused by a request. */
export interface TusRequestInfo {
  method: string;
  /** Request headers (lower-case names). */
  headers: Readonly<Record<string, string | string[] | undefined>>;
}

/** An upload was created (POST 201). */
export class UploadCreatedEvent {
  readonly name = TusEvents.Created;
  constructor(
    readonly uploadId: string,
    readonly record: UploadRecord,
    readonly request: TusRequestInfo,
  ) {}

  /** The principal that owns the upload (`ownership`), or `null`. */
  get owner(): string | null {
    return this.record.owner;
  }
}

/** Bytes of an upload were received; at most one per upload per progress interval. */
export class UploadProgressEvent {
  readonly name = TusEvents.Progress;
  constructor(
    readonly uploadId: string,
    /** Bytes received so far (durable up to the last acknowledged offset). */
    readonly offset: number,
    readonly length: number | null,
    /** The principal that owns the upload (`ownership`), or `null`. */
    readonly owner: string | null = null,
  ) {}
}

/** The last byte of an upload is durable and the upload is in the completed queue. */
export class UploadCompletedEvent {
  readonly name = TusEvents.Completed;
  constructor(
    readonly uploadId: string,
    readonly record: UploadRecord,
  ) {}

  /** The principal that owns the upload (`ownership`), or `null`. */
  get owner(): string | null {
    return this.record.owner;
  }
}

/** A request on an upload failed on the server's side (5xx) or the client went away mid-body. */
export class UploadFailedEvent {
  readonly name = TusEvents.Failed;
  constructor(
    /** `undefined` when the failure came before an upload existed. */
    readonly uploadId: string | undefined,
    readonly status: number,
    readonly error: unknown,
    /** The principal of the failed request, when authentication established one. */
    readonly principal: string | null = null,
  ) {}
}

/** A client terminated an upload (DELETE); its files are gone. */
export class UploadTerminatedEvent {
  readonly name = TusEvents.Terminated;
  constructor(
    readonly uploadId: string,
    /** The principal that owned the upload (`ownership`), or `null`. */
    readonly owner: string | null = null,
  ) {}
}

export type TusEvent =
  | UploadCreatedEvent
  | UploadProgressEvent
  | UploadCompletedEvent
  | UploadFailedEvent
  | UploadTerminatedEvent;

/** Receives lifecycle events; the protocol never waits for it and logs what it throws. */
export type TusEventSink = (event: TusEvent) => void | Promise<void>;

/** Keeps progress events to one per upload per interval, however small the network reads. */
export class ProgressThrottle {
  private readonly last = new Map<string, number>();

  constructor(private readonly intervalMs: number) {}

  /** True (and the clock restarted) when a progress event for `id` may be sent now. */
  take(id: string): boolean {
    const now = Date.now();
    const previous = this.last.get(id);
    if (previous !== undefined && now - previous < this.intervalMs) return false;
    // Abandoned uploads must not grow the map without bound.
    if (this.last.size >= 10_000) this.last.clear();
    this.last.set(id, now);
    return true;
  }

  forget(id: string): void {
    this.last.delete(id);
  }
}
