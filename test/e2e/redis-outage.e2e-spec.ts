import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { readFile, readdir, rm } from 'node:fs/promises';
import { Redis } from 'ioredis';
import { CompletedUploadQueue, type TusModuleOptions } from '../../src/index.js';
import {
  createTestApp,
  createUpload,
  headUpload,
  patchUpload,
  tempDirs,
  TUS,
  type TestApp,
} from '../support/app.js';
import type { RawResponse } from '../support/http.js';
import { startRedisServer, type RedisServer } from '../support/redis-server.js';

const LEASE_MS = 1500;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** The status of a response, 0 for none (see redis-replicas.e2e-spec.ts on http.ts errors). */
const statusOf = (res: Partial<RawResponse> | null) =>
  typeof res?.status === 'number' ? res.status : 0;

/**
 * Two replicas (in this process) sharing one directory and one Redis, while Redis goes away:
 * stopped (and back empty, as a Redis without persistence restarts) or frozen in the middle
 * of a PATCH. Writes get clear 503s, nothing is corrupted, and everything goes on once Redis
 * is back, the completed queue rebuilt from the completed directory.
 */
describe('Redis going away during uploads', () => {
  let redis: RedisServer;
  let spy: Redis;
  let dirs: Awaited<ReturnType<typeof tempDirs>>;
  let a: TestApp;
  let b: TestApp;
  let prefix: string;

  beforeAll(async () => {
    redis = await startRedisServer();
    spy = new Redis(redis.url, { lazyConnect: true, retryStrategy: () => 50 });
    spy.on('error', () => {});
    await spy.connect();
  });

  afterAll(async () => {
    spy.disconnect();
    await redis.dispose();
  });

  beforeEach(async () => {
    dirs = await tempDirs('tussi-redis-outage-');
    prefix = `o${Date.now()}:`;
    const options: Partial<TusModuleOptions> = {
      uploadDir: dirs.uploadDir,
      completedDir: dirs.completedDir,
      fsync: false,
      lockWaitMs: 500,
      janitor: false,
      queuePollIntervalMs: 100,
      coordination: {
        redis: {
          url: redis.url,
          keyPrefix: prefix,
          lockLeaseMs: LEASE_MS,
          claimTimeoutMs: LEASE_MS,
          commandTimeoutMs: 300,
          unavailableAfterMs: 300,
          queueRebuildIntervalMs: 500,
        },
      },
    };
    a = await createTestApp(options);
    b = await createTestApp(options);
    await graceOver();
  });

  afterEach(async () => {
    redis.thaw();
    await redis.start();
    await a.close();
    await b.close();
    await rm(dirs.root, { recursive: true, force: true });
  });

  /** Waits until the grace period a Redis that starts empty opens is over. */
  async function graceOver(): Promise<void> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const state = await spy
        .multi()
        .exists(`${prefix}epoch`)
        .exists(`${prefix}grace:locks`)
        .exists(`${prefix}grace:queue`)
        .exec()
        .catch(() => null);
      const [epoch, locks, queue] = (state ?? []).map(([, n]) => n);
      if (epoch === 1 && locks === 0 && queue === 0) return;
      if (Date.now() > deadline) throw new Error('the grace period did not end');
      await sleep(50);
    }
  }

  /** PATCHes until the upload has `data` whole (through `apps` in turn); bounded. */
  async function finish(id: string, data: Buffer, apps: TestApp[]): Promise<number[]> {
    const statuses: number[] = [];
    for (let attempt = 0; attempt < 100; attempt++) {
      const app = apps[attempt % apps.length];
      const head = await headUpload(app, id).catch(() => null);
      if (!head || statusOf(head.res) !== 200) {
        await sleep(100);
        continue;
      }
      if (head.offset === data.length) return statuses;
      const res = await patchUpload(app, id, head.offset, data.subarray(head.offset)).catch(
        () => null,
      );
      statuses.push(statusOf(res));
      if (statusOf(res) !== 204) await sleep(100);
    }
    throw new Error(`upload ${id} could not be finished: ${statuses.join(' ')}`);
  }

  async function consumeOne(app: TestApp, timeout = 8000): Promise<{ id: string; data: Buffer }> {
    const queue = app.app.get(CompletedUploadQueue);
    return queue.withFile(
      async (upload) => ({ id: upload.name, data: await readFile(upload.path) }),
      { timeout },
    );
  }

  it('answers 503 to writes while Redis is down, HEAD from the files, and goes on when it is back', async () => {
    const data = randomBytes(300 * 1024);
    const { id } = await createUpload(a, data.length);
    expect((await patchUpload(a, id, 0, data.subarray(0, 100 * 1024))).status).toBe(204);

    await redis.stop();
    const started = Date.now();
    const patch = await patchUpload(b, id, 100 * 1024, data.subarray(100 * 1024, 200 * 1024));
    expect(patch.status).toBe(503);
    expect(patch.body.toString()).toMatch(/^ERR_REDIS_UNAVAILABLE: /);
    expect(patch.headers['retry-after']).toBe('1');
    expect(Date.now() - started).toBeLessThan(3000);

    const before = (await readdir(dirs.uploadDir)).length;
    const post = await a.request({
      method: 'POST',
      path: '/files',
      headers: { ...TUS, 'Upload-Length': '10' },
    });
    expect(post.status).toBe(503);
    // A refused creation leaves nothing behind.
    expect((await readdir(dirs.uploadDir)).length).toBe(before);
    const del = await b.request({ method: 'DELETE', path: `/files/${id}`, headers: TUS });
    expect(del.status).toBe(503);
    // The record on the shared directory still answers.
    const head = await headUpload(b, id);
    expect(head.res.status).toBe(200);
    expect(head.offset).toBe(100 * 1024);
    expect(a.logged.warnings.join('\n')).toContain('Redis is unreachable');

    // Back, empty: after one lease of grace the upload goes on where it was.
    await redis.start();
    await finish(id, data, [b, a]);
    const delivered = await consumeOne(a);
    expect(delivered.id).toBe(id);
    expect(delivered.data.equals(data)).toBe(true);
  }, 30_000);

  it('stops a PATCH whose lock can no longer be renewed, before the lease ends, with nothing corrupted', async () => {
    const data = randomBytes(1024 * 1024);
    const { id } = await createUpload(a, data.length);
    let letGo: () => void = () => {};
    const held = new Promise<void>((resolve) => (letGo = resolve));
    const body = (async function* () {
      yield data.subarray(0, 200 * 1024);
      await held;
    })();
    const pending = a.request({
      method: 'PATCH',
      path: `/files/${id}`,
      headers: {
        ...TUS,
        'Content-Type': 'application/offset+octet-stream',
        'Upload-Offset': '0',
        'Content-Length': String(data.length),
      },
      body,
      timeoutMs: 10_000,
    });
    const lockKey = `${prefix}lock:${id}`;
    const deadline = Date.now() + 5000;
    while ((await spy.get(lockKey)) === null) {
      if (Date.now() > deadline) throw new Error('the PATCH never took the lock');
      await sleep(10);
    }
    await sleep(100);
    // Redis stops answering (a network partition, a stalled server).
    redis.freeze();
    const frozenAt = Date.now();
    let res: RawResponse;
    try {
      res = await pending;
    } finally {
      redis.thaw();
      letGo();
    }
    expect(res.status).toBe(503);
    expect(res.body.toString()).toMatch(/^ERR_(LOCK_LOST|REDIS_UNAVAILABLE): /);
    // The writer gave up before its lease could run out.
    expect(Date.now() - frozenAt).toBeLessThan(LEASE_MS);
    // The bytes of the cut request were not claimed: the record did not move.
    expect((await headUpload(b, id)).offset).toBe(0);

    await finish(id, data, [b, a]);
    const delivered = await consumeOne(b);
    expect(delivered.id).toBe(id);
    expect(delivered.data.equals(data)).toBe(true);
  }, 30_000);

  it('rebuilds the completed queue from the completed directory after a Redis restart', async () => {
    const done = randomBytes(64 * 1024);
    const { id: finished } = await createUpload(a, done.length);
    expect((await patchUpload(a, finished, 0, done)).status).toBe(204);
    const partial = randomBytes(128 * 1024);
    const { id: unfinished } = await createUpload(b, partial.length);
    expect((await patchUpload(b, unfinished, 0, partial.subarray(0, 1000))).status).toBe(204);

    // Redis restarts empty: the queue of finished uploads is gone from it.
    await redis.stop();
    await redis.start();
    // A finished upload still answers HEAD (from the completed directory).
    const head = await headUpload(b, finished);
    expect(head.res.status).toBe(200);
    expect(head.offset).toBe(done.length);

    await finish(unfinished, partial, [a, b]);
    const got = [await consumeOne(b), await consumeOne(a)];
    expect(got.map((g) => g.id).sort()).toEqual([finished, unfinished].sort());
    expect(got.find((g) => g.id === finished)!.data.equals(done)).toBe(true);
    expect(got.find((g) => g.id === unfinished)!.data.equals(partial)).toBe(true);
    // Each once: nothing more in the queue.
    await expect(consumeOne(a, 500)).rejects.toThrow('no completed upload');
  }, 30_000);
});
