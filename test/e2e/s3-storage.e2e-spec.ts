import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import {
  CreateBucketCommand,
  CreateMultipartUploadCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  type S3Client,
} from '@aws-sdk/client-s3';
import { UploadRecord } from '../../src/core/upload-record.js';
import { S3RecordStore } from '../../src/s3/s3-record.store.js';
import { S3Storage } from '../../src/s3/s3.storage.js';
import { nextPartSize } from '../../src/s3/s3-manifest.js';
import { startCephRgw, type CephRgw } from '../support/ceph-rgw.js';

/**
 * The S3 storage against a real S3 server (Ceph RADOS Gateway): bytes go into multipart
 * uploads part by part, what is left below a part is kept as a trailing piece, a write whose
 * offset was never stored is undone, and a completed upload is one object with every byte.
 */

const MiB = 1024 * 1024;
const sha256 = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

function chunked(data: Buffer, size = 64 * 1024): Readable {
  const chunks: Buffer[] = [];
  for (let i = 0; i < data.length; i += size) chunks.push(data.subarray(i, i + size));
  return Readable.from(chunks);
}

const writeOptions = { limit: Number.MAX_SAFE_INTEGER, idleTimeoutMs: 0 };

describe('S3 storage on a real S3 server', () => {
  let gateway: CephRgw | undefined;
  let client: S3Client;
  let storage: S3Storage;
  let records: S3RecordStore;
  let scratch: string;
  const bucket = `tussi-${randomBytes(4).toString('hex')}`;
  const prefix = 'uploads/';

  beforeAll(async () => {
    gateway = await startCephRgw();
    scratch = await mkdtemp(join(tmpdir(), 'tussi-s3-scratch-'));
    const options = {
      bucket,
      prefix,
      endpoint: gateway.endpoint,
      region: gateway.region,
      forcePathStyle: true,
      partSize: 5 * MiB,
      scratchDir: scratch,
      client: {
        credentials: {
          accessKeyId: gateway.accessKeyId,
          secretAccessKey: gateway.secretAccessKey,
        },
      },
    };
    storage = new S3Storage(options);
    client = storage.client;
    await client.send(new CreateBucketCommand({ Bucket: bucket }));
    records = new S3RecordStore(client, bucket, prefix);
  }, 120_000);

  afterAll(async () => {
    await storage?.close();
    await gateway?.stop();
    if (scratch) await rm(scratch, { recursive: true, force: true });
  }, 60_000);

  async function objectBytes(key: string): Promise<Buffer> {
    const got = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    return Buffer.from(await got.Body!.transformToByteArray());
  }

  async function keysOf(id: string): Promise<string[]> {
    const listed = await client.send(
      new ListObjectsV2Command({ Bucket: bucket, Prefix: `${prefix}${id}` }),
    );
    return (listed.Contents ?? []).map((o) => o.Key!.slice(prefix.length + id.length)).sort();
  }

  it('says clearly when the bucket is missing or the credentials are refused', async () => {
    await expect(storage.check()).resolves.toBeUndefined();
    const missing = new S3Storage({ ...storage['options'], bucket: 'no-such-bucket-here' }, client);
    await expect(missing.check()).rejects.toThrow(/no-such-bucket-here.*does not exist/);
    const refused = new S3Storage({
      ...storage['options'],
      client: { credentials: { accessKeyId: 'nobody', secretAccessKey: 'wrong' } },
    });
    await expect(refused.check()).rejects.toThrow(/access denied/);
    await refused.close();
  });

  it('streams PATCH-sized pieces into parts, keeps the rest as a trailing piece, completes into one object', async () => {
    const id = randomUUID();
    const data = randomBytes(13 * MiB + 12345);
    await storage.create(id, data.length, {
      filename: 'report ü.pdf',
      filetype: 'application/pdf',
    });
    // Pieces that end below, across and exactly at part boundaries.
    const cuts = [3 * MiB, 3 * MiB + 17, 10 * MiB, 10 * MiB + 1, data.length];
    let offset = 0;
    for (const cut of cuts) {
      const result = await storage.write(
        id,
        offset,
        chunked(data.subarray(offset, cut)),
        writeOptions,
      );
      expect(result).toMatchObject({ bytes: cut - offset, ended: true });
      expect(result.error).toBeUndefined();
      offset = cut;
      if (cut === 10 * MiB + 1) {
        const open = await storage.manifest(id);
        expect(open!.parts.map((p) => p.size)).toEqual([5 * MiB, 5 * MiB]);
        expect(open!.tail!.size).toBe(1);
        // Only the current trailing piece and the one before it are kept.
        const tails = (await keysOf(id)).filter((k) => k.startsWith('.tail.'));
        expect(tails.length).toBeLessThanOrEqual(2);
      }
    }
    // The write that brought the last byte sent the rest as the last part: no trailing piece.
    const manifest = await storage.manifest(id);
    expect(manifest!.end).toBe(data.length);
    expect(manifest!.parts.map((p) => p.size)).toEqual([5 * MiB, 5 * MiB, 3 * MiB + 12345]);
    expect(manifest!.tail).toBeNull();

    await storage.complete(id);
    await storage.complete(id); // again, as after a crash: nothing changes
    const whole = await objectBytes(`${prefix}${id}`);
    expect(sha256(whole)).toBe(sha256(data));
    const head = await client.send(
      new HeadObjectCommand({ Bucket: bucket, Key: `${prefix}${id}` }),
    );
    expect(head.ContentType).toBe('application/pdf');
    expect(head.ContentDisposition).toBe(
      `attachment; filename="report _.pdf"; filename*=UTF-8''report%20%C3%BC.pdf`,
    );
    expect(await keysOf(id)).toEqual(['', '.upload']);

    // Ranged reads of the completed object (concatenation reads partials this way).
    const chunks: Buffer[] = [];
    for await (const c of storage.read(id, 5 * MiB - 3, 10)) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks)).toEqual(data.subarray(5 * MiB - 3, 5 * MiB + 7));

    await storage.remove(id);
    expect(await keysOf(id)).toEqual([]);
  });

  it('undoes a write whose offset was never stored, and keeps every acknowledged byte', async () => {
    const id = randomUUID();
    const data = randomBytes(7 * MiB);
    await storage.create(id, data.length);
    const first = await storage.write(id, 0, chunked(data.subarray(0, 2 * MiB)), writeOptions);
    expect(first.bytes).toBe(2 * MiB);
    // A write the protocol refused (checksum mismatch): garbage, then the offset stays 2 MiB.
    const refused = await storage.write(id, 2 * MiB, chunked(randomBytes(4 * MiB)), writeOptions);
    expect(refused.bytes).toBe(4 * MiB);
    // The client resumes at 2 MiB: the refused bytes are gone, the first ones kept.
    const again = await storage.write(id, 2 * MiB, chunked(data.subarray(2 * MiB)), writeOptions);
    expect(again.bytes).toBe(5 * MiB);
    await storage.complete(id);
    expect(sha256(await objectBytes(`${prefix}${id}`))).toBe(sha256(data));
    // An offset neither stored state knows is refused, not guessed at.
    const other = randomUUID();
    await storage.create(other, 10);
    await expect(storage.write(other, 5, chunked(Buffer.alloc(5)), writeOptions)).rejects.toThrow(
      /record says 5/,
    );
    await storage.remove(other);
    await storage.remove(id);
  });

  it('keeps the bytes of a body cut mid-part (the client went away)', async () => {
    const id = randomUUID();
    const data = randomBytes(6 * MiB);
    await storage.create(id, data.length);
    const body = new Readable({ read() {} });
    body.push(data.subarray(0, 5 * MiB + 100));
    const writing = storage.write(id, 0, body, writeOptions);
    setTimeout(() => body.destroy(new Error('socket hang up')), 200);
    const cut = await writing;
    expect(cut).toMatchObject({ bytes: 5 * MiB + 100, aborted: true });
    const rest = await storage.write(
      id,
      cut.bytes,
      chunked(data.subarray(cut.bytes)),
      writeOptions,
    );
    expect(rest.bytes).toBe(data.length - cut.bytes);
    await storage.complete(id);
    expect(sha256(await objectBytes(`${prefix}${id}`))).toBe(sha256(data));
    await storage.remove(id);
  });

  it('assembles an upload from completed ones inside S3 (UploadPartCopy), streaming only pieces below a part', async () => {
    const big = randomUUID();
    const small = randomUUID();
    const final = randomUUID();
    const a = randomBytes(6 * MiB + 11);
    const b = randomBytes(MiB);
    for (const [id, data] of [
      [big, a],
      [small, b],
    ] as const) {
      await storage.create(id, data.length);
      await storage.write(id, 0, chunked(data), writeOptions);
      await storage.complete(id);
    }
    await storage.create(final, a.length * 2 + b.length);
    expect(await storage.copyFrom(final, 0, big, a.length)).toBe(true);
    // Below S3's smallest part: the caller streams it (it becomes the trailing piece).
    expect(await storage.copyFrom(final, a.length, small, b.length)).toBe(false);
    await storage.write(final, a.length, storage.read(small, 0, b.length), writeOptions);
    // A trailing piece must come first: no copy after it.
    expect(await storage.copyFrom(final, a.length + b.length, big, a.length)).toBe(false);
    await storage.write(final, a.length + b.length, storage.read(big, 0, a.length), writeOptions);
    await storage.complete(final);
    expect(sha256(await objectBytes(`${prefix}${final}`))).toBe(sha256(Buffer.concat([a, b, a])));
    // An assembly a crash cut short starts over from 0.
    const again = randomUUID();
    await storage.create(again, a.length);
    await storage.write(again, 0, chunked(randomBytes(MiB)), writeOptions);
    expect(await storage.copyFrom(again, 0, big, a.length)).toBe(true);
    await storage.complete(again);
    expect(sha256(await objectBytes(`${prefix}${again}`))).toBe(sha256(a));
    for (const id of [big, small, final, again]) await storage.remove(id);
  });

  it('completes an empty upload and one smaller than a part', async () => {
    const empty = randomUUID();
    await storage.create(empty, 0, { filetype: 'text/plain' });
    await storage.complete(empty);
    expect((await objectBytes(`${prefix}${empty}`)).length).toBe(0);
    const small = randomUUID();
    const data = randomBytes(1000);
    await storage.create(small, data.length);
    await storage.write(small, 0, chunked(data), writeOptions);
    await storage.complete(small);
    expect(await objectBytes(`${prefix}${small}`)).toEqual(data);
    await storage.remove(empty);
    await storage.remove(small);
  });

  it('removes an open upload whole: its multipart upload is aborted, its objects deleted', async () => {
    const id = randomUUID();
    await storage.create(id, 20 * MiB);
    await storage.write(id, 0, chunked(randomBytes(6 * MiB)), writeOptions);
    expect((await storage.list()).map((u) => u.id)).toContain(id);
    await storage.remove(id);
    expect(await keysOf(id)).toEqual([]);
    const open = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
    expect((open.Uploads ?? []).filter((u) => u.Key === `${prefix}${id}`)).toEqual([]);
    expect((await storage.list()).map((u) => u.id)).not.toContain(id);
  });

  it('spools parts to its scratch directory and leaves nothing there', async () => {
    const id = randomUUID();
    await storage.create(id, 11 * MiB);
    await storage.write(id, 0, chunked(randomBytes(11 * MiB)), writeOptions);
    const [spool] = await readdir(scratch);
    expect(spool).toMatch(/^tussi-spool-/);
    expect(await readdir(join(scratch, spool))).toEqual([]);
    await storage.remove(id);
  });

  it('sweeps multipart uploads and trailing pieces a crash left behind, never a live one', async () => {
    const live = randomUUID();
    await storage.create(live, 20 * MiB);
    await storage.write(live, 0, chunked(randomBytes(MiB)), writeOptions);
    const liveTail = (await storage.manifest(live))!.tail!.key;
    // A crash between creating a multipart upload and storing its manifest.
    const lost = randomUUID();
    await client.send(
      new CreateMultipartUploadCommand({ Bucket: bucket, Key: `${prefix}${lost}` }),
    );
    // A trailing piece stored by a write whose manifest never was.
    const stray = `${prefix}${live}.tail.0123456789ab`;
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: stray, Body: 'x' }));
    await new Promise((r) => setTimeout(r, 1100));
    expect(await storage.sweep(1000)).toBe(2);
    const open = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
    const openKeys = (open.Uploads ?? []).map((u) => u.Key);
    expect(openKeys).toContain(`${prefix}${live}`);
    expect(openKeys).not.toContain(`${prefix}${lost}`);
    const keys = await keysOf(live);
    expect(keys).toContain(liveTail.slice(prefix.length + live.length));
    expect(keys).not.toContain('.tail.0123456789ab');
    await storage.remove(live);
  });

  it('stores records as objects beside the data', async () => {
    const id = randomUUID();
    const record = new UploadRecord(42, 7, { filename: 'a.txt' });
    await records.put(id, record);
    expect((await records.get(id))?.toJSON()).toEqual(record.toJSON());
    expect(await records.list()).toContain(id);
    expect(await keysOf(id)).toEqual(['.info']);
    await records.remove(id);
    await records.remove(id);
    expect(await records.get(id)).toBeNull();
  });

  it('grows the part size so any length fits in 10,000 parts', () => {
    expect(nextPartSize(0, 0, 10 * MiB, 5 * MiB)).toBe(5 * MiB);
    const fiveTiB = 5 * 1024 * 1024 * MiB;
    let start = 0;
    let index = 0;
    while (start < fiveTiB) {
      start += nextPartSize(index, start, fiveTiB, 8 * MiB);
      index++;
    }
    expect(index).toBeLessThanOrEqual(10_000);
    // No bound known (deferred length, no maxSize): doubling every 1,000 parts reaches 5 TiB.
    start = 0;
    index = 0;
    while (start < fiveTiB) {
      start += nextPartSize(index, start, null, 8 * MiB);
      index++;
    }
    expect(index).toBeLessThanOrEqual(10_000);
  });
});
