import { afterAll, afterEach, beforeAll, describe, expect, it } from '@jest/globals';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, firedAt, freshKeys, until } from '../../test/support/redis-fixtures.js';
import { startRedisServer, type RedisServer } from '../../test/support/redis-server.js';
import { TusError } from '../protocol/tus-error.js';
import { LockTargetMissingError, LockTimeoutError } from '../storage/storage.interfaces.js';
import type { RedisConnection } from './redis-connection.js';
import type { RedisKeys } from './redis-keys.js';
import { RedisUploadLocker } from './redis-upload.locker.js';

let redis: RedisServer;
let dir: string;
const open: RedisConnection[] = [];

beforeAll(async () => {
  redis = await startRedisServer();
  dir = await mkdtemp(join(tmpdir(), 'tussi-redis-lock-'));
});

afterEach(async () => {
  await Promise.all(open.splice(0).map((c) => c.close()));
});

afterAll(async () => {
  await redis.dispose();
  await rm(dir, { recursive: true, force: true });
});

/** A replica's locker: its own connection, the shared keys. */
async function replica(keys: RedisKeys, leaseMs: number) {
  const connection = connect(redis.url);
  open.push(connection);
  // Connected first: on a loaded machine a fresh connection can take longer than the short
  // outage window the fixture gives every command.
  await connection.run((c) => c.ping(), 10_000);
  const locker = new RedisUploadLocker(connection, keys, {
    leaseMs,
    grace: { locksMs: leaseMs, queueMs: leaseMs },
  });
  return { connection, locker };
}

/** Keys whose epoch is already set, as in a running deployment (no grace period). */
async function runningKeys(): Promise<RedisKeys> {
  const keys = freshKeys();
  const connection = connect(redis.url);
  await connection.run((c) => c.set(keys.epoch, '1'));
  await connection.close();
  return keys;
}

