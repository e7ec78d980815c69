import type { TusHealthOptions } from './health/tus-health.indicator.js';
import type { TusMetricsOptions } from './metrics/tus-metrics.js';
import type { CanActivate, FactoryProvider, ModuleMetadata, Provider, Type } from '@nestjs/common';
import type { JanitorOptions } from './janitor/janitor.js';
import type { TusExtension } from './protocol/extensions.js';
import type { TusCorsOptions } from './nest/tus-cors.js';
import type { TusPrincipalResolver } from './nest/tus-principal.js';
import type { RateLimitStorage } from './nest/tus-rate-limit.storage.js';
import type { TusRateLimits } from './nest/tus-rate-limit.guard.js';
import type { OnCreateHook, TusLogger } from './protocol/tus-context.js';
import type { TusEventSink } from './protocol/tus-events.js';
import type { CompletedUploadQueue } from './queue/completed-upload.queue.js';
import type { TusCoordinationOptions } from './redis/redis-coordination.js';
import type {
  UploadLocker,
  UploadRecordStore,
  UploadStorage,
} from './storage/storage.interfaces.js';
import type { S3StorageOptions } from './s3/s3-client.js';

/** Options of `TusModule.forRoot()` / `forRootAsync()`. Sizes are bytes, times milliseconds. */
export interface TusModuleOptions {
  /**
   * Staging directory of unfinished uploads (`{id}` data and `{id}.meta` record). Required
   * unless `storage` keeps the bytes elsewhere (`{ s3: ... }`).
   */
  uploadDir?: string;
  /**
   * Directory of finished uploads, waiting for a consumer. Must be on the filesystem of
   * `uploadDir`. With S3 storage it holds only the queue's records and claims: the bytes stay in
   * the bucket.
   */
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
  /**
   * A long PATCH commits its offset durably (data synced, record written) every this many
   * bytes, so a crash in the middle of it loses at most that much (and `checkpointIntervalMs`
   * of it). Not for a body with a checksum (its bytes count only once verified) or a storage
   * that cannot make part of a write durable (S3). 0: only at the end. @default 67108864 (64 MiB)
   */
  checkpointBytes?: number;
  /** …and at least this often while bytes arrive (ms). 0: by size only. @default 5000 */
  checkpointIntervalMs?: number;
  /**
   * A graceful shutdown (`app.close()`, `enableShutdownHooks`): new requests answer 503 with
   * `Retry-After` at once, PATCHes under way get this long to end, then they are cut with their
   * bytes kept, so the shutdown ends within it (Kubernetes kills after 30 s). @default 30000
   */
  shutdownTimeoutMs?: number;
  /** The HTTP server's `headersTimeout`: request headers must arrive within it. @default 60000 */
  headersTimeoutMs?: number;
  /**
   * Open connections in all (Node's `maxConnections`; with `configureHttpServer`): beyond, new
   * ones are closed at once. Keep it below the process's descriptor limit. @default 10000
   */
  maxConnections?: number;
  /**
   * Open connections from one client address (IPv6 by /64), beyond which new ones are closed
   * at once, so that slow connections from one client never take every descriptor. Trusted
   * proxies are exempt. @default 256
   */
  maxConnectionsPerClient?: number;
  /**
   * Set the HTTP server's timeouts for long uploads when the application starts: `requestTimeout`
   * 0 (Node's 300 s total-request limit would cut a multi-gigabyte PATCH) and `headersTimeout`
   * above, and answer `Expect: 100-continue` when a body is first read rather than at once (a
   * PATCH refused before its body is answered before the client sends it). Turn off to manage
   * the server yourself. @default true
   */
  configureHttpServer?: boolean;
  /**
   * Free space kept beyond what open uploads were promised (filesystem storage): a creation
   * whose length does not fit beside every open upload's remaining bytes and this margin is
   * refused with 507, and nothing is reserved on disk for it up front. The promises are shared
   * by the processes of the host (a ledger file in `uploadDir`) and, with `coordination`, by
   * the replicas. @default the smaller of 64 MiB and 5 % of the volume
   */
  spaceMargin?: number;
  /**
   * Where upload bytes live: a storage of your own, or `{ s3: { bucket, ... } }` for uploads
   * straight into S3 (each upload one multipart upload, records as objects beside the data,
   * finished uploads handed out as objects of the bucket). @default FilesystemStorage in `uploadDir`
   */
  storage?: UploadStorage | { s3: S3StorageOptions };
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
   * Serve the IETF successor of TUS (draft-ietf-httpbis-resumable-upload, interop versions 5 to
   * 8) on the same endpoint: a request with `Upload-Draft-Interop-Version` speaks the draft,
   * any other TUS 1.0.0. @default true
   */
  ietfDraft?: boolean;
  /**
   * An unfinished upload expires this long after its last write: `Upload-Expires` announces it,
   * requests after it get 410, and the janitor deletes it (its `staleUploadAge` defaults to
   * this). @default 86400000 (24 h, tussi's stale_upload_age)
   */
  expireAfterMs?: number;
  /** Delete partial uploads once a final upload was assembled from them. @default true */
  removePartials?: boolean;
  /** Most partial uploads one final upload may name (400 beyond). @default 100 */
  maxPartsPerFinal?: number;
  /**
   * Most final uploads one partial upload may be part of (409 beyond): each delivers the
   * partial's bytes again, so this bounds what one upload can be turned into. @default 2
   */
  maxFinalsPerPartial?: number;
  /** Let a final upload name the same partial upload twice (400 otherwise). @default false */
  allowDuplicateParts?: boolean;
  /**
   * A PATCH body slower than this on average after 10 s is cut (whoever waits for its upload,
   * in any process or replica), and one silent for 2 s gives way to a newer PATCH of the same
   * upload in this process: its bytes are kept, it answers 423, and the newer request takes the
   * lock (a client resuming after a dead connection, or one trickling to hold the lock, never
   * keeps the rightful client out). 0 turns the rate off. @default 1024
   */
  minBytesPerSecond?: number;
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
  /**
   * Prometheus metrics (prom-client): the module provides `TusMetrics` (serve it with
   * `TusMetricsController` or a route of your own), in a registry of its own with Node's
   * default metrics, or in `registry`. `false`: no metrics are kept. @default {}
   */
  metrics?: TusMetricsOptions | false;
  /**
   * The health checks `TusHealthIndicator` runs (for `@nestjs/terminus`): the free space below
   * which the disk is down, and how long a check may take. @default { minFreeBytes: 64 MiB, timeoutMs: 3000 }
   */
  health?: TusHealthOptions;
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
   * The janitor: tussi's cleanup, run every `intervalMs`, or on the `cron` expression (e.g.
   * `'0 * * * *'`, a cron job of `@nestjs/schedule`; it wins over `intervalMs`), registered as
   * `tus-janitor` in `SchedulerRegistry` when the application imports `ScheduleModule`; or
   * `false` to run it yourself (`Janitor.run()`). @default { staleUploadAge: 86400, completedFileAge: 604800, intervalMs: 3600000 }
   */
  janitor?: (JanitorOptions & { intervalMs?: number; cron?: string }) | false;
  /**
   * Bind each upload to the principal that created it: HEAD, PATCH, DELETE, and naming it in a
   * final upload by any other principal answer 404, as if it did not exist. The owner is stored
   * in the record (so it holds across processes and, with Redis, replicas) and carried by the
   * lifecycle events and the completed queue's records. `true` takes the principal from
   * `request.user`, as the guard or Passport set it (a string, or its `id`, `sub` or
   * `username`); a function takes it from the request itself. Requests without a principal
   * reach only uploads created without one. @default false
   */
  ownership?: boolean | TusPrincipalResolver;
  /**
   * Rate limits per client (its principal when authenticated, else its address, through
   * `trustedProxies`): `{ creationsPerMinute, requestsPerMinute }`. Over a limit: 429 with
   * `Retry-After`. Counted in Redis with `coordination`, in memory otherwise. Limits per
   * address hurt clients behind one NAT: prefer principals. @default none
   */
  rateLimits?: TusRateLimits;
  /**
   * Where rate limits count (the contract of `@nestjs/throttler`'s storages, which plug in).
   * @default in Redis with `coordination`, in memory otherwise
   */
  rateLimitStorage?: RateLimitStorage;
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

/**
 * What a `forRootAsync` factory returns: the options, and none of the extras (they would be
 * ignored there, leaving the routes without their guards).
 */
export type TusFactoryOptions = TusModuleOptions & {
  [K in keyof TusModuleExtras]?: never;
};

/** `TusModule.forRootAsync()`: the extras beside a factory (or class) of the options. */
export interface TusModuleAsyncOptions extends Partial<TusModuleExtras> {
  /** Modules whose providers the factory (and the guards) inject. */
  imports?: ModuleMetadata['imports'];
  inject?: FactoryProvider['inject'];
  useFactory?: (...args: never[]) => TusFactoryOptions | Promise<TusFactoryOptions>;
  useClass?: Type<TusOptionsFactory>;
  useExisting?: Type<TusOptionsFactory>;
  provideInjectionTokensFrom?: Provider[];
}

/** A class that builds the options (`useClass` / `useExisting`). */
export interface TusOptionsFactory {
  create(): TusFactoryOptions | Promise<TusFactoryOptions>;
}
