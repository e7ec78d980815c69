import { join } from 'node:path';
import type { RedisOptions } from 'ioredis';
import type { TusContext, TusLogger } from '../protocol/tus-context.js';
import type { CompletedEntries } from '../queue/completed-entries.js';
import { FilesystemRecordStore } from '../storage/filesystem-record.store.js';
import type { UploadRecordStore } from '../storage/storage.interfaces.js';
import { RedisCompletedQueue } from './redis-completed.queue.js';
import { RedisConnection } from './redis-connection.js';
import { RedisJanitorLock } from './redis-janitor-lock.js';
import { RedisKeys, type GraceDurations } from './redis-keys.js';
import { RedisRecordStore } from './redis-record.store.js';
import { RedisSpaceLedger } from './redis-space.ledger.js';
import { RedisUploadLocker } from './redis-upload.locker.js';

/** `coordination: { redis: { ... } }`: several replicas on several hosts, one Redis. */
export interface RedisCoordinationOptions {
  /** `redis://[[user]:password@]host[:port][/db]`, or `rediss://` for TLS. */
  url: string;
  /** Prefix of every key; replicas of one deployment share it. @default 'tussi:' */
  keyPrefix?: string;
  /**
   * Lease of an upload lock, renewed while a request holds it. A replica that dies holding a
   * lock blocks that upload at most this long; a holder that cannot renew stops writing a third
   * of a lease before it runs out. @default 5000
   */
  lockLeaseMs?: number;
  /** A consumer that stops renewing its claim (a dead replica) loses it after this. @default 30000 */
  claimTimeoutMs?: number;
  /** How long a record stays in the Redis cache. @default 60000 */
  recordCacheTtlMs?: number;
  /** Rebuild the completed queue from `completedDir` this often (also after each reconnect). @default 30000 */
  queueRebuildIntervalMs?: number;
  /** A Redis command with no answer within this time fails. @default 2000 */
  commandTimeoutMs?: number;
  /** While Redis is unreachable, a request waits this long for it before answering 503. @default 1000 */
  unavailableAfterMs?: number;
  /** More ioredis options (TLS, auth, ...). */
  client?: RedisOptions;
}

/** The coordination options of `TusModule`: today, Redis. */
export interface TusCoordinationOptions {
  redis: RedisCoordinationOptions;
}

/** The storage side the Redis coordination works with (what the module options say). */
export interface RedisCoordinationTarget {
  /** The staging directory (records and data of the filesystem storage). */
  uploadDir?: string;
  /** The completed directory (the completed queue's entries on files). */
  completedDir?: string;
  /** Where records are kept behind the Redis cache. @default the `.meta` files of `uploadDir` */
  records?: UploadRecordStore;
  /** Where the completed queue's entries are. @default the files of `completedDir` */
  entries?: CompletedEntries;
  fsync?: boolean;
  /** Mode of the directories created (the umask applies). @default 0o700 */
  directoryMode?: number;
  /** Mode of the records and receipts created (the umask applies). @default 0o600 */
  fileMode?: number;
  /** Consumers retry a claim at least this often. @default 2000 */
  queuePollIntervalMs?: number;
  /** The janitor's interval: scheduled runs happen about once per interval in the deployment. */
  janitorIntervalMs?: number;
  /**
   * The data file of an upload (missing data = a finished or deleted upload); `null` when the
   * bytes are not files. @default `{uploadDir}/{id}`
   */
  dataPath?: ((id: string) => string) | null;
  logger?: TusLogger;
}

/** Nest injection token of the coordination (`null` without one). */
export const TUS_COORDINATION = Symbol('TUS_COORDINATION');

/**
 * The Redis implementations of the coordination interfaces, on one connection: the upload
 * locker, the record store (a cache in front of the `.meta` files), the completed queue (the
 * files in `completedDir`, the claims in Redis) and the janitor's lock.
 */
export class RedisCoordination {
  readonly connection: RedisConnection;
  readonly keys: RedisKeys;
  readonly locker: RedisUploadLocker;
  readonly recordStore: RedisRecordStore;
  readonly completedQueue: RedisCompletedQueue;
  readonly janitorLock: RedisJanitorLock;
  /** The promises of open uploads, shared by the replicas (space accounting). */
  readonly spaceLedger: RedisSpaceLedger;
  private closing: Promise<void> | undefined;

