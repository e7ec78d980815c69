import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, freshKeys } from '../../test/support/redis-fixtures.js';
import { startRedisServer, type RedisServer } from '../../test/support/redis-server.js';
import { UploadRecord } from '../core/upload-record.js';
import { FilesystemRecordStore } from '../storage/filesystem-record.store.js';
import type { RedisConnection } from './redis-connection.js';
import { RedisRecordStore } from './redis-record.store.js';
import { RedisUploadLocker } from './redis-upload.locker.js';

let redis: RedisServer;
let dir: string;
const open: RedisConnection[] = [];

beforeAll(async () => {
  redis = await startRedisServer();
  dir = await mkdtemp(join(tmpdir(), 'tussi-redis-records-'));
});

afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()));
});

afterAll(async () => {
  await redis.dispose();
  await rm(dir, { recursive: true, force: true });
});

/** One replica's record store (and locker) over the shared directory. */
async function replica() {
  const keys = sharedKeys;
  const connection = connect(redis.url);
  open.push(connection);
  await connection.run((c) => c.set(keys.epoch, '1'));
  const files = new FilesystemRecordStore(dir, false);
  const locker = new RedisUploadLocker(connection, keys, {
    leaseMs: 2000,
    grace: { locksMs: 2000, queueMs: 2000 },
  });
  const store = new RedisRecordStore(files, connection, keys, locker, { ttlMs: 60_000 });
  return { connection, files, locker, store };
}
const sharedKeys = freshKeys();

describe('RedisRecordStore', () => {
  it('keeps the .meta file as the truth and caches it in Redis', async () => {
    const { connection, files, store } = await replica();
    const id = randomUUID();
    expect(await store.get(id)).toBeNull();
    await store.put(id, new UploadRecord(10, 0, { filename: 'a.bin' }));
    expect((await files.get(id))?.metadata).toEqual({ filename: 'a.bin' });
    const cached = await connection.run((c) => c.get(sharedKeys.record(id)));
    expect(JSON.parse(cached!)).toMatchObject({ length: 10, offset: 0 });
    expect((await store.get(id))?.length).toBe(10);
    expect(await store.list()).toContain(id);

    await store.remove(id);
    expect(existsSync(files.pathOf(id))).toBe(false);
    expect(await store.get(id)).toBeNull();
  });

  it('loses nothing when Redis restarts empty: the cache fills again from the files', async () => {
    const { connection, store } = await replica();
    const id = randomUUID();
    await store.put(id, new UploadRecord(7, 3, {}));
    await connection.run((c) => c.del(sharedKeys.record(id)));
    expect((await store.get(id))?.offset).toBe(3);
    expect(await connection.run((c) => c.exists(sharedKeys.record(id)))).toBe(1);
  });

  it('reads the file under the lock, so a holder never acts on a stale cache', async () => {
    const { files, locker, store } = await replica();
    const id = randomUUID();
    await store.put(id, new UploadRecord(10, 0, {}));
    // The file moved on behind the cache's back (a replica whose cache update failed).
    await files.put(id, new UploadRecord(10, 4, {}));
    expect((await store.get(id))?.offset).toBe(0);
    const lock = await locker.acquire(id, 0);
    expect((await store.get(id))?.offset).toBe(4);
    await lock.release();
  });

  it('refuses to move the record when another replica moved it meanwhile', async () => {
    const a = await replica();
    const id = randomUUID();
    await a.store.put(id, new UploadRecord(10, 0, {}));
    const lock = await a.locker.acquire(id, 0);
    const record = (await a.store.get(id))!;
    // Another replica wrote bytes and moved the offset (its lease had taken over).
    await a.files.put(id, new UploadRecord(10, 6, {}));
    record.offset = 3;
    await expect(a.store.put(id, record)).rejects.toMatchObject({
      status: 503,
      code: 'ERR_LOCK_LOST',
    });
    expect((await a.files.get(id))?.offset).toBe(6);
    await lock.release();
  });

  it('refuses to move the record under a lock that was lost', async () => {
    const a = await replica();
    const id = randomUUID();
    await a.store.put(id, new UploadRecord(10, 0, {}));
    const lock = await a.locker.acquire(id, 0);
    const record = (await a.store.get(id))!;
    await a.connection.run((c) => c.set(sharedKeys.lock(id), 'another-holder'));
    record.offset = 5;
    await expect(a.store.put(id, record)).rejects.toMatchObject({ code: 'ERR_LOCK_LOST' });
    expect((await a.files.get(id))?.offset).toBe(0);
    await lock.release();
    await a.connection.run((c) => c.del(sharedKeys.lock(id)));
  });

  it('moves the record over its own writes, several times under one lock', async () => {
    const a = await replica();
    const id = randomUUID();
    await a.store.put(id, new UploadRecord(10, 0, {}));
    const lock = await a.locker.acquire(id, 0);
    const record = (await a.store.get(id))!;
    for (const offset of [2, 5, 10]) {
      record.offset = offset;
      await a.store.put(id, record);
    }
    await lock.release();
    expect((await a.store.get(id))?.offset).toBe(10);
  });

  it('reads from the files while Redis is down, and refuses to store without it', async () => {
    const a = await replica();
    const id = randomUUID();
    await a.store.put(id, new UploadRecord(10, 2, {}));
    await redis.stop();
    try {
      expect((await a.store.get(id))?.offset).toBe(2);
      const fresh = randomUUID();
      await expect(a.store.put(fresh, new UploadRecord(1, 0, {}))).rejects.toMatchObject({
        status: 503,
        code: 'ERR_REDIS_UNAVAILABLE',
      });
      expect(await a.files.get(fresh)).toBeNull();
    } finally {
      await redis.start();
    }
  });
});
