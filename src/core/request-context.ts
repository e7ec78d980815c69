import { AsyncLocalStorage } from 'node:async_hooks';

/** What a log line may say about the request it comes from. */
export interface RequestContext {
  /** The request's id: its `X-Request-Id` when a safe one was sent, else a new UUID. */
  readonly requestId: string;
  /** The upload the request is about, once known (a creation's, once it has one). */
  uploadId?: string;
}

const storage = new AsyncLocalStorage<RequestContext>();

/** Runs `work` (and everything it starts) as part of the request `requestId`. */
export function runInRequestContext<T>(requestId: string, work: () => T): T {
  return storage.run({ requestId }, work);
}

/** The request the current code runs for (listeners of its events included), if any. */
export function currentRequestContext(): RequestContext | undefined {
  return storage.getStore();
}

/** Notes which upload the current request is about (for its log lines). */
export function noteUploadId(uploadId: string | undefined): void {
  const context = storage.getStore();
  if (context && uploadId !== undefined) context.uploadId = uploadId;
}