  constructor(options: RedisCoordinationOptions, target: RedisCoordinationTarget) {
    const logger = target.logger ?? {
      error: (message: string, error?: unknown) =>
        console.error(`[nestjs-tussi] ${message}`, error),
      warn: (message: string) => console.warn(`[nestjs-tussi] ${message}`),
    };
    this.connection = new RedisConnection(
      {
        url: options.url,
        client: options.client,
        commandTimeoutMs: options.commandTimeoutMs,
        unavailableAfterMs: options.unavailableAfterMs,
      },
      logger,
    );
    this.keys = new RedisKeys(options.keyPrefix ?? 'tussi:');
    const grace: GraceDurations = {
      locksMs: options.lockLeaseMs ?? 5_000,
      queueMs: options.claimTimeoutMs ?? 30_000,
    };
    this.locker = new RedisUploadLocker(this.connection, this.keys, {
      leaseMs: grace.locksMs,
      grace,
      pathOf:
        target.dataPath === null
          ? undefined
          : (target.dataPath ?? ((id: string) => join(required(target.uploadDir), id))),
    });
    this.recordStore = new RedisRecordStore(
      target.records ??
        new FilesystemRecordStore(required(target.uploadDir), target.fsync ?? true, {
          fileMode: target.fileMode,
          log: (m) => logger.warn(m),
        }),
      this.connection,
      this.keys,
      this.locker,
      { ttlMs: options.recordCacheTtlMs },
    );
    this.completedQueue = new RedisCompletedQueue(this.connection, this.keys, {
      entries: target.entries,
      directory: target.entries ? undefined : required(target.completedDir),
      stagingDirectory: target.dataPath === null ? undefined : target.uploadDir,
      fsync: target.fsync,
      directoryMode: target.directoryMode,
      fileMode: target.fileMode,
      pollIntervalMs: target.queuePollIntervalMs,
      log: (m) => logger.warn(m),
      claimTimeoutMs: grace.queueMs,
      grace,
      rebuildIntervalMs: options.queueRebuildIntervalMs,
      logger,
    });
    this.spaceLedger = new RedisSpaceLedger(this.connection, this.keys);
    this.janitorLock = new RedisJanitorLock(this.connection, this.keys, {
      cooldownMs: (target.janitorIntervalMs ?? 3_600_000) * 0.9,
    });
  }

  /**
   * Stops a request's write in this process as soon as its upload's lock is lost (the same
   * stop a DELETE uses): the bytes received so far are kept, the record is not moved over them,
   * and the request answers 503.
   */
  attach(context: Pick<TusContext, 'activeWrites'>): void {
    this.locker.onLost((id) => context.activeWrites.get(id)?.abort());
  }

  /** Closes the queue, then the connection. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      await this.completedQueue.close();
      await this.connection.close();
    })();
    return this.closing;
  }

  /** Nest calls it at shutdown. */
  onApplicationShutdown(): Promise<void> {
    return this.close();
  }
}

function required(dir: string | undefined): string {
  if (dir === undefined) throw new Error('Redis coordination needs uploadDir and completedDir');
  return dir;
}

/** Creates the Redis coordination (connecting right away); `close()` when done. */
export function redisCoordination(
  options: RedisCoordinationOptions,
  target: RedisCoordinationTarget,
): RedisCoordination {
  return new RedisCoordination(options, target);
}

/** Problems with the `coordination` option, for the module's start-up check. */
export function coordinationProblems(value: unknown): string[] {
  if (value === undefined) return [];
  if (typeof value !== 'object' || value === null) return ['must be an object: { redis: { url } }'];
  const redis = (value as { redis?: unknown }).redis;
  if (typeof redis !== 'object' || redis === null) return ['redis must be an object with a url'];
  const r = redis as Record<string, unknown>;
  const problems: string[] = [];
  if (typeof r.url !== 'string' || !/^rediss?:\/\/\S+$/.test(r.url)) {
    problems.push('redis.url must be a redis:// or rediss:// URL');
  }
  if (r.keyPrefix !== undefined && (typeof r.keyPrefix !== 'string' || r.keyPrefix === '')) {
    problems.push('redis.keyPrefix must be a non-empty string');
  }
  const minimums: Record<string, number> = {
    lockLeaseMs: 300,
    claimTimeoutMs: 300,
    recordCacheTtlMs: 1,
    queueRebuildIntervalMs: 100,
    commandTimeoutMs: 10,
    unavailableAfterMs: 0,
  };
  for (const [name, min] of Object.entries(minimums)) {
    const v = r[name];
    if (v !== undefined && !(Number.isInteger(v) && (v as number) >= min)) {
      problems.push(`redis.${name} must be an integer >= ${min}`);
    }
  }
  return problems;
}
