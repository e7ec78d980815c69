import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { ensureBuilt } from '../support/child-server.js';
import { request, sha256, type RawResponse } from '../support/http.js';
import { startRedisServer, type RedisServer } from '../support/redis-server.js';
import { startReplica, type Replica, type ReplicaConfig } from '../support/redis-replicas.js';

const TUS = { 'Tus-Resumable': '1.0.0' };
const LEASE_MS = 1500;
const CLAIM_MS = 2000;
const PREFIX = 'e2e:';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/**
 * The status of a response, 0 for none: a request node:http failed (a connection reset by a
 * killed replica) is caught as `null`, one cut before any response comes back with status 0.
 */
const statusOf = (res: RawResponse | null) => res?.status ?? 0;

/**
 * Three replicas (separate node processes on three ports) sharing one upload directory and one
 * Redis, driven by a client that sends each PATCH of an upload to another replica than the
 * previous one; one replica is killed with SIGKILL in the middle of a PATCH.
 */
describe('several replicas coordinated through Redis', () => {
  let redis: RedisServer;
  let root: string;
  let config: ReplicaConfig;
  let replicas: Replica[] = [];
  const dead = new Set<Replica>();
  let spy: Redis;

  beforeAll(async () => {
    await ensureBuilt();
    redis = await startRedisServer();
    root = await mkdtemp(join(tmpdir(), 'tussi-replicas-'));
    config = {
      uploadDir: join(root, 'uploads'),
      completedDir: join(root, 'completed'),
      destDir: join(root, 'dest'),
      redisUrl: redis.url,
      keyPrefix: PREFIX,
      lockLeaseMs: LEASE_MS,
      claimTimeoutMs: CLAIM_MS,
      lockWaitMs: 1000,
    };
    await mkdir(config.destDir, { recursive: true });
    replicas = await Promise.all(['r0', 'r1', 'r2'].map((name) => startReplica(name, config)));
    spy = new Redis(redis.url, { lazyConnect: true });
    await spy.connect();
    // A Redis that starts empty opens one lease of grace (see RedisKeys): let it pass.
    const deadline = Date.now() + 10_000;
    while (
      (await spy.exists(`${PREFIX}epoch`)) === 0 ||
      (await spy.exists(`${PREFIX}grace:locks`))
    ) {
      if (Date.now() > deadline) throw new Error('the grace period did not end');
      await sleep(50);
    }
  }, 60_000);

  afterAll(async () => {
    await Promise.all(replicas.map((r) => r.stop()));
    spy?.disconnect();
    await redis?.dispose();
    await rm(root, { recursive: true, force: true });
  });

  let turn = 0;
  /** The next live replica in turn, never `not` (the one the previous PATCH went to). */
  function nextReplica(not?: Replica): Replica {
    for (let i = 0; i < replicas.length * 2; i++) {
      const replica = replicas[turn++ % replicas.length];
      if (!dead.has(replica) && replica !== not) return replica;
    }
    throw new Error('no live replica');
  }

  async function create(length: number): Promise<string> {
    for (let attempt = 0; attempt < 50; attempt++) {
      const res = await request(nextReplica().baseUrl, {
        method: 'POST',
        path: '/files',
        headers: { ...TUS, 'Upload-Length': String(length) },
      }).catch(() => null);
      if (res && statusOf(res) === 201)
        return new URL(String(res.headers.location)).pathname.split('/').pop()!;
      await sleep(100);
    }
    throw new Error('creation kept failing');
  }

  async function headOffset(id: string): Promise<number | undefined> {
    const res = await request(nextReplica().baseUrl, {
      method: 'HEAD',
      path: `/files/${id}`,
      headers: TUS,
    }).catch(() => null);
    return res && statusOf(res) === 200 ? Number(res.headers['upload-offset']) : undefined;
  }

  interface Sent {
    replica: string;
    status: number;
  }

  /**
   * Sends the rest of `data` from `offset`, `chunk` bytes per PATCH, each PATCH to another
   * replica than the last; after a failure (the replica died, the lock is still held, 503) it
   * asks a replica for the offset and goes on. Bounded in attempts.
   */
  async function sendRest(
    id: string,
    data: Buffer,
    chunk: number,
    offset: number,
    sent: Sent[],
    last?: Replica,
  ): Promise<void> {
    for (let attempt = 0; offset < data.length; attempt++) {
      if (attempt > 200) throw new Error(`upload ${id} made no progress`);
      const replica = nextReplica(last);
      const res = await request(replica.baseUrl, {
        method: 'PATCH',
        path: `/files/${id}`,
        headers: {
          ...TUS,
          'Content-Type': 'application/offset+octet-stream',
          'Upload-Offset': String(offset),
        },
        body: data.subarray(offset, offset + chunk),
      }).catch(() => null);
      const status = statusOf(res);
      sent.push({ replica: replica.name, status });
      last = replica;
      if (status === 204 && res) {
        offset = Number(res.headers['upload-offset']);
        continue;
      }
      expect([0, 409, 423, 503]).toContain(status);
      await sleep(100);
      offset = (await headOffset(id)) ?? offset;
    }
  }

  it('completes concurrent uploads byte-identical, each delivered once, through a replica killed mid-PATCH', async () => {
    const uploads = Array.from({ length: 5 }, (_, i) => ({
      data: randomBytes(2 * 1024 * 1024 + i * 300 * 1024),
      id: '',
      sent: [] as Sent[],
    }));
    const victimUpload = { data: randomBytes(2 * 1024 * 1024), id: '', sent: [] as Sent[] };
    const victim = replicas[2];

    // The victim's PATCH: 256 KiB, then nothing more until the replica is killed.
    victimUpload.id = await create(victimUpload.data.length);
    let letGo: () => void = () => {};
    const held = new Promise<void>((resolve) => (letGo = resolve));
    const body = (async function* () {
      yield victimUpload.data.subarray(0, 256 * 1024);
      await held;
    })();
    const cut = request(victim.baseUrl, {
      method: 'PATCH',
      path: `/files/${victimUpload.id}`,
      headers: {
        ...TUS,
        'Content-Type': 'application/offset+octet-stream',
        'Upload-Offset': '0',
        'Content-Length': String(victimUpload.data.length),
      },
      body,
      timeoutMs: 30_000,
    });

    // Meanwhile, concurrent uploads through every replica.
    const others = Promise.all(
      uploads.map(async (u) => {
        u.id = await create(u.data.length);
        await sendRest(u.id, u.data, 128 * 1024, 0, u.sent);
      }),
    );

    // Kill the victim while it holds the upload's lock, in the middle of the PATCH.
    const lockKey = `${PREFIX}lock:${victimUpload.id}`;
    const deadline = Date.now() + 10_000;
    while ((await spy.get(lockKey)) === null) {
      if (Date.now() > deadline) throw new Error('the victim never locked the upload');
      await sleep(10);
    }
    await sleep(200);
    const token = await spy.get(lockKey);
    const ttl = await spy.pttl(lockKey);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(LEASE_MS);
    dead.add(victim);
    const killedAt = Date.now();
    await victim.kill();
    letGo();
    expect(statusOf(await cut.catch(() => null))).toBe(0);

    // The victim's upload goes on at once through the other replicas, from the offset they
    // report (the first PATCH may wait for the dead replica's lease, or get 423 and retry) ...
    const offset = (await headOffset(victimUpload.id)) ?? 0;
    expect(offset).toBeLessThan(victimUpload.data.length);
    const resumed = sendRest(
      victimUpload.id,
      victimUpload.data,
      512 * 1024,
      offset,
      victimUpload.sent,
    );

    // ... and no lock outlives its lease: the dead replica's lock is gone within one lease.
    while ((await spy.get(lockKey)) === token) {
      expect(Date.now() - killedAt).toBeLessThanOrEqual(LEASE_MS + 300);
      await sleep(20);
    }
    expect(Date.now() - killedAt).toBeLessThanOrEqual(LEASE_MS + 300);
    await resumed;
    await others;

    const all = [...uploads, victimUpload];
    // Each PATCH of an upload went to another replica than the one before.
    for (const u of uploads) {
      const names = u.sent.map((s) => s.replica);
      expect(names.every((n, i) => i === 0 || n !== names[i - 1])).toBe(true);
      expect(new Set(names).size).toBeGreaterThan(1);
    }

    // Every upload is delivered by the queue, exactly once, byte-identical.
    const ids = all.map((u) => u.id).sort();
    const until = Date.now() + 20_000;
    while ((await readdir(config.destDir)).length < ids.length) {
      if (Date.now() > until)
        throw new Error(`delivered: ${(await readdir(config.destDir)).length}/${ids.length}`);
      await sleep(100);
    }
    expect((await readdir(config.destDir)).sort()).toEqual(ids);
    for (const u of all) {
      expect(sha256(await readFile(join(config.destDir, u.id)))).toBe(sha256(u.data));
    }
    const delivered = replicas.flatMap((r) => r.delivered);
    expect(delivered.sort()).toEqual(ids);

    // HEAD still answers for finished uploads, on any replica.
    for (const u of all) expect(await headOffset(u.id)).toBe(u.data.length);

    // Nothing is left in Redis: no lock, no claim, nothing waiting.
    expect(await spy.keys(`${PREFIX}lock:*`)).toEqual([]);
    expect(await spy.zcard(`${PREFIX}queue:pending`)).toBe(0);
    expect(await spy.zcard(`${PREFIX}queue:processing`)).toBe(0);
    const leftovers = (await readdir(config.completedDir)).filter((n) => !n.endsWith('.done'));
    expect(leftovers).toEqual([]);
    for (const r of replicas.filter((r) => !dead.has(r))) {
      expect(r.stderr()).not.toContain('consumer:');
    }
  }, 60_000);

  it('an upload is its owner’s on every replica: another principal gets 404 everywhere', async () => {
    const on = (principal: string) => ({ ...TUS, 'X-Test-Principal': principal });
    const ask = (options: Parameters<typeof request>[1]) =>
      request(nextReplica().baseUrl, options).then(statusOf);
    const created = await request(nextReplica().baseUrl, {
      method: 'POST',
      path: '/files',
      headers: { ...on('alice'), 'Upload-Length': '10', 'Upload-Concat': 'partial' },
    });
    expect(statusOf(created)).toBe(201);
    const id = new URL(String(created.headers.location)).pathname.split('/').pop()!;
    const patch = (principal: string, offset: number, body: string) =>
      ask({
        method: 'PATCH',
        path: `/files/${id}`,
        headers: {
          ...on(principal),
          'Content-Type': 'application/offset+octet-stream',
          'Upload-Offset': String(offset),
        },
        body: Buffer.from(body),
      });
    expect(await patch('alice', 0, 'hello')).toBe(204);
    for (let i = 0; i < replicas.length; i++) {
      expect(await ask({ method: 'HEAD', path: `/files/${id}`, headers: on('bob') })).toBe(404);
      expect(await patch('bob', 5, 'EVIL!')).toBe(404);
      expect(await ask({ method: 'DELETE', path: `/files/${id}`, headers: on('bob') })).toBe(404);
      const final = await ask({
        method: 'POST',
        path: '/files',
        headers: { ...on('bob'), 'Upload-Concat': `final;/files/${id}` },
      });
      expect(final).toBe(404);
    }
    const head = await request(nextReplica().baseUrl, {
      method: 'HEAD',
      path: `/files/${id}`,
      headers: on('alice'),
    });
    expect(statusOf(head)).toBe(200);
    expect(head.headers['upload-offset']).toBe('5');
    expect(await patch('alice', 5, 'world')).toBe(204);
  }, 30_000);
});
