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
import { UploadRecord, type StorageState } from '../../src/core/upload-record.js';
import { writeBody } from '../../src/protocol/body-pump.js';
import { S3RecordStore } from '../../src/s3/s3-record.store.js';
import { S3Storage } from '../../src/s3/s3.storage.js';
import { nextPartSize, parseManifest } from '../../src/s3/s3-manifest.js';
import { TusHealthIndicator } from '../../src/health/tus-health.indicator.js';
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

  it('health: tus_s3 is up while the bucket answers, down naming why when it does not', async () => {
    const healthy = new TusHealthIndicator({ storage, coordination: null });
    expect(await healthy.check()).toEqual({ tus_s3: { status: 'up' } });
    const missing = new S3Storage({ ...storage['options'], bucket: 'no-such-bucket-here' }, client);
    const down = await new TusHealthIndicator({ storage: missing, coordination: null }).check();
    expect(down.tus_s3).toMatchObject({ status: 'down' });
    expect(String(down.tus_s3.message)).toMatch(/no-such-bucket-here.*does not exist/);
  });

  /**
   * An upload as the protocol drives it: the state of each write it counts is kept, as the
   * record keeps it (`UploadRecord.storage`), and handed to the next call.
   */
  class Upload {
    state: StorageState | null = null;
    constructor(readonly id = randomUUID()) {}

    async create(length: number | null, metadata?: Record<string, string>) {
      this.state = (await storage.create(this.id, length, metadata)) ?? null;
      return this;
    }
    /** A write the protocol counts: its state is kept. */
    async write(offset: number, body: Readable) {
      const result = await writeBody(storage, this.id, offset, body, {
        ...writeOptions,
        state: this.state,
      });
      if (result.state) this.state = result.state;
      return result;
    }
    /** A write the protocol refuses (a checksum that does not match): its state is dropped. */
    async refused(offset: number, body: Readable) {
      return writeBody(storage, this.id, offset, body, { ...writeOptions, state: this.state });
    }
    get manifest() {
      return parseManifest(this.state);
    }
    /** The record, with the state, stored as the protocol stores it. */
    async save(offset: number, length: number | null) {
      const record = new UploadRecord(length, offset);
      record.storage = this.state;
      await records.put(this.id, record);
    }
    complete = () => storage.complete(this.id, this.state);
    remove = async () => {
      await storage.remove(this.id, this.state);
      await records.remove(this.id);
    };
  }

  it('streams PATCH-sized pieces into parts, keeps the rest as a trailing piece, completes into one object', async () => {
    const data = randomBytes(13 * MiB + 12345);
    const upload = await new Upload().create(data.length, {
      filename: 'report ü.pdf',
      filetype: 'application/pdf',
    });
    const { id } = upload;
    // Pieces that end below, across and exactly at part boundaries.
    const cuts = [3 * MiB, 3 * MiB + 17, 10 * MiB, 10 * MiB + 1, data.length];
    let offset = 0;
    for (const cut of cuts) {
      const result = await upload.write(offset, chunked(data.subarray(offset, cut)));
      expect(result).toMatchObject({ bytes: cut - offset, ended: true });
      expect(result.error).toBeUndefined();
      offset = cut;
      if (cut === 10 * MiB + 1) {
        expect(upload.manifest.parts.map((p) => p.size)).toEqual([5 * MiB, 5 * MiB]);
        expect(upload.manifest.tail!.size).toBe(1);
        // The trailing pieces replaced before are deleted; the last replaced one goes next.
        const tails = (await keysOf(id)).filter((k) => k.startsWith('.tail.'));
        expect(tails.length).toBeLessThanOrEqual(2);
      }
    }
    // The write that brought the last byte sent the rest as the last part: no trailing piece.
    expect(upload.manifest.end).toBe(data.length);
    expect(upload.manifest.parts.map((p) => p.size)).toEqual([5 * MiB, 5 * MiB, 3 * MiB + 12345]);
    expect(upload.manifest.tail).toBeNull();

    await upload.complete();
    await upload.complete(); // again, as after a crash: nothing changes
    const whole = await objectBytes(`${prefix}${id}`);
    expect(sha256(whole)).toBe(sha256(data));
    const head = await client.send(
      new HeadObjectCommand({ Bucket: bucket, Key: `${prefix}${id}` }),
    );
    expect(head.ContentType).toBe('application/pdf');
    expect(head.ContentDisposition).toBe(
      `attachment; filename="report _.pdf"; filename*=UTF-8''report%20%C3%BC.pdf`,
    );
    // No trailing piece is left once complete: the object alone.
    expect(await keysOf(id)).toEqual(['']);

    // Ranged reads of the completed object (concatenation reads partials this way).
    const chunks: Buffer[] = [];
    for await (const c of storage.read(id, 5 * MiB - 3, 10)) chunks.push(c as Buffer);
    expect(Buffer.concat(chunks)).toEqual(data.subarray(5 * MiB - 3, 5 * MiB + 7));

    await upload.remove();
    expect(await keysOf(id)).toEqual([]);
  });

  it('leaves the stored state as it was after a write the protocol refused, and keeps every counted byte', async () => {
    const data = randomBytes(7 * MiB);
    const upload = await new Upload().create(data.length);
    expect((await upload.write(0, chunked(data.subarray(0, 2 * MiB)))).bytes).toBe(2 * MiB);
    // A write the protocol refused (a checksum mismatch): its parts and piece are not counted.
    const refused = await upload.refused(2 * MiB, chunked(randomBytes(4 * MiB)));
    expect(refused.bytes).toBe(4 * MiB);
    // The client resumes at 2 MiB: the refused bytes are gone, the first ones kept.
    expect((await upload.write(2 * MiB, chunked(data.subarray(2 * MiB)))).bytes).toBe(5 * MiB);
    await upload.complete();
    expect(sha256(await objectBytes(`${prefix}${upload.id}`))).toBe(sha256(data));
    // The refused write's trailing piece went with the next write.
    expect(await keysOf(upload.id)).toEqual(['']);
    // An offset the state does not hold is refused, not guessed at.
    const other = await new Upload().create(10);
    await expect(other.write(5, chunked(Buffer.alloc(5)))).rejects.toThrow(/record says 5/);
    await other.remove();
    await upload.remove();
  });

  it('sends nothing more once its lock is lost (another holder may be writing)', async () => {
    const upload = await new Upload().create(20 * MiB);
    const lost = new AbortController();
    lost.abort();
    const result = await writeBody(storage, upload.id, 0, chunked(randomBytes(3 * MiB)), {
      ...writeOptions,
      state: upload.state,
      lost: lost.signal,
    });
    expect(result.bytes).toBe(0);
    expect(result.error?.message).toMatch(/lock was lost/);
    expect(result.state).toBeUndefined();
    expect((await keysOf(upload.id)).filter((k) => k.startsWith('.tail.'))).toEqual([]);
    await upload.remove();
  });

  it('keeps the bytes of a body cut mid-part (the client went away)', async () => {
    const data = randomBytes(6 * MiB);
    const upload = await new Upload().create(data.length);
    const body = new Readable({ read() {} });
    body.push(data.subarray(0, 5 * MiB + 100));
    const writing = upload.write(0, body);
    setTimeout(() => body.destroy(new Error('socket hang up')), 200);
    const cut = await writing;
    expect(cut).toMatchObject({ bytes: 5 * MiB + 100, aborted: true });
    const rest = await upload.write(cut.bytes, chunked(data.subarray(cut.bytes)));
    expect(rest.bytes).toBe(data.length - cut.bytes);
    await upload.complete();
    expect(sha256(await objectBytes(`${prefix}${upload.id}`))).toBe(sha256(data));
    await upload.remove();
  });

  it('assembles an upload from completed ones inside S3 (UploadPartCopy), streaming only pieces below a part', async () => {
    const a = randomBytes(6 * MiB + 11);
    const b = randomBytes(MiB);
    const big = await new Upload().create(a.length);
    const small = await new Upload().create(b.length);
    await big.write(0, chunked(a));
    await big.complete();
    await small.write(0, chunked(b));
    await small.complete();
    const final = await new Upload().create(a.length * 2 + b.length);
    const copied = await storage.copyFrom(final.id, 0, big.id, a.length, final.state);
    expect(copied).not.toBeNull();
    final.state = copied;
    // Below S3's smallest part: the caller streams it (it becomes the trailing piece).
    expect(await storage.copyFrom(final.id, a.length, small.id, b.length, final.state)).toBeNull();
    await final.write(a.length, storage.read(small.id, 0, b.length));
    // A trailing piece must come first: no copy after it.
    expect(
      await storage.copyFrom(final.id, a.length + b.length, big.id, a.length, final.state),
    ).toBeNull();
    await final.write(a.length + b.length, storage.read(big.id, 0, a.length));
    await final.complete();
    expect(sha256(await objectBytes(`${prefix}${final.id}`))).toBe(
      sha256(Buffer.concat([a, b, a])),
    );
    for (const u of [big, small, final]) await u.remove();
  });

  it('completes an empty upload and one smaller than a part', async () => {
    const empty = await new Upload().create(0, { filetype: 'text/plain' });
    await empty.complete();
    expect((await objectBytes(`${prefix}${empty.id}`)).length).toBe(0);
    const data = randomBytes(1000);
    const small = await new Upload().create(data.length);
    await small.write(0, chunked(data));
    await small.complete();
    expect(await objectBytes(`${prefix}${small.id}`)).toEqual(data);
    await empty.remove();
    await small.remove();
  });

  it('completion deletes every trailing piece of the upload, one a killed writer left included', async () => {
    const data = randomBytes(MiB + 10);
    const upload = await new Upload().create(data.length);
    await upload.write(0, chunked(data.subarray(0, MiB)));
    await upload.save(MiB, data.length);
    // A writer killed after storing a trailing piece and before its record: nobody names it.
    await client.send(
      new PutObjectCommand({
        Bucket: bucket,
        Key: `${prefix}${upload.id}.tail.fedcba987654`,
        Body: 'x',
      }),
    );
    await upload.write(MiB, chunked(data.subarray(MiB)));
    await upload.save(data.length, data.length);
    expect(await keysOf(upload.id)).toContain('.tail.fedcba987654');
    await upload.complete();
    expect((await keysOf(upload.id)).filter((k) => k.startsWith('.tail.'))).toEqual([]);
    expect(await objectBytes(`${prefix}${upload.id}`)).toEqual(data);
    await upload.remove();
  });

  it('removes an open upload whole: its multipart upload is aborted, its objects deleted', async () => {
    const upload = await new Upload().create(20 * MiB);
    await upload.write(0, chunked(randomBytes(6 * MiB)));
    await upload.save(6 * MiB, 20 * MiB);
    expect((await storage.list()).map((u) => u.id)).toContain(upload.id);
    await upload.remove();
    expect(await keysOf(upload.id)).toEqual([]);
    const open = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
    expect((open.Uploads ?? []).filter((u) => u.Key === `${prefix}${upload.id}`)).toEqual([]);
    expect((await storage.list()).map((u) => u.id)).not.toContain(upload.id);
  });

  it('spools parts to its scratch directory and leaves nothing there', async () => {
    const upload = await new Upload().create(11 * MiB);
    await upload.write(0, chunked(randomBytes(11 * MiB)));
    const [spool] = await readdir(scratch);
    expect(spool).toMatch(/^tussi-spool-/);
    expect(await readdir(join(scratch, spool))).toEqual([]);
    await upload.remove();
  });

  it('sweeps multipart uploads and trailing pieces a crash left behind, never a live one', async () => {
    const live = await new Upload().create(20 * MiB);
    await live.write(0, chunked(randomBytes(MiB)));
    await live.save(MiB, 20 * MiB);
    const liveTail = live.manifest.tail!.key;
    // A crash between creating a multipart upload and storing its record.
    const lost = randomUUID();
    await client.send(
      new CreateMultipartUploadCommand({ Bucket: bucket, Key: `${prefix}${lost}` }),
    );
    // A trailing piece stored by a write whose state was never stored.
    const stray = `${prefix}${live.id}.tail.0123456789ab`;
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: stray, Body: 'x' }));
    await new Promise((r) => setTimeout(r, 1100));
    expect(await storage.sweep(1000)).toBe(2);
    const open = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
    const openKeys = (open.Uploads ?? []).map((u) => u.Key);
    expect(openKeys).toContain(`${prefix}${live.id}`);
    expect(openKeys).not.toContain(`${prefix}${lost}`);
    const keys = await keysOf(live.id);
    expect(keys).toContain(liveTail.slice(prefix.length + live.id.length));
    expect(keys).not.toContain('.tail.0123456789ab');
    await live.remove();
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
