import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { CreateBucketCommand, ListObjectsV2Command, type S3Client } from '@aws-sdk/client-s3';
import { s3ClientOf, startCephRgw, type CephRgw } from '../support/ceph-rgw.js';
import { ensureCliBuilt, startServer, type ServerProcess } from '../support/cli-process.js';
import { request, type RawResponse } from '../support/http.js';
import { startRedisServer, type RedisServer } from '../support/redis-server.js';

/**
 * Three tussi-server replicas with Redis and one bucket of a real S3 server (Ceph RADOS
 * Gateway), each with its own scratch, completed and destination directories: no directory is
 * shared. A client sends each PATCH of an upload to another replica than the one before,
 * several uploads at once, and one replica is SIGKILLed in the middle of a PATCH. Every upload
 * is delivered once, by one replica's consumer, byte-identical, and the bucket is left with
 * receipts only.
 */

const MiB = 1024 * 1024;
const TUS = { 'Tus-Resumable': '1.0.0' };
const OCTETS = { ...TUS, 'Content-Type': 'application/offset+octet-stream' };
const UPLOADS = 4;
const SIZE = 13 * MiB + 321;
const PIECE = 3 * MiB;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const sha256 = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');
const statusOf = (res: RawResponse | null) => res?.status ?? 0;

