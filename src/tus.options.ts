import type { CanActivate, Type } from '@nestjs/common';
import type { JanitorOptions } from './janitor/janitor.js';
import type { TusExtension } from './protocol/extensions.js';
import type { TusCorsOptions } from './nest/tus-cors.js';
import type { OnCreateHook, TusLogger } from './protocol/tus-context.js';
import type { TusEventSink } from './protocol/tus-events.js';
import type { CompletedUploadQueue } from './queue/completed-upload.queue.js';
import type { TusCoordinationOptions } from './redis/redis-coordination.js';
import type {
  UploadLocker,
  UploadRecordStore,
  UploadStorage,
} from './storage/storage.interfaces.js';

/** Options of `TusModule.forRoot()` / `forRootAsync()`. Sizes are bytes, times milliseconds. */
export interface TusModuleOptions {
  /** Staging directory of unfinished uploads (`{id}` data and `{id}.meta` record). */
  uploadDir: string;
  /** Directory of finished uploads, waiting for a consumer. Must be on the filesystem of `uploadDir`. */
  completedDir: string;
  /** Largest upload accepted, advertised as `Tus-Max-Size`. @default undefined (no limit) */
  maxSize?: number;
  /**
   * Largest body of one PATCH. Bodies are streamed, never held in memory, so there is no need
   * for a limit (tus-js-client with `chunkSize: Infinity` sends a whole file in one PATCH); a
   * limit, when set, is enforced while streaming. @default undefined (no limit)
   */
  maxChunkSize?: number;
  /** Largest `Upload-Metadata` header. @default 4096 */
  maxMetadataSize?: number;
  /** fsync data, then the record, before acknowledging bytes. @default true */
  fsync?: boolean;
  /**
   * Mode of the directories the module creates (the umask applies). Only the server's user
   * should be able to enter them: whoever can write in them can plant symlinks and FIFOs
   * (which the server refuses, moves aside and logs). @default 0o700
   */
  directoryMode?: number;
  /**
   * Mode of the files the module creates (the umask applies): data files (which keep it in
   * `completedDir` and when a consumer saves them, unless `save(dest, { mode })` sets another),
   * records and receipts. Widen it (e.g. `0o640`) for a consumer running as another user of
   * the group. @default 0o600
   */
  fileMode?: number;
  /**
   * How long a request waits for an upload another request is writing before answering 423
   * (clients such as tus-js-client retry 423). @default 3000
   */
  lockWaitMs?: number;
  /** A request body with no byte for this long is cut; the bytes it delivered are kept. @default 60000 */
  bodyIdleTimeoutMs?: number;
  /** The HTTP server's `headersTimeout`: request headers must arrive within it. @default 60000 */
  headersTimeoutMs?: number;
  /**
   * Set the HTTP server's timeouts for long uploads when the application starts: `requestTimeout`
   * 0 (Node's 300 s total-request limit would cut a multi-gigabyte PATCH) and `headersTimeout`
   * above, and answer `Expect: 100-continue` when a body is first read rather than at once (a
   * PATCH refused before its body is answered before the client sends it). Turn off to manage
   * the server yourself. @default true
   */
  configureHttpServer?: boolean;
  /** Where upload bytes live. @default FilesystemStorage in `uploadDir` */
  storage?: UploadStorage;
  /** Where upload records live. @default FilesystemRecordStore in `uploadDir` */
  recordStore?: UploadRecordStore;
  /** Per-upload locks. @default FileUploadLocker (flock on the data file) */
  locker?: UploadLocker;
  /**
   * Extensions to switch off, e.g. `{ 'checksum-trailer': false }`. All of TUS 1.0.0's are on:
   * creation, creation-with-upload, creation-defer-length, termination, expiration, checksum,
   * checksum-trailer, concatenation, concatenation-unfinished. An extension switched off is not
   * advertised in `Tus-Extension`. @default all on
   */
  extensions?: Partial<Record<TusExtension, boolean>>;
  /**
   * An unfinished upload expires this long after its last write: `Upload-Expires` announces it,
   * requests after it get 410, and the janitor deletes it (its `staleUploadAge` defaults to
   * this). @default 86400000 (24 h, tussi's stale_upload_age)
   */
  expireAfterMs?: number;
  /** Delete partial uploads once a final upload was assembled from them. @default true */
  removePartials?: boolean;
  /** The completed-upload queue. @default FilesystemCompletedQueue in `completedDir` */
  completedQueue?: CompletedUploadQueue;
  /** How often waiting consumers rescan `completedDir` if the directory watch misses. @default 2000 */
  queuePollIntervalMs?: number;
  /**
   * tussi's `on_create`: called before an upload is stored, with the request headers and the
   * decoded client metadata; returns the server metadata to store. Throw an `HttpException` to
   * refuse the creation with its status (e.g. 403 over quota). With `forRootAsync` it can use
   * injected providers. @default none
   */
  onCreate?: OnCreateHook;
  /**
   * tussi's `on_event`: every lifecycle event, for code that does not use the event bus. Events
   * also go to EventEmitter2 when the application imports `EventEmitterModule`. @default none
   */
  onEvent?: TusEventSink;
  /** At most one `tus.upload.progress` event per upload per this many ms. @default 1000 */
  progressIntervalMs?: number;
  /**
   * Peers (IPs or CIDR ranges, IPv4 or IPv6) whose `X-Forwarded-Proto` / `Forwarded: proto=`
   * decides the scheme of `Location`. Without it forwarded headers are ignored. @default []
   */
  trustedProxies?: string[];
  /** Also take the host of `Location` from a trusted proxy's `X-Forwarded-Host`. @default false */
  trustForwardedHost?: boolean;
  /** CORS for browser clients; without it no CORS header is sent. @default none */
  cors?: TusCorsOptions;
  /**
   * The janitor: tussi's cleanup, run every `intervalMs` (through `@nestjs/schedule`'s
   * `SchedulerRegistry` when the application imports `ScheduleModule`), or `false` to run it
   * yourself (`Janitor.run()`). @default { staleUploadAge: 86400, completedFileAge: 604800, intervalMs: 3600000 }
   */
  janitor?: (JanitorOptions & { intervalMs?: number }) | false;
  /** Where server-side failures are logged. @default Nest's `Logger` with context `TusModule` */
  logger?: TusLogger;
  /**
   * Several replicas (processes on several hosts) sharing `uploadDir` and `completedDir`:
   * `{ redis: { url: 'redis://redis:6379' } }` puts the upload locks, the completed queue's
   * claims, a cache of the records and the janitor's lock in Redis (see the README). Explicit
   * `locker`, `recordStore` and `completedQueue` options still win. @default none (flock: one host)
   */
  coordination?: TusCoordinationOptions;
}

/** Options that shape routes; given beside the options since routes are fixed at import time. */
export interface TusModuleExtras {
  /** Path of the creation URL, below any global prefix. @default 'files' */
  path: string;
  /** Register the module globally. @default false */
  isGlobal: boolean;
  /**
   * Guards of the upload routes (POST, HEAD, PATCH, DELETE), e.g. a bearer-token guard. Never
   * applied to OPTIONS: TUS discovery and CORS preflights carry no credentials. @default []
   */
  guards: (Type<CanActivate> | CanActivate)[];
}
