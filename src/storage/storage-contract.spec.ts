import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { randomUUID } from 'node:crypto';
import { writeSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { UploadRecord } from '../core/upload-record.js';
import { writeBody, type BodyWriteResult } from '../protocol/body-pump.js';
import { preallocation } from './fallocate.js';
import { FileUploadLocker } from './file-upload.locker.js';
import { FilesystemRecordStore } from './filesystem-record.store.js';
import { FilesystemStorage } from './filesystem.storage.js';
import { decodeRecordFile } from '../core/slotted-record.js';
import { MemoryRecordStore, MemoryStorage, MemoryUploadLocker } from './memory.storage.js';
import {
  LockTargetMissingError,
  LockTimeoutError,
  type UploadLocker,
  type UploadRecordStore,
  type UploadStorage,
} from './storage.interfaces.js';

/** One implementation of the three storage contracts, with a view of what it holds. */
interface Subject {
  storage: UploadStorage;
  records: UploadRecordStore;
  locker: UploadLocker;
  /** The stored bytes of an upload, `undefined` when it has none. */
  data(id: string): Promise<Buffer | undefined>;
  /** The record as stored (parsed JSON), `undefined` when there is none. */
  rawRecord(id: string): Promise<unknown>;
  /** Names of every file the implementation keeps (none for memory). */
  listing(): Promise<string[]>;
  /** Whether locking an upload that does not exist fails with `LockTargetMissingError`. */
  locksNeedUpload: boolean;
  dispose(): Promise<void>;
}

/** `data` zero-extended to `length` bytes: what lies past the written bytes reads as zeros. */
function padded(data: Buffer, length: number): Buffer {
  return data.length >= length ? data : Buffer.concat([data, Buffer.alloc(length - data.length)]);
}

const memorySubject = async (): Promise<Subject> => {
  const storage = new MemoryStorage();
  const records = new MemoryRecordStore();
  return {
    storage,
    records,
    locker: new MemoryUploadLocker(),
    data: async (id) => storage.files.get(id),
    rawRecord: async (id) => {
      const json = records.records.get(id);
      return json === undefined ? undefined : (JSON.parse(json) as unknown);
    },
    listing: async () => [],
    locksNeedUpload: false,
    dispose: async () => {},
  };
};

const filesystemSubject = async (): Promise<Subject> => {
  const directory = await mkdtemp(join(tmpdir(), 'tussi-contract-'));
  const storage = new FilesystemStorage({ directory, log: () => {} });
  const records = new FilesystemRecordStore(directory);
  const readIfAny = async (path: string) =>
    readFile(path).catch((e: NodeJS.ErrnoException) => {
      if (e.code === 'ENOENT') return undefined;
      throw e;
    });
  return {
    storage,
    records,
    locker: new FileUploadLocker((id) => storage.pathOf(id)),
    data: (id) => readIfAny(storage.pathOf(id)),
    rawRecord: async (id) => {
      const text = await readIfAny(records.pathOf(id));
      if (text === undefined) return undefined;
      // The JSON of the newest slot (see slotted-record.ts).
      return JSON.parse(decodeRecordFile(text.toString('utf8'))!.json) as unknown;
    },
    listing: () => readdir(directory),
    locksNeedUpload: true,
    dispose: () => rm(directory, { recursive: true, force: true }),
  };
};

const body = (...parts: string[]) => Readable.from(parts.map((p) => Buffer.from(p)));
const options = (limit: number) => ({ limit, idleTimeoutMs: 0 });

function storageContract(name: string, make: () => Promise<Subject>) {
  describe(`storage contract: ${name}`, () => {
    let s: Subject;
    let id: string;
    beforeEach(async () => {
      s = await make();
      id = randomUUID();
    });
    afterEach(async () => {
      await s.dispose();
    });

    describe('UploadStorage', () => {
      it.each([0, 1, 10, 1 << 20])(
        'create of %i bytes makes data that holds no byte of them yet (zeros at most)',
        async (length) => {
          await s.storage.create(id, length);
          const data = await s.data(id);
          expect(data!.length).toBeLessThanOrEqual(length);
          expect(padded(data!, length).equals(Buffer.alloc(length))).toBe(true);
        },
      );

      it('create of a deferred length holds no bytes', async () => {
        await s.storage.create(id, null);
        expect((await s.data(id))?.length).toBe(0);
      });

      it('create refuses an id that exists (EEXIST)', async () => {
        await s.storage.create(id, 4);
        await expect(s.storage.create(id, 4)).rejects.toMatchObject({ code: 'EEXIST' });
      });

      it('writes a body at an offset, in place, and reports it ended', async () => {
        await s.storage.create(id, 10);
        expect(await writeBody(s.storage, id, 0, body('ab', 'cde'), options(10))).toEqual({
          bytes: 5,
          ended: true,
          exceeded: false,
          aborted: false,
        } satisfies BodyWriteResult);
        expect(padded((await s.data(id))!, 10).toString('latin1')).toBe('abcde\0\0\0\0\0');
        expect(await writeBody(s.storage, id, 5, body('fghij'), options(5))).toMatchObject({
          bytes: 5,
          ended: true,
        });
        expect((await s.data(id))!.toString('latin1')).toBe('abcdefghij');
        // Rewriting from an offset (a resumed upload): what lies past the new bytes was never
        // counted, and a storage may drop it.
        await writeBody(s.storage, id, 2, body('XY'), options(8));
        expect((await s.data(id))!.subarray(0, 4).toString('latin1')).toBe('abXY');
      });

      it('an empty body writes nothing', async () => {
        await s.storage.create(id, 3);
        expect(await writeBody(s.storage, id, 0, body(), options(3))).toMatchObject({
          bytes: 0,
          ended: true,
          exceeded: false,
        });
        expect(padded((await s.data(id))!, 3).equals(Buffer.alloc(3))).toBe(true);
      });

      it('stops at the limit and reports exceeded, storing nothing past it', async () => {
        await s.storage.create(id, 10);
        const result = await writeBody(s.storage, id, 6, body('01', '23456', '789'), options(4));
        expect(result).toMatchObject({ bytes: 4, exceeded: true, aborted: false });
        const data = (await s.data(id))!;
        expect(data.length).toBe(10);
        expect(data.toString('latin1')).toBe('\0\0\0\0\0\x000123');
      });

      it('a body of exactly the limit is not exceeded', async () => {
        await s.storage.create(id, 4);
        expect(await writeBody(s.storage, id, 0, body('01', '23'), options(4))).toMatchObject({
          bytes: 4,
          ended: true,
          exceeded: false,
        });
      });

      it('a limit below the upload length leaves the rest untouched', async () => {
        await s.storage.create(id, 10);
        expect(await writeBody(s.storage, id, 0, body('0123456789'), options(3))).toMatchObject({
          bytes: 3,
          exceeded: true,
        });
        expect(padded((await s.data(id))!, 10).toString('latin1')).toBe('012\0\0\0\0\0\0\0');
      });

      it('keeps the bytes of an aborted body', async () => {
        await s.storage.create(id, 10);
        const stream = new PassThrough();
        let accepted!: () => void;
        const gotChunk = new Promise<void>((resolve) => (accepted = resolve));
        const pending = writeBody(s.storage, id, 0, stream, {
          ...options(10),
          onChunk: () => accepted(),
        });
        stream.write(Buffer.from('abc'));
        await gotChunk;
        stream.destroy();
        expect(await pending).toMatchObject({ bytes: 3, ended: false, aborted: true });
        expect((await s.data(id))!.subarray(0, 3).toString()).toBe('abc');
      });

      it('cuts an idle body and keeps its bytes', async () => {
        await s.storage.create(id, 10);
        const stream = new PassThrough();
        const pending = writeBody(s.storage, id, 0, stream, { limit: 10, idleTimeoutMs: 50 });
        stream.write(Buffer.from('abcd'));
        expect(await pending).toMatchObject({ bytes: 4, ended: false, aborted: true });
        expect(stream.destroyed).toBe(true);
        expect((await s.data(id))!.subarray(0, 4).toString()).toBe('abcd');
      });

      it('writing to an upload that is gone stores nothing', async () => {
        const outcome = await writeBody(s.storage, id, 0, body('abc'), options(3)).then(
          (result) => result,
          (error: unknown) => ({ bytes: 0, error }),
        );
        expect(outcome.bytes).toBe(0);
        expect(outcome.error).toBeDefined();
        expect(await s.data(id)).toBeUndefined();
      });

      it('remove is idempotent and frees the id', async () => {
        await s.storage.create(id, 4);
        await s.storage.remove(id);
        expect(await s.data(id)).toBeUndefined();
        await expect(s.storage.remove(id)).resolves.toBeUndefined();
        await expect(s.storage.remove(randomUUID())).resolves.toBeUndefined();
        await s.storage.create(id, 2);
        expect(await s.data(id)).toBeDefined();
      });
    });

    describe('UploadRecordStore', () => {
      const sample = () =>
        new UploadRecord(
          1000,
          250,
          { filename: 'a.txt', note: 'Grüße', empty: '' },
          { owner: 'u1' },
          1700000000.5,
          1700000100.25,
        );

      it('round-trips a record', async () => {
        await s.records.put(id, sample());
        const record = await s.records.get(id);
        expect(record).toBeInstanceOf(UploadRecord);
        expect(record).toEqual(sample());
      });

      it("stores tussi's field names", async () => {
        await s.records.put(id, sample());
        const raw = (await s.rawRecord(id)) as Record<string, unknown>;
        expect(Object.keys(raw)).toEqual(
          expect.arrayContaining([
            'length',
            'offset',
            'metadata',
            'server_metadata',
            'created_at',
            'last_write',
          ]),
        );
        expect(raw).toMatchObject({
          length: 1000,
          offset: 250,
          metadata: { filename: 'a.txt', note: 'Grüße', empty: '' },
          server_metadata: { owner: 'u1' },
          created_at: 1700000000.5,
          last_write: 1700000100.25,
        });
        expect(raw).not.toHaveProperty('serverMetadata');
        expect(raw).not.toHaveProperty('createdAt');
      });

      it('get of an unknown id is null', async () => {
        expect(await s.records.get(id)).toBeNull();
      });

      it('a record read is a copy, not the stored one', async () => {
        await s.records.put(id, sample());
        const record = (await s.records.get(id))!;
        record.offset = 999;
        record.metadata.filename = 'changed';
        expect(await s.records.get(id)).toEqual(sample());
      });

      it('put replaces the record and leaves no temp file', async () => {
        await s.records.put(id, sample());
        const next = sample();
        next.offset = 1000;
        await s.records.put(id, next);
        expect((await s.records.get(id))?.offset).toBe(1000);
        expect((await s.listing()).filter((n) => /\.tmp$/.test(n))).toEqual([]);
      });

      it('concurrent puts and gets never see a partial record', async () => {
        await s.records.put(id, sample());
        const work: Promise<unknown>[] = [];
        for (let i = 0; i < 30; i++) {
          const record = sample();
          record.offset = i;
          work.push(s.records.put(id, record));
          work.push(
            s.records.get(id).then((read) => {
              expect(read).toBeInstanceOf(UploadRecord);
              expect(read!.length).toBe(1000);
            }),
          );
        }
        await Promise.all(work);
        expect((await s.listing()).filter((n) => /\.tmp$/.test(n))).toEqual([]);
      });

      it('list gives the id of every stored record', async () => {
        expect(await s.records.list()).toEqual([]);
        const other = randomUUID();
        await s.records.put(id, sample());
        await s.records.put(other, sample());
        await s.records.put(other, sample());
        expect((await s.records.list()).sort()).toEqual([id, other].sort());
        await s.records.remove(other);
        expect(await s.records.list()).toEqual([id]);
      });

      it('remove is idempotent', async () => {
        await s.records.put(id, sample());
        await s.records.remove(id);
        expect(await s.records.get(id)).toBeNull();
        await expect(s.records.remove(id)).resolves.toBeUndefined();
      });

      it('an upload and its record leave nothing behind once removed', async () => {
        await s.storage.create(id, 8);
        await s.records.put(id, sample());
        await s.records.remove(id);
        await s.storage.remove(id);
        expect(await s.listing()).toEqual([]);
      });
    });

    describe('UploadLocker', () => {
      beforeEach(async () => {
        await s.storage.create(id, 4);
      });

      it('a lock is exclusive until released', async () => {
        const lock = await s.locker.acquire(id, 0);
        await expect(s.locker.acquire(id, 50)).rejects.toBeInstanceOf(LockTimeoutError);
        await lock.release();
        const again = await s.locker.acquire(id, 50);
        await again.release();
      });

      it('a waiting acquire gets the lock when it is released', async () => {
        const lock = await s.locker.acquire(id, 0);
        let granted = false;
        const waiting = s.locker.acquire(id, 5000).then((l) => {
          granted = true;
          return l;
        });
        await new Promise((resolve) => setTimeout(resolve, 20));
        expect(granted).toBe(false);
        await lock.release();
        await (await waiting).release();
        expect(granted).toBe(true);
      });

      it('locks of different uploads are independent', async () => {
        const other = randomUUID();
        await s.storage.create(other, 4);
        const a = await s.locker.acquire(id, 0);
        const b = await s.locker.acquire(other, 50);
        await a.release();
        await b.release();
      });

      it('releasing twice does not release the next holder', async () => {
        const first = await s.locker.acquire(id, 0);
        await first.release();
        const second = await s.locker.acquire(id, 50);
        await first.release();
        await expect(s.locker.acquire(id, 50)).rejects.toBeInstanceOf(LockTimeoutError);
        await second.release();
      });

      it('locking an upload that does not exist', async () => {
        const missing = randomUUID();
        if (s.locksNeedUpload) {
          await expect(s.locker.acquire(missing, 50)).rejects.toBeInstanceOf(
            LockTargetMissingError,
          );
          // The failed attempt holds nothing: the id can be created and locked.
          await s.storage.create(missing, 1);
        }
        const lock = await s.locker.acquire(missing, 50);
        await lock.release();
      });
    });
  });
}

storageContract('MemoryStorage + MemoryRecordStore + MemoryUploadLocker', memorySubject);
storageContract('FilesystemStorage + FilesystemRecordStore + FileUploadLocker', filesystemSubject);

describe('FilesystemStorage specifics', () => {
  let directory: string;
  beforeEach(async () => {
    directory = await mkdtemp(join(tmpdir(), 'tussi-fs-'));
  });
  afterEach(async () => {
    await rm(directory, { recursive: true, force: true });
  });

  it('lays an upload out as {dir}/{id} and {dir}/{id}.meta, reserving nothing at creation', async () => {
    const storage = new FilesystemStorage({ directory, log: () => {} });
    const records = new FilesystemRecordStore(directory);
    const id = randomUUID();
    await storage.create(id, 123456);
    await records.put(id, new UploadRecord(123456, 0));
    expect((await readdir(directory)).sort()).toEqual([id, `${id}.meta`].sort());
    const info = await stat(join(directory, id));
    expect(info.size).toBe(0);
    expect(info.blocks).toBe(0);
  });

  it('reserves blocks ahead of a body while it arrives, and gives back what it did not fill', async () => {
    const storage = new FilesystemStorage({ directory, log: () => {} });
    const id = randomUUID();
    const length = 8 << 20;
    await storage.create(id, length);
    const stream = new PassThrough();
    let firstChunk!: () => void;
    const arrived = new Promise<void>((resolve) => (firstChunk = resolve));
    const pending = writeBody(storage, id, 0, stream, {
      limit: length,
      idleTimeoutMs: 0,
      onChunk: () => firstChunk(),
    });
    stream.write(Buffer.alloc(300 << 10, 7));
    await arrived;
    // The body pump writes its first batch at once: blocks for the rest are reserved ahead.
    let during = await stat(join(directory, id));
    for (let i = 0; i < 100 && during.size < length; i++) {
      await new Promise((resolve) => setTimeout(resolve, 10));
      during = await stat(join(directory, id));
    }
    if (preallocation === 'fallocate') {
      expect(during.size).toBeGreaterThanOrEqual(length);
      expect(during.blocks * 512).toBeGreaterThanOrEqual(length);
    }
    stream.end();
    expect(await pending).toMatchObject({ bytes: 300 << 10, ended: true });
    const after = await stat(join(directory, id));
    expect(after.size).toBe(300 << 10);
    expect(after.blocks * 512).toBeLessThan(1 << 20);
  });

  it('a small body with its length reserves nothing; one that completes cuts what lay past it', async () => {
    const storage = new FilesystemStorage({ directory, log: () => {} });
    const id = randomUUID();
    await storage.create(id, 8192);
    const path = join(directory, id);
    // Bytes past the offset that a write cut by a crash (or a refused body) left behind.
    await writeFile(path, Buffer.alloc(10_000, 9));
    const small = (start: number, bytes: number, limit: number) =>
      writeBody(storage, id, start, Readable.from([Buffer.alloc(bytes, 1)]), {
        limit,
        expected: bytes,
        idleTimeoutMs: 0,
      });
    // Not the last byte: the file keeps its length (the scratch past the offset is never read).
    expect(await small(0, 4096, 8192)).toMatchObject({ bytes: 4096, ended: true });
    expect((await stat(path)).size).toBe(10_000);
    // The last byte: the file ends where the upload does.
    expect(await small(4096, 4096, 4096)).toMatchObject({ bytes: 4096, ended: true });
    expect(await readFile(path)).toEqual(Buffer.alloc(8192, 1));
  });

  it('list ignores data files, temp files and names that are not upload ids', async () => {
    const storage = new FilesystemStorage({ directory, log: () => {} });
    const records = new FilesystemRecordStore(directory);
    const id = randomUUID();
    await storage.create(id, 1);
    await records.put(id, new UploadRecord(1, 0));
    await writeFile(join(directory, `.${id}.meta.0123456789ab.tmp`), '{}');
    await writeFile(join(directory, 'notes.meta'), '{}');
    await writeFile(join(directory, `${id.toUpperCase()}.meta`), '{}');
    expect(await records.list()).toEqual([id]);
  });

  it('writes through the descriptor of its own lock on the file, and leaves it open', async () => {
    const storage = new FilesystemStorage({ directory, log: () => {} });
    const id = randomUUID();
    const other = randomUUID();
    await storage.create(id, 6);
    await storage.create(other, 6);
    const lock = await storage.locker.acquire(id, 1000);
    try {
      expect(lock.file?.path).toBe(storage.pathOf(id));
      expect(storage.locker.heldFile(storage.pathOf(id))).toBe(lock.file!.fd);
      const written = await writeBody(storage, id, 0, body('abc'), options(6));
      expect(written.bytes).toBe(3);
      // Still the lock's: a write through it works after the storage is done.
      writeSync(lock.file!.fd, Buffer.from('def'), 0, 3, 3);
      // An upload whose lock is not held is written through its own descriptor.
      await writeBody(storage, other, 0, body('xyz'), options(6));
    } finally {
      await lock.release();
    }
    expect(storage.locker.heldFile(storage.pathOf(id))).toBeUndefined();
    expect((await readFile(storage.pathOf(id))).toString()).toBe('abcdef');
    expect((await readFile(storage.pathOf(other))).subarray(0, 3).toString()).toBe('xyz');
  });

  it('creates its directory', async () => {
    const nested = join(directory, 'a', 'b');
    const storage = new FilesystemStorage({ directory: nested, log: () => {} });
    await storage.create(randomUUID(), 1);
    expect((await readdir(nested)).length).toBe(1);
  });

  it('a record file written by tussi (ISO duration, no last_write) is read', async () => {
    const records = new FilesystemRecordStore(directory);
    const id = randomUUID();
    await writeFile(
      records.pathOf(id),
      JSON.stringify({
        length: 5,
        offset: 5,
        metadata: { filename: 'x' },
        server_metadata: {},
        created_at: 100,
        finished_at: '2024-01-01T00:00:00.000Z',
        duration: 'PT1.5S',
      }),
    );
    const record = (await records.get(id))!;
    expect(record).toMatchObject({
      length: 5,
      offset: 5,
      createdAt: 100,
      lastWrite: 100,
      duration: 1.5,
    });
    expect(record.finishedAt?.toISOString()).toBe('2024-01-01T00:00:00.000Z');
    expect(record.isComplete).toBe(true);
  });
});
