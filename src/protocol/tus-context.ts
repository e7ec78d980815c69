import type { CompletedUploadQueue } from '../queue/completed-upload.queue.js';
import type { UploadStorageService } from '../storage/upload-storage.service.js';
import type { TusRequest, TusResponse } from './tus-request.js';

/** Where the protocol reports what went wrong on the server side. */
export interface TusLogger {
  error(message: string, error?: unknown): void;
  warn(message: string): void;
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
}

/** What every method handler gets. */
export interface TusContext {
  readonly options: TusProtocolOptions;
  readonly store: UploadStorageService;
  /** Where finished uploads go; without one they stay in storage with offset == length. */
  readonly queue?: CompletedUploadQueue;
  readonly logger: TusLogger;
}

export type MethodHandler = (request: TusRequest, context: TusContext) => Promise<TusResponse>;
