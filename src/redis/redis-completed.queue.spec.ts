import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, freshKeys, quietLogger, until } from '../../test/support/redis-fixtures.js';
import { startRedisServer, type RedisServer } from '../../test/support/redis-server.js';
import { UploadRecord } from '../core/upload-record.js';
import { AbortError, TimeoutError } from '../queue/completed-upload.queue.js';
import { RedisCompletedQueue, RedisCompletedUpload } from './redis-completed.queue.js';
import type { RedisConnection } from './redis-connection.js';
import type { RedisKeys } from './redis-keys.js';

let redis: RedisServer;
let root: string;
let uploadDir: string;
let completedDir: string;
let keys: RedisKeys;
const replicas: { queue: RedisCompletedQueue; connection: RedisConnection }[] = [];

beforeAll(async () => {
  redis = await startRedisServer();
});

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'tussi-redis-queue-'));
  uploadDir = join(root, 'uploads');
  completedDir = join(root, 'completed');
  keys = freshKeys();
});

afterEach(async () => {
  for (const { queue, connection } of replicas.splice(0)) {
    await queue.close();
    await connection.close();
  }
  await rm(root, { recursive: true, force: true });
});

afterAll(async () => {
  await redis.dispose();
});

/** One replica's queue over the shared directories. */
async function replica(claimTimeoutMs = 2000, { epoch = true } = {}) {
  const logger = quietLogger();
  const connection = connect(redis.url, logger);
  if (epoch) await connection.run((c) => c.set(keys.epoch, '1'));
  const queue = new RedisCompletedQueue(connection, keys, {
    directory: completedDir,
    stagingDirectory: uploadDir,
    fsync: false,
    pollIntervalMs: 100,
    claimTimeoutMs,
    grace: { locksMs: claimTimeoutMs, queueMs: claimTimeoutMs },
    rebuildIntervalMs: 60_000,
    logger,
    log: () => {},
  });
  replicas.push({ queue, connection });
  return { queue, connection, logger };
}

/** A finished upload as finalize hands it over: data in staging, then `enqueue`. */
async function finish(queue: RedisCompletedQueue, content: string): Promise<string> {
  const id = randomUUID();
  await writeFile(join(uploadDir, id), content);
  const record = new UploadRecord(content.length, content.length, { filename: `${id}.txt` });
  record.finishedAt = new Date();
  await queue.enqueue(id, record);
  return id;
}

