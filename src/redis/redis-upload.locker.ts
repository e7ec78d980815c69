import { randomUUID } from 'node:crypto';
import { lstat } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { TusErrors } from '../protocol/tus-error.js';
import { KeyedMutex } from '../storage/keyed-mutex.js';
import {
  LockTargetMissingError,
  LockTimeoutError,
  type UploadLock,
  type UploadLocker,
} from '../storage/storage.interfaces.js';
import { LuaScript, type RedisConnection } from './redis-connection.js';
import { EPOCH_LUA, graceArgs, type GraceDurations, type RedisKeys } from './redis-keys.js';

/** KEYS[4] lock; ARGV[3] token, ARGV[4] lease. 1 granted, 0 held by another, -1 grace. */
const ACQUIRE = new LuaScript(`${EPOCH_LUA}
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if redis.call('SET', KEYS[4], ARGV[3], 'NX', 'PX', ARGV[4]) then return 1 end
return 0
`);

/**
 * KEYS[4] lock; ARGV[3] token, ARGV[4] lease. 1 when the lease was extended (or, in the grace
 * period after Redis lost its data, taken back), 0 when the token no longer holds the lock.
 */
const RENEW = new LuaScript(`${EPOCH_LUA}
local holder = redis.call('GET', KEYS[4])
if holder == ARGV[3] then
  redis.call('PEXPIRE', KEYS[4], ARGV[4])
  return 1
end
if holder == false and redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('SET', KEYS[4], ARGV[3], 'PX', ARGV[4])
  return 1
end
return 0
`);

