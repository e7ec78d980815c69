import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, utimes } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, freshKeys, quietLogger } from '../../test/support/redis-fixtures.js';
import { startRedisServer, type RedisServer } from '../../test/support/redis-server.js';
import { Janitor } from '../janitor/janitor.js';
import { TusHandler } from '../protocol/tus-handler.js';
import { UploadRecord } from '../core/upload-record.js';
import { FilesystemStorage } from '../storage/filesystem.storage.js';
import { UploadStorageService } from '../storage/upload-storage.service.js';
import { resolveTusOptions } from '../tus.options-validation.js';
import { coordinationProblems, redisCoordination } from './redis-coordination.js';
import { RedisJanitorLock } from './redis-janitor-lock.js';

let redis: RedisServer;
let root: string;

beforeAll(async () => {
  redis = await startRedisServer();
  root = await mkdtemp(join(tmpdir(), 'tussi-redis-coord-'));
});

afterAll(async () => {
  await redis.dispose();
  await rm(root, { recursive: true, force: true });
});

describe('the coordination option', () => {
  it('is checked when the application starts', () => {
    expect(coordinationProblems(undefined)).toEqual([]);
    expect(coordinationProblems({ redis: { url: 'redis://127.0.0.1:6379' } })).toEqual([]);
    expect(coordinationProblems({ redis: { url: 'http://x' } })).toEqual([
      'redis.url must be a redis:// or rediss:// URL',
    ]);
    expect(coordinationProblems({ redis: { url: 'rediss://h', lockLeaseMs: 10 } })).toEqual([
      'redis.lockLeaseMs must be an integer >= 300',
    ]);
    expect(coordinationProblems({})).toEqual(['redis must be an object with a url']);
    expect(() =>
      resolveTusOptions({
        uploadDir: '/u',
        completedDir: '/c',
        coordination: { redis: { url: 'nope' } },
      }),
    ).toThrow(
      'Invalid TusModule options: coordination: redis.url must be a redis:// or rediss:// URL',
    );
  });
});

describe('RedisJanitorLock', () => {
  it('lets one replica at a time run, and one scheduled run per interval', async () => {
    const keys = freshKeys();
    const a = connect(redis.url);
    const b = connect(redis.url);
    try {
      const lockA = new RedisJanitorLock(a, keys, { cooldownMs: 800, leaseMs: 1000 });
      const lockB = new RedisJanitorLock(b, keys, { cooldownMs: 800, leaseMs: 1000 });
      const held = await lockA.acquire(true);
      expect(held).not.toBeNull();
      expect(await lockB.acquire(true)).toBeNull();
      expect(await lockB.acquire(false)).toBeNull();
      // Renewed while held, past its lease.
      await new Promise((r) => setTimeout(r, 1200));
      expect(await lockB.acquire(false)).toBeNull();
      await held!.release();
      // Just ran: the other replica's schedule skips; a run by hand goes ahead.
      expect(await lockB.acquire(true)).toBeNull();
      const manual = await lockB.acquire(false);
      expect(manual).not.toBeNull();
      await manual!.release();
      await new Promise((r) => setTimeout(r, 900));
      const later = await lockB.acquire(true);
      expect(later).not.toBeNull();
      await later!.release();
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('keeps two janitors of two replicas from sweeping at once', async () => {
    const keys = freshKeys();
    const uploadDir = join(root, 'janitor-uploads');
    const storage = new FilesystemStorage({ directory: uploadDir, fsync: false, log: () => {} });
    const coordination = redisCoordination(
      { url: redis.url, keyPrefix: keys.prefix, lockLeaseMs: 1000, claimTimeoutMs: 1000 },
      {
        uploadDir,
        completedDir: join(root, 'janitor-completed'),
        fsync: false,
        logger: quietLogger(),
      },
    );
    try {
      await coordination.connection.run((c) => c.set(keys.epoch, '1'));
      const store = new UploadStorageService(
        storage,
        coordination.recordStore,
        coordination.locker,
      );
      const handler = new TusHandler({
        options: { maxMetadataSize: 4096, lockWaitMs: 1000, bodyIdleTimeoutMs: 0 },
        store,
        queue: coordination.completedQueue,
        logger: quietLogger(),
      });
      // A stale upload for the janitors to delete.
      const id = randomUUID();
      const record = new UploadRecord(10, 1, {});
      record.lastWrite = Date.now() / 1000 - 7200;
      await store.create(id, record);
      const old = new Date(Date.now() - 7_200_000);
      await utimes(storage.pathOf(id), old, old);
      const janitors = [0, 1].map(
        () => new Janitor(handler.context, { staleUploadAge: 3600 }, coordination.janitorLock),
      );
      let sweeps = 0;
      const list = storage.list.bind(storage);
      storage.list = () => {
        sweeps++;
        return list();
      };
      const summaries = await Promise.all(janitors.map((j) => j.run({ scheduled: true })));
      expect(summaries.map((s) => s.stale).sort()).toEqual([0, 1]);
      // Only one of them swept at all.
      expect(sweeps).toBe(1);
      expect(existsSync(storage.pathOf(id))).toBe(false);
    } finally {
      await coordination.close();
    }
  });
});