describe('RedisCompletedQueue', () => {
  it('hands each finished upload to exactly one of several replicas', async () => {
    const queues = await Promise.all([replica(), replica(), replica()]);
    const ids: string[] = [];
    for (let i = 0; i < 45; i++) ids.push(await finish(queues[i % 3].queue, `upload ${i}`));
    const taken = new Map<string, number>();
    const dest = join(root, 'dest');
    await Promise.all(
      queues.flatMap(({ queue }) =>
        [0, 1].map(async () => {
          for (;;) {
            try {
              await queue.withFile(
                async (upload) => {
                  taken.set(upload.name, (taken.get(upload.name) ?? 0) + 1);
                  await upload.save(`${dest}-${upload.name}`);
                },
                { timeout: 400 },
              );
            } catch (e) {
              if (e instanceof TimeoutError) return;
              throw e;
            }
          }
        }),
      ),
    );
    expect([...taken.keys()].sort()).toEqual([...ids].sort());
    expect([...taken.values()].every((n) => n === 1)).toBe(true);
    const left = (await readdir(completedDir)).filter((n) => !n.endsWith('.done'));
    expect(left).toEqual([]);
    const counts = await queues[0].connection.run((c) =>
      Promise.all([c.zcard(keys.pending), c.zcard(keys.processing), c.hlen(keys.owners)]),
    );
    expect(counts).toEqual([0, 0, 0]);
  });

  it('gives the claim of a consumer that died back to the queue after the claim timeout', async () => {
    const a = await replica(600);
    const b = await replica(600);
    const id = await finish(a.queue, 'precious');
    const held = await a.queue.waitForFile({ timeout: 1000 });
    expect(held.name).toBe(id);
    const claimedAt = Date.now();
    // While the holder lives, nobody else gets it.
    await expect(b.queue.waitForFile({ timeout: 700 })).rejects.toBeInstanceOf(TimeoutError);
    // The holder's replica dies: its renewals stop.
    a.connection.client.disconnect();
    const again = await b.queue.waitForFile({ timeout: 3000 });
    expect(again.name).toBe(id);
    expect(Date.now() - claimedAt).toBeLessThan(600 + 700 + 1500);
    // The first holder's late release leaves the files to the new holder.
    await held.release();
    expect(existsSync(again.path)).toBe(true);
    expect(await readFile(again.path, 'utf8')).toBe('precious');
    await again.release();
    expect(existsSync(again.path)).toBe(false);
  });

  it('tells a consumer its claim was lost', async () => {
    const a = await replica(400);
    const id = await finish(a.queue, 'x');
    const upload = await a.queue.waitForFile({ timeout: 1000 });
    expect(upload).toBeInstanceOf(RedisCompletedUpload);
    await a.connection.run((c) => c.hset(keys.owners, id, 'another-consumer'));
    await until(() => (upload as RedisCompletedUpload).signal.aborted, 1000, 'claim lost');
    await upload.release();
    expect(existsSync(join(completedDir, id))).toBe(true);
  });

  it('terminates a waiting upload, not one a consumer holds', async () => {
    const a = await replica();
    const ids = [await finish(a.queue, 'w'), await finish(a.queue, 'h')];
    // Enqueued within a millisecond, either may come first: the roles follow the claim.
    const claim = await a.queue.waitForFile({ timeout: 1000 });
    const held = claim.name;
    const waiting = ids.find((id) => id !== held)!;
    expect(ids).toContain(held);
    expect(await a.queue.remove(held)).toBe('held');
    expect(await a.queue.remove(waiting)).toBe('removed');
    expect(await a.queue.lookup(waiting)).toBeNull();
    expect(await a.queue.remove(randomUUID())).toBe('missing');
    await claim.release();
    // Taken uploads answer from their receipt until it expires.
    expect((await a.queue.lookup(held))?.offset).toBe(1);
    await expect(a.queue.waitForFile({ timeout: 300 })).rejects.toBeInstanceOf(TimeoutError);
  });

  it('expires old uploads nobody claimed, never a claimed one', async () => {
    const a = await replica();
    const ids = [await finish(a.queue, 'one'), await finish(a.queue, 'two')];
    ids.push(await finish(a.queue, 'three'));
    // Enqueued within a millisecond, any of them may come first: roles follow the claim.
    const holder = await a.queue.waitForFile({ timeout: 1000 });
    const claimed = holder.name;
    const [old, young] = ids.filter((id) => id !== claimed) as [string, string];
    const past = new Date(Date.now() - 3_600_000);
    for (const id of [old, claimed]) await utimes(join(completedDir, id), past, past);
    expect(await a.queue.expire(60_000)).toBe(1);
    expect(existsSync(join(completedDir, old))).toBe(false);
    expect(existsSync(join(completedDir, `${old}.meta`))).toBe(false);
    expect(existsSync(join(completedDir, claimed))).toBe(true);
    expect(existsSync(join(completedDir, young))).toBe(true);
    await holder.release();
    // The expired one is not handed out afterwards either.
    const next = await a.queue.waitForFile({ timeout: 1000 });
    expect(next.name).toBe(young);
    await next.release();
  });

  it('rebuilds the queue from the completed directory after Redis lost its data', async () => {
    const claimTimeout = 600;
    const a = await replica(claimTimeout);
    const ids = [await finish(a.queue, 'one'), await finish(a.queue, 'two')];
    await a.connection.run((c) => c.flushall());
    // Nothing in Redis now; within the grace period nothing comes back yet.
    expect(await a.queue.rebuild()).toBe(-1);
    await until(async () => (await a.queue.rebuild()) === 2, claimTimeout + 1000, 'rebuild');
    const got: string[] = [];
    for (let i = 0; i < 2; i++) {
      await a.queue.withFile(async (u) => void got.push(u.name), { timeout: 1000 });
    }
    expect(got.sort()).toEqual([...ids].sort());
  });

  it('keeps a claim across a Redis data loss: its holder takes it back, nobody else gets it', async () => {
    const claimTimeout = 900;
    const a = await replica(claimTimeout);
    const b = await replica(claimTimeout);
    const id = await finish(a.queue, 'kept');
    const held = await a.queue.waitForFile({ timeout: 1000 });
    await a.connection.run((c) => c.flushall());
    // After the grace period, B rebuilds: the upload is claimed again (by A), so not added.
    await until(
      async () => (await b.connection.run((c) => c.hget(keys.owners, id))) !== null,
      claimTimeout,
      'claim taken back',
    );
    await until(async () => (await b.queue.rebuild()) >= 0, claimTimeout + 1000, 'grace over');
    await expect(b.queue.waitForFile({ timeout: 300 })).rejects.toBeInstanceOf(TimeoutError);
    expect((held as RedisCompletedUpload).signal.aborted).toBe(false);
    await held.release();
    expect(existsSync(join(completedDir, id))).toBe(false);
  });

  it('keeps consumers waiting (not failing) while Redis is down, and finishes enqueues later', async () => {
    const a = await replica(500);
    await redis.stop();
    let id: string;
    try {
      // An upload finished while Redis is away is safe in the directory.
      id = await finish(a.queue, 'during the outage');
      expect(existsSync(join(completedDir, id))).toBe(true);
      await expect(a.queue.waitForFile({ timeout: 500 })).rejects.toBeInstanceOf(TimeoutError);
    } finally {
      await redis.start();
    }
    // Back (and empty): after the grace period the rebuild puts it in the queue.
    const upload = await a.queue.waitForFile({ timeout: 5000 });
    expect(upload.name).toBe(id);
    await upload.release();
  });

  it('stops waiting consumers on close', async () => {
    const a = await replica();
    const waiting = expect(a.queue.waitForFile()).rejects.toBeInstanceOf(AbortError);
    await new Promise((r) => setTimeout(r, 50));
    await a.queue.close();
    await waiting;
  });
});