/** KEYS[1] lock; ARGV[1] token. Compare-and-delete: only the holder releases. */
const RELEASE = new LuaScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`);

export interface RedisUploadLockerOptions {
  /** Lease of a lock, renewed while it is held; a dead holder's lock is free after it. @default 5000 */
  leaseMs?: number;
  /** Grace durations after a Redis data loss (locks: the lease; queue: the claim timeout). */
  grace: GraceDurations;
  /**
   * The data file of an upload: a lock on an upload whose data is gone reports
   * `LockTargetMissingError`, as the filesystem locker does (finished or deleted uploads).
   */
  pathOf?: (id: string) => string;
}

/**
 * A held Redis lock. Its lease is renewed every quarter lease in the background; when Redis
 * says another token holds it, or when no renewal succeeded for two thirds of the lease (Redis
 * unreachable), `signal` fires — a third of a lease before anyone else can get the lock — so the
 * writer stops in time. `assertHeld()` checks (and extends) the lease right before a record
 * update.
 */
/** Leases are timed on the monotonic clock: a wall-clock jump never stretches one. */
export class RedisUploadLock implements UploadLock {
  private readonly lost = new AbortController();
  private confirmedAt: number;
  private renewing = false;
  private released = false;
  private renewTimer: NodeJS.Timeout | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  /** The record offset read under this lock (the record store checks it before updating). */
  expectedOffset: number | undefined;

  constructor(
    readonly id: string,
    readonly token: string,
    grantedAt: number,
    private readonly locker: RedisUploadLocker,
    private readonly releaseLocal: () => void,
  ) {
    this.confirmedAt = grantedAt;
  }

  get signal(): AbortSignal {
    return this.lost.signal;
  }

  get isLost(): boolean {
    return this.lost.signal.aborted;
  }

  /** @internal Starts renewing. */
  start(): void {
    this.renewTimer = setInterval(() => void this.renew(), this.locker.leaseMs / 4);
    this.renewTimer.unref();
    this.armWatchdog();
  }

  /**
   * Checks with Redis that this lock is still held, and extends its lease. Throws the 503
   * `lockLost` when it is not, `redisUnavailable` when Redis cannot say.
   */
  async assertHeld(): Promise<void> {
    if (this.isLost || this.released) throw TusErrors.lockLost();
    const sent = performance.now();
    const held = await this.locker.renewLease(this);
    if (!held) {
      this.markLost('the lock is held by another token');
      throw TusErrors.lockLost();
    }
    this.confirm(sent);
  }

  async release(): Promise<void> {
    if (this.released) return;
    this.released = true;
    this.stopTimers();
    // A lost lock is released in the background: Redis may be the reason it was lost, and the
    // request must not wait for it to answer.
    const releasing = this.locker.releaseLease(this);
    try {
      if (!this.isLost) await releasing;
    } finally {
      this.releaseLocal();
    }
  }

  private async renew(): Promise<void> {
    if (this.renewing || this.released || this.isLost) return;
    this.renewing = true;
    const sent = performance.now();
    try {
      if (await this.locker.renewLease(this)) this.confirm(sent);
      else this.markLost('the lock is held by another token');
    } catch {
      // Redis unreachable: the watchdog decides when the lease can no longer be trusted.
    } finally {
      this.renewing = false;
    }
  }

  private confirm(sentAt: number): void {
    if (this.isLost || this.released) return;
    // The lease was extended at the earliest when the command was sent.
    this.confirmedAt = Math.max(this.confirmedAt, sentAt);
    this.armWatchdog();
  }

  private armWatchdog(): void {
    clearTimeout(this.watchdog);
    const deadline = this.confirmedAt + (this.locker.leaseMs * 2) / 3;
    this.watchdog = setTimeout(
      () => this.markLost(`no lease renewal for ${Math.round((this.locker.leaseMs * 2) / 3)} ms`),
      Math.max(0, deadline - performance.now()),
    );
    this.watchdog.unref();
  }

  private markLost(reason: string): void {
    if (this.isLost || this.released) return;
    this.stopTimers();
    this.lost.abort(new Error(`lock of upload ${this.id} lost: ${reason}`));
    this.locker.notifyLost(this);
  }

  private stopTimers(): void {
    clearInterval(this.renewTimer);
    clearTimeout(this.watchdog);
  }
}

/**
 * Per-upload locks across every replica, in Redis: `SET lock token NX PX lease`, renewed while
 * held, released by compare-and-delete (only the holder's token deletes it). A replica that dies
 * holding a lock stops renewing it, and the lock is free once its lease runs out. In front of
 * Redis, an in-process queue keeps the requests of one process from polling each other.
 */
export class RedisUploadLocker implements UploadLocker {
  readonly leaseMs: number;
  private readonly local = new KeyedMutex();
  private readonly held = new Map<string, RedisUploadLock>();
  private readonly lostListeners = new Set<(id: string, lock: RedisUploadLock) => void>();

  constructor(
    private readonly redis: RedisConnection,
    private readonly keys: RedisKeys,
    private readonly options: RedisUploadLockerOptions,
  ) {
    this.leaseMs = options.leaseMs ?? 5_000;
  }

  async acquire(id: string, waitMs: number): Promise<RedisUploadLock> {
    const started = performance.now();
    const deadline = started + waitMs;
    const releaseLocal = await this.local.acquire(id, waitMs);
    let lock: RedisUploadLock | undefined;
    try {
      const token = randomUUID();
      for (let delay = 5; ; delay = Math.min(delay * 2, 100)) {
        const sent = performance.now();
        const answer = await this.redis.eval(
          ACQUIRE,
          [...this.keys.epochKeys, this.keys.lock(id)],
          [...graceArgs(this.options.grace), token, this.leaseMs],
        );
        if (answer === 1) {
          lock = new RedisUploadLock(id, token, sent, this, releaseLocal);
          break;
        }
        const left = deadline - performance.now();
        if (left <= 0) {
          // Right after Redis lost its data, nobody gets a lock for one lease: the upload is
          // not busy, the service is recovering.
          if (answer === -1 && waitMs > 0) throw TusErrors.redisUnavailable();
          throw new LockTimeoutError(`upload ${id} is locked`);
        }
        await sleep(Math.min(delay, left));
      }
    } catch (e) {
      releaseLocal();
      throw e;
    }
    this.held.set(id, lock);
    lock.start();
    if (this.options.pathOf) {
      try {
        // lstat: whether something is there, never what a symlink points to (the storage
        // refuses anything but a regular file when it opens it).
        await lstat(this.options.pathOf(id));
      } catch (e) {
        await lock.release().catch(() => {});
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new LockTargetMissingError(id);
        throw e;
      }
    }
    return lock;
  }

  /** The lock this process holds on `id`, if any (the record store checks it). */
  heldLock(id: string): RedisUploadLock | undefined {
    return this.held.get(id);
  }

  /** Calls `listener` whenever a held lock is lost (the Nest module stops the write with it). */
  onLost(listener: (id: string, lock: RedisUploadLock) => void): () => void {
    this.lostListeners.add(listener);
    return () => this.lostListeners.delete(listener);
  }

  /** @internal */
  async renewLease(lock: RedisUploadLock): Promise<boolean> {
    const answer = await this.redis.eval(
      RENEW,
      [...this.keys.epochKeys, this.keys.lock(lock.id)],
      [...graceArgs(this.options.grace), lock.token, this.leaseMs],
      0,
    );
    return answer === 1;
  }

  /** @internal Compare-and-delete; when Redis is away the lease simply runs out. */
  async releaseLease(lock: RedisUploadLock): Promise<void> {
    if (this.held.get(lock.id) === lock) this.held.delete(lock.id);
    await this.redis.eval(RELEASE, [this.keys.lock(lock.id)], [lock.token], 0).catch(() => {});
  }

  /** @internal */
  notifyLost(lock: RedisUploadLock): void {
    for (const listener of [...this.lostListeners]) {
      try {
        listener(lock.id, lock);
      } catch {
        // A listener's failure must not keep the others from stopping their writes.
      }
    }
  }
}