describe('RedisUploadLocker', () => {
  it('lets one holder at a time have an upload, across replicas', async () => {
    const keys = await runningKeys();
    const a = await replica(keys, 2000);
    const b = await replica(keys, 2000);
    const id = randomUUID();
    const lock = await a.locker.acquire(id, 0);
    await expect(b.locker.acquire(id, 150)).rejects.toBeInstanceOf(LockTimeoutError);
    const waiting = b.locker.acquire(id, 2000);
    await new Promise((r) => setTimeout(r, 50));
    await lock.release();
    const next = await waiting;
    expect(await b.connection.run((c) => c.get(keys.lock(id)))).toBe(next.token);
    await next.release();
    expect(await b.connection.run((c) => c.exists(keys.lock(id)))).toBe(0);
  });

  it('keeps a lock past its lease while the holder renews it', async () => {
    const keys = await runningKeys();
    const a = await replica(keys, 1000);
    const b = await replica(keys, 1000);
    const id = randomUUID();
    const lock = await a.locker.acquire(id, 0);
    await expect(b.locker.acquire(id, 2500)).rejects.toBeInstanceOf(LockTimeoutError);
    expect(lock.signal.aborted).toBe(false);
    const ttl = await a.connection.run((c) => c.pttl(keys.lock(id)));
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(1000);
    await lock.release();
  });

  it('releases only its own lock (token compare-and-delete) and notices a takeover', async () => {
    const keys = await runningKeys();
    const a = await replica(keys, 600);
    const id = randomUUID();
    const lost: string[] = [];
    a.locker.onLost((lostId) => lost.push(lostId));
    const lock = await a.locker.acquire(id, 0);
    // Another holder got it (as if this holder's lease had run out).
    await a.connection.run((c) => c.set(keys.lock(id), 'someone-else', 'PX', 5000));
    const at = await firedAt(lock.signal);
    expect(lost).toEqual([id]);
    await expect(lock.assertHeld()).rejects.toMatchObject({ status: 503, code: 'ERR_LOCK_LOST' });
    await lock.release();
    expect(await a.connection.run((c) => c.get(keys.lock(id)))).toBe('someone-else');
    expect(at).toBeGreaterThan(0);
  });

  it('frees the lock of a dead holder once its lease ends, and the holder stops first', async () => {
    const keys = await runningKeys();
    const lease = 1000;
    const a = await replica(keys, lease);
    const b = await replica(keys, lease);
    const id = randomUUID();
    const lock = await a.locker.acquire(id, 0);
    const granted = Date.now();
    // The holder's connection dies: no more renewals, as when its replica is killed.
    a.connection.client.disconnect();
    const stoppedAt = firedAt(lock.signal);
    const next = await b.locker.acquire(id, 3000);
    const freedAfter = Date.now() - granted;
    // Once the lease ends, not at the end of the 3 s wait (the margin is for a loaded machine:
    // a run on 2 busy cores took 1.48 s).
    expect(freedAfter).toBeLessThanOrEqual(lease + 1000);
    // The old holder was told to stop writing a third of a lease before anyone could take over.
    expect((await stoppedAt) - granted).toBeLessThan(lease);
    await next.release();
    await lock.release();
  });

  it('stops the holder before the lease ends when Redis stops answering', async () => {
    const keys = await runningKeys();
    const lease = 1200;
    const a = await replica(keys, lease);
    const id = randomUUID();
    const lock = await a.locker.acquire(id, 0);
    const granted = Date.now();
    redis.freeze();
    try {
      const at = await firedAt(lock.signal);
      expect(at - granted).toBeLessThan(lease);
      expect(at - granted).toBeGreaterThanOrEqual((lease * 2) / 3 - 250);
    } finally {
      redis.thaw();
    }
    await expect(lock.assertHeld()).rejects.toMatchObject({ code: 'ERR_LOCK_LOST' });
    await lock.release();
  });

  it('after Redis lost its data, gives locks back to their holders and to nobody else for a lease', async () => {
    const keys = await runningKeys();
    const lease = 800;
    const a = await replica(keys, lease);
    const b = await replica(keys, lease);
    const id = randomUUID();
    const lock = await a.locker.acquire(id, 0);
    await a.connection.run((c) => c.flushall());
    // Nobody else gets the lock in the grace period: the service is recovering (503).
    const refused = await b.locker.acquire(id, 100).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(TusError);
    expect(refused).toMatchObject({ status: 503, code: 'ERR_REDIS_UNAVAILABLE' });
    // The holder takes its lock back with its next renewal.
    await until(
      async () => (await a.connection.run((c) => c.get(keys.lock(id)))) === lock.token,
      lease,
      'lock taken back',
    );
    expect(lock.signal.aborted).toBe(false);
    const other = randomUUID();
    await expect(b.locker.acquire(other, 0)).rejects.toBeInstanceOf(LockTimeoutError);
    await lock.release();
    // After the grace period, locks are granted again.
    const later = await b.locker.acquire(id, lease + 500);
    await later.release();
  });

  it('reports an upload whose data is gone as missing', async () => {
    const keys = await runningKeys();
    const connection = connect(redis.url);
    open.push(connection);
    await connection.run((c) => c.ping(), 10_000);
    const locker = new RedisUploadLocker(connection, keys, {
      leaseMs: 1000,
      grace: { locksMs: 1000, queueMs: 1000 },
      pathOf: (id) => join(dir, id),
    });
    const present = randomUUID();
    await writeFile(join(dir, present), '');
    const lock = await locker.acquire(present, 0);
    await lock.release();
    const absent = randomUUID();
    await expect(locker.acquire(absent, 0)).rejects.toBeInstanceOf(LockTargetMissingError);
    // ... and does not keep its lock.
    expect(await connection.run((c) => c.exists(keys.lock(absent)))).toBe(0);
  });

  it('answers 503 quickly while Redis is down, and works again when it is back', async () => {
    const keys = await runningKeys();
    const a = await replica(keys, 1000);
    await redis.stop();
    try {
      const started = Date.now();
      const error = await a.locker.acquire(randomUUID(), 3000).catch((e: unknown) => e);
      expect(error).toMatchObject({ status: 503, code: 'ERR_REDIS_UNAVAILABLE' });
      expect(Date.now() - started).toBeLessThan(2000);
    } finally {
      await redis.start();
    }
    // Back, but empty: the grace period of one lease, then locks again.
    await until(() => a.connection.isReady, 3000, 'reconnect');
    const lock = await a.locker.acquire(randomUUID(), 2500);
    await lock.release();
  });
});
