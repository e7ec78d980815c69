import { type ReadStream } from 'node:fs';
import { Upload, type DetailedError, type HttpRequest, type HttpResponse } from 'tus-js-client';

export type TusOptions = ConstructorParameters<typeof Upload>[1];
type UrlStorage = NonNullable<TusOptions['urlStorage']>;
export type PreviousUpload = Awaited<ReturnType<UrlStorage['findAllUploads']>>[number];

/** tus-js-client's URL storage kept in memory (the Node default stores nothing). */
export class MemoryUrlStorage implements UrlStorage {
  readonly entries = new Map<string, PreviousUpload>();
  private next = 0;

  async findAllUploads(): Promise<PreviousUpload[]> {
    return [...this.entries.values()];
  }

  async findUploadsByFingerprint(fingerprint: string): Promise<PreviousUpload[]> {
    const prefix = `tus::${fingerprint}::`;
    return [...this.entries.entries()]
      .filter(([key]) => key.startsWith(prefix))
      .map(([, upload]) => upload);
  }

  async removeUpload(urlStorageKey: string): Promise<void> {
    this.entries.delete(urlStorageKey);
  }

  async addUpload(fingerprint: string, upload: PreviousUpload): Promise<string> {
    const key = `tus::${fingerprint}::${++this.next}`;
    this.entries.set(key, { ...upload, urlStorageKey: key });
    return key;
  }
}

/** One request the client made and the answer it got. */
export interface Exchange {
  method: string;
  status: number;
  /** `Upload-Offset` the request sent (PATCH). */
  offset: number | undefined;
  /** `Upload-Offset` the response carried. */
  responseOffset: number | undefined;
  /** `Upload-Metadata` the request sent (the creation). */
  metadata: string | undefined;
}

/** A retry tus-js-client decided on: the status that caused it (0: no response at all). */
export interface Retry {
  status: number;
  message: string;
}

export interface UploadRun {
  upload: Upload;
  exchanges: Exchange[];
  retries: Retry[];
  /** `onChunkComplete` calls. */
  chunks: number;
  /** Resolves on `onSuccess`, rejects on `onError`; an `abort()` leaves it pending. */
  done: Promise<void>;
}

const offsetOf = (value: string | undefined) =>
  value === undefined || value === '' ? undefined : Number(value);

/**
 * Starts a tus-js-client `Upload` (retryDelays `[]` unless given) that records every exchange
 * and every retry. `options.onAfterResponse`, `onChunkComplete` and `onShouldRetry` are still
 * called. With `resumeFrom`, `resumeFromPreviousUpload` is called before `start()`.
 */
export function startUpload(
  input: Buffer | ReadStream,
  options: TusOptions,
  resumeFrom?: PreviousUpload,
): UploadRun {
  const run = {
    exchanges: [] as Exchange[],
    retries: [] as Retry[],
    chunks: 0,
  } as UploadRun;
  run.done = new Promise<void>((resolve, reject) => {
    run.upload = new Upload(input, {
      retryDelays: [],
      ...options,
      onAfterResponse: async (req: HttpRequest, res: HttpResponse) => {
        run.exchanges.push({
          method: req.getHeader('X-HTTP-Method-Override') ?? req.getMethod(),
          status: res.getStatus(),
          offset: offsetOf(req.getHeader('Upload-Offset')),
          responseOffset: offsetOf(res.getHeader('Upload-Offset')),
          metadata: req.getHeader('Upload-Metadata'),
        });
        await options.onAfterResponse?.(req, res);
      },
      onChunkComplete: (size, accepted, total) => {
        run.chunks++;
        options.onChunkComplete?.(size, accepted, total);
      },
      onShouldRetry: (error: DetailedError, attempt, retryOptions) => {
        const status = error.originalResponse?.getStatus() ?? 0;
        run.retries.push({ status, message: error.message });
        if (options.onShouldRetry) return options.onShouldRetry(error, attempt, retryOptions);
        // tus-js-client's default: no response, 5xx, 409 and 423 are worth another try.
        return status < 400 || status >= 500 || status === 409 || status === 423;
      },
      onSuccess: (payload) => {
        options.onSuccess?.(payload);
        resolve();
      },
      onError: (error) => {
        options.onError?.(error);
        reject(error);
      },
    });
    if (resumeFrom) run.upload.resumeFromPreviousUpload(resumeFrom);
    run.upload.start();
  });
  return run;
}

/** What `findPreviousUploads()` of a new client for `input` finds (the client is not started). */
export function findPreviousUploads(
  input: Buffer | ReadStream,
  options: TusOptions,
): Promise<PreviousUpload[]> {
  return new Upload(input, options).findPreviousUploads();
}

/** The exchanges as `METHOD status` strings, for readable expectations. */
export function summary(exchanges: Exchange[]): string[] {
  return exchanges.map((e) => `${e.method} ${e.status}`);
}

/** A promise and the functions that settle it. */
export function deferred<T = void>(): {
  promise: Promise<T>;
  resolve: (value: T) => void;
  reject: (error: unknown) => void;
} {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}