describe('three replicas on S3 and Redis, no shared directory', () => {
  let gateway: CephRgw | undefined;
  let redis: RedisServer | undefined;
  let root: string;
  let s3: S3Client;
  const replicas: ServerProcess[] = [];
  const dead = new Set<number>();
  const bucket = `tussi-${randomBytes(4).toString('hex')}`;
  const prefix = 'rep/';

  const start = (n: number) =>
    startServer(
      [
        '--s3-bucket',
        bucket,
        '--s3-endpoint',
        gateway!.endpoint,
        '--s3-force-path-style',
        '--s3-prefix',
        prefix,
        '--s3-scratch-dir',
        join(root, `scratch-${n}`),
        '--completed-dir',
        join(root, `completed-${n}`),
        '--dest-dir',
        join(root, `dest-${n}`),
        '--redis-url',
        redis!.url,
        '--no-fsync',
        '--no-prompt',
      ],
      {
        cwd: root,
        env: {
          AWS_ACCESS_KEY_ID: gateway!.accessKeyId,
          AWS_SECRET_ACCESS_KEY: gateway!.secretAccessKey,
        },
      },
    );
  const baseOf = (n: number) => replicas[n].url.replace(/\/files\/$/, '');

  let turn = 0;
  /** The next live replica in turn, not `not`. */
  function next(not?: number): number {
    for (let i = 0; i < 6; i++) {
      const n = turn++ % 3;
      if (!dead.has(n) && n !== not) return n;
    }
    throw new Error('no live replica');
  }

  beforeAll(async () => {
    await ensureCliBuilt();
    [gateway, redis] = await Promise.all([startCephRgw(), startRedisServer()]);
    root = await mkdtemp(join(tmpdir(), 'tussi-s3-replicas-'));
    s3 = s3ClientOf(gateway);
    await s3.send(new CreateBucketCommand({ Bucket: bucket }));
    replicas.push(...(await Promise.all([0, 1, 2].map(start))));
  }, 180_000);

  afterAll(async () => {
    await Promise.all(replicas.map((r) => r.stop()));
    s3?.destroy();
    await redis?.dispose();
    await gateway?.stop();
    if (root) await rm(root, { recursive: true, force: true });
  }, 60_000);

  async function create(): Promise<string> {
    for (let attempt = 0; attempt < 100; attempt++) {
      const res = await request(baseOf(next()), {
        method: 'POST',
        path: '/files/',
        headers: { ...TUS, 'Upload-Length': String(SIZE) },
      }).catch(() => null);
      if (statusOf(res) === 201) return new URL(String(res!.headers.location)).pathname;
      await sleep(100);
    }
    throw new Error('creation kept failing');
  }

  async function offsetOf(location: string): Promise<number | undefined> {
    const res = await request(baseOf(next()), {
      method: 'HEAD',
      path: location,
      headers: TUS,
    }).catch(() => null);
    return statusOf(res) === 200 ? Number(res!.headers['upload-offset']) : undefined;
  }

  /**
   * Sends the upload in pieces, each PATCH to another replica; after a failure (a killed
   * replica, its lock still leased) asks another replica for the offset and goes on from there.
   */
  async function upload(data: Buffer, killMidPatch?: (n: number, offset: number) => boolean) {
    const location = await create();
    let offset = 0;
    let last: number | undefined;
    const deadline = Date.now() + 90_000;
    while (offset < data.length) {
      if (Date.now() > deadline) throw new Error(`${location} stuck at ${offset}`);
      const n = next(last);
      last = n;
      // This PATCH stops sending after 1 MiB, and its replica is killed while it waits.
      const kill = killMidPatch?.(n, offset) ?? false;
      if (kill) {
        setTimeout(() => {
          dead.add(n);
          replicas[n].child.kill('SIGKILL');
        }, 300);
      }
      const res = await request(baseOf(n), {
        method: 'PATCH',
        path: location,
        headers: { ...OCTETS, 'Upload-Offset': String(offset) },
        body: data.subarray(offset, Math.min(data.length, offset + PIECE)),
        timeoutMs: 30_000,
        ...(kill && { stallAfterBytes: MiB }),
      }).catch(() => null);
      if (statusOf(res) === 204) {
        offset = Number(res!.headers['upload-offset']);
        continue;
      }
      await sleep(300);
      offset = (await offsetOf(location)) ?? offset;
    }
    return location.split('/').pop()!;
  }

  /** Which replicas delivered `id` (its file and record in their destination). */
  async function deliveries(id: string): Promise<{ n: number; data: Buffer }[]> {
    const found: { n: number; data: Buffer }[] = [];
    for (const n of [0, 1, 2]) {
      const names = await readdir(join(root, `dest-${n}`)).catch(() => [] as string[]);
      const name = names.find((f) => f.startsWith(id) && !f.endsWith('.meta'));
      if (name && names.includes(`${name}.meta`)) {
        found.push({ n, data: await readFile(join(root, `dest-${n}`, name)) });
      }
    }
    return found;
  }

  it('delivers every upload once, byte-identical, with PATCHes spread over the replicas and one killed mid-PATCH', async () => {
    const sources = Array.from({ length: UPLOADS }, () => randomBytes(SIZE));
    let killed = false;
    const ids = await Promise.all(
      sources.map((data, i) =>
        upload(data, (n, offset) => {
          // The second upload's PATCH at 6 MiB: its replica dies while the body streams in.
          if (i !== 1 || offset < 6 * MiB || killed || n === 0) return false;
          killed = true;
          return true;
        }),
      ),
    );
    expect(killed).toBe(true);
    for (const [i, id] of ids.entries()) {
      let found: { n: number; data: Buffer }[] = [];
      for (let wait = 0; wait < 300 && found.length === 0; wait++) {
        found = await deliveries(id);
        if (found.length === 0) await sleep(100);
      }
      expect(found.length).toBe(1);
      expect(sha256(found[0].data)).toBe(sha256(sources[i]));
    }
    // Left in the bucket: the receipts HEAD answers from, nothing else (no part, record,
    // manifest, entry or finished object).
    const left = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
    const keys = (left.Contents ?? []).map((o) => o.Key!.slice(prefix.length));
    expect(keys.filter((k) => !k.endsWith('.receipt'))).toEqual([]);
    // Any live replica answers HEAD of a delivered upload from its receipt.
    const done = await request(baseOf(next()), {
      method: 'HEAD',
      path: `/files/${ids[0]}`,
      headers: TUS,
    });
    expect(done.headers['upload-offset']).toBe(String(SIZE));
  }, 180_000);
});
