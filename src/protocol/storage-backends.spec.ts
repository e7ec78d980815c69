import { afterEach, describe, expect, it } from '@jest/globals';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { type CompletedUploadQueue } from '../queue/completed-upload.queue.js';
import { FilesystemCompletedQueue } from '../queue/filesystem-completed.queue.js';
import { FileUploadLocker } from '../storage/file-upload.locker.js';
import { FilesystemRecordStore } from '../storage/filesystem-record.store.js';
import { FilesystemStorage } from '../storage/filesystem.storage.js';
import { MemoryRecordStore, MemoryStorage, MemoryUploadLocker } from '../storage/memory.storage.js';
import { FileSpaceLedger, SpaceAccounting } from '../storage/space-accounting.js';
import { UploadStorageService } from '../storage/upload-storage.service.js';
import type { RequestHeaders } from './headers.js';
import { TusHandler } from './tus-handler.js';
import type { TusRequest } from './tus-request.js';

/**
 * Every storage backend through the whole life of an upload, not only its writes: creation,
 * PATCHes, finalize into the completed queue and delivery to a consumer, concatenation, and the
 * termination of a finished upload. The protocol alone (no Nest), with literal requests.
 */
interface Backend {
  name: string;
  build(root: string): UploadStorageService;
}

const BACKENDS: Backend[] = [
  {
    name: 'filesystem',
    build: (root) => {
      const directory = join(root, 'uploads');
      const storage = new FilesystemStorage({ directory, log: () => {} });
      return new UploadStorageService(
        storage,
        new FilesystemRecordStore(directory),
        new FileUploadLocker((id) => storage.pathOf(id)),
        new SpaceAccounting(new FileSpaceLedger(directory), directory),
      );
    },
  },
  {
    name: 'memory',
    build: () =>
      new UploadStorageService(
        new MemoryStorage(),
        new MemoryRecordStore(),
        new MemoryUploadLocker(),
      ),
  },
];

const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

function request(
  method: string,
  headers: RequestHeaders,
  extra: { id?: string; body?: Buffer } = {},
): TusRequest {
  return {
    method,
    headers: { host: 'example.com', 'tus-resumable': '1.0.0', ...headers },
    basePath: '/files',
    scheme: 'http',
    body: Readable.from(extra.body ? [extra.body] : []),
    id: extra.id,
  };
}

const idOf = (location: string) => location.split('/').pop()!;

describe.each(BACKENDS)('the $name backend, from creation to delivery', (backend) => {
  let root: string;
  let queue: CompletedUploadQueue;
  let handler: TusHandler;
  let errors: string[];

  async function start(): Promise<void> {
    root = await mkdtemp(join(tmpdir(), 'tussi-backend-'));
    const store = backend.build(root);
    queue = new FilesystemCompletedQueue({
      directory: join(root, 'completed'),
      stagingDirectory: join(root, 'uploads'),
      pollIntervalMs: 100,
      log: () => {},
    });
    errors = [];
    handler = new TusHandler({
      options: { maxMetadataSize: 4096, lockWaitMs: 500, bodyIdleTimeoutMs: 0 },
      store,
      queue,
      logger: { error: (m, e) => errors.push(`${m}: ${String(e)}`), warn: () => {} },
    });
    await store.start();
  }

  afterEach(async () => {
    await handler.settled();
    await queue.close();
    await handler.context.store.close();
    await rm(root, { recursive: true, force: true });
    expect(errors).toEqual([]);
  });

  async function create(length: number, headers: RequestHeaders = {}): Promise<string> {
    const res = await handler.handle(
      request('POST', { 'upload-length': String(length), ...headers }),
    );
    expect(res.status).toBe(201);
    return idOf(res.headers.Location);
  }

  async function patch(id: string, offset: number, body: Buffer): Promise<number> {
    const res = await handler.handle(
      request(
        'PATCH',
        {
          'content-type': 'application/offset+octet-stream',
          'upload-offset': String(offset),
          'content-length': String(body.length),
        },
        { id, body },
      ),
    );
    return res.status;
  }

  async function deliver(): Promise<{ name: string; bytes: Buffer }> {
    const upload = await queue.waitForFile({ timeout: 3000 });
    try {
      const chunks: Buffer[] = [];
      for await (const chunk of await upload.stream()) chunks.push(chunk as Buffer);
      return { name: upload.name, bytes: Buffer.concat(chunks) };
    } finally {
      await upload.release();
    }
  }

  it('an upload in two PATCHes is delivered once, byte-identical, and leaves nothing staged', async () => {
    await start();
    const data = randomBytes(300_000);
    const id = await create(data.length);
    expect(await patch(id, 0, data.subarray(0, 100_000))).toBe(204);
    expect(await patch(id, 100_000, data.subarray(100_000))).toBe(204);
    const delivered = await deliver();
    expect(delivered.name).toBe(id);
    expect(sha256(delivered.bytes)).toBe(sha256(data));
    expect(await handler.context.store.getRecord(id)).toBeNull();
    expect((await handler.context.store.storage.list()).map((d) => d.id)).toEqual([]);
    await expect(queue.waitForFile({ timeout: 200 })).rejects.toThrow();
  });

  it('a final concatenated from two partials is delivered; a finished upload can be terminated', async () => {
    await start();
    const parts = [randomBytes(7000), randomBytes(3000)];
    const ids: string[] = [];
    for (const part of parts) {
      const id = await create(part.length, { 'upload-concat': 'partial' });
      expect(await patch(id, 0, part)).toBe(204);
      ids.push(id);
    }
    const final = await handler.handle(
      request('POST', {
        'upload-concat': `final;${ids.map((id) => `/files/${id}`).join(' ')}`,
      }),
    );
    expect(final.status).toBe(201);
    await handler.settled();
    const delivered = await deliver();
    expect(delivered.name).toBe(idOf(final.headers.Location));
    expect(sha256(delivered.bytes)).toBe(sha256(Buffer.concat(parts)));

    const other = randomBytes(10);
    const id = await create(other.length);
    expect(await patch(id, 0, other)).toBe(204);
    const del = await handler.handle(request('DELETE', {}, { id }));
    expect(del.status).toBe(204);
    expect((await handler.handle(request('HEAD', {}, { id }))).status).toBe(404);
    expect((await readdir(join(root, 'completed'))).filter((n) => n.includes(id))).toEqual([]);
  });
});
