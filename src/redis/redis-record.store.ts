import { TusErrors } from '../protocol/tus-error.js';
import { UploadRecord } from '../core/upload-record.js';
import type { UploadRecordStore } from '../storage/storage.interfaces.js';
import type { RedisConnection } from './redis-connection.js';
import type { RedisKeys } from './redis-keys.js';
import type { RedisUploadLocker } from './redis-upload.locker.js';

/** What the cache holds for an upload that has no record (deleted or finished). */
const TOMBSTONE = '-';

export interface RedisRecordStoreOptions {
  /** How long a cached record lives. @default 60000 */
  ttlMs?: number;
}

/**
 * The `.meta` records on the shared directory, the source of truth, with a cache in Redis in
 * front for readers that do not hold the upload's lock (HEAD, concatenation, the janitor).
 * Nothing is lost when Redis restarts empty: the cache fills again from the files.
 *
 * - Under the upload's lock (held by this process), reads go to the file, and `put` first checks
 *   with Redis that the lock is still held and that the record on disk still has the offset
 *   read under this lock: a holder whose lease ran out never moves the record over bytes
 *   another replica wrote.
 * - A reader without the lock fills the cache with `SET NX`, so it can never overwrite a newer
 *   record put meanwhile; `put` and `remove` overwrite it. When Redis cannot be reached, reads
 *   go to the files, and cache entries that could not be updated are deleted when it is back.
 */
export class RedisRecordStore implements UploadRecordStore {
  private readonly ttlMs: number;
  /** Cache entries that may be stale because an update could not reach Redis. */
  private readonly dirty = new Set<string>();

  constructor(
    readonly files: UploadRecordStore,
    private readonly redis: RedisConnection,
    private readonly keys: RedisKeys,
    private readonly locker?: RedisUploadLocker,
    options: RedisRecordStoreOptions = {},
  ) {
    this.ttlMs = options.ttlMs ?? 60_000;
    redis.onReadyEvent(() => void this.flushDirty());
  }

  async get(id: string): Promise<UploadRecord | null> {
    const lock = this.locker?.heldLock(id);
    if (lock) {
      // Under the lock: the file, always; and remember the offset this request starts from.
      const record = await this.files.get(id);
      lock.expectedOffset = record?.offset;
      void this.cache(id, record, 'overwrite');
      return record;
    }
    let cached: string | null;
    try {
      cached = await this.redis.run((c) => c.get(this.keys.record(id)), 0);
    } catch {
      return this.files.get(id);
    }
    if (cached === TOMBSTONE) return null;
    if (cached !== null) {
      try {
        return UploadRecord.fromJSON(JSON.parse(cached));
      } catch {
        // A damaged entry: the file decides.
      }
    }
    const record = await this.files.get(id);
    void this.cache(id, record, 'if-absent');
    return record;
  }

  async put(id: string, record: UploadRecord): Promise<void> {
    const lock = this.locker?.heldLock(id);
    if (lock) {
      // The lease is checked (and extended) right before the record moves.
      await lock.assertHeld();
      if (lock.expectedOffset !== undefined) {
        const current = await this.files.get(id);
        if (current && current.offset !== lock.expectedOffset) throw TusErrors.lockLost();
      }
    } else {
      // Without a lock (a creation): Redis must be there before anything is stored, so a
      // refused request leaves no record behind that the cache would not know.
      await this.redis.run((c) => c.del(this.keys.record(id)));
    }
    await this.files.put(id, record);
    if (lock) lock.expectedOffset = record.offset;
    await this.cache(id, record, 'overwrite');
  }

  async remove(id: string): Promise<void> {
    await this.files.remove(id);
    // A tombstone rather than a delete: a reader that read the file just before cannot put the
    // old record back (its SET NX fails).
    await this.cache(id, null, 'overwrite');
  }

  list(): Promise<string[]> {
    return this.files.list();
  }

  async sweep(ageMs: number): Promise<number> {
    return (await this.files.sweep?.(ageMs)) ?? 0;
  }

  /** Drops the cache entry of `id` (tests, tooling). */
  async invalidate(id: string): Promise<void> {
    await this.redis.run((c) => c.del(this.keys.record(id)));
  }

  private async cache(
    id: string,
    record: UploadRecord | null,
    mode: 'overwrite' | 'if-absent',
  ): Promise<void> {
    const value = record ? JSON.stringify(record) : TOMBSTONE;
    const key = this.keys.record(id);
    try {
      await this.redis.run(
        (c) =>
          mode === 'overwrite'
            ? c.set(key, value, 'PX', this.ttlMs)
            : c.set(key, value, 'PX', this.ttlMs, 'NX'),
        0,
      );
    } catch {
      if (mode === 'overwrite') this.dirty.add(id);
    }
  }

  private async flushDirty(): Promise<void> {
    const ids = [...this.dirty];
    this.dirty.clear();
    if (ids.length === 0) return;
    try {
      await this.redis.run((c) => c.del(...ids.map((id) => this.keys.record(id))), 0);
    } catch {
      for (const id of ids) this.dirty.add(id);
    }
  }
}
