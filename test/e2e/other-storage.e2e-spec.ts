import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import {
  CompletedUploadQueue,
  MemoryRecordStore,
  MemoryStorage,
  MemoryUploadLocker,
} from '../../src/index.js';
import {
  createTestApp,
  createUpload,
  headUpload,
  idOf,
  patchUpload,
  type TestApp,
} from '../support/app.js';
import { sha256 } from '../support/http.js';

/**
 * The module with a storage that is not the filesystem (here the in-memory one): every upload
 * finishes and is delivered through the default completed queue, its bytes copied in.
 */
describe('TusModule with another storage (memory)', () => {
  let s: TestApp;
  let storage: MemoryStorage;
  let queue: CompletedUploadQueue;

  beforeAll(async () => {
    storage = new MemoryStorage();
    s = await createTestApp({
      storage,
      recordStore: new MemoryRecordStore(),
      locker: new MemoryUploadLocker(),
    });
    queue = s.app.get(CompletedUploadQueue);
  });
  afterAll(() => s.close());

  async function deliver(): Promise<{ name: string; bytes: Buffer }> {
    const upload = await queue.waitForFile({ timeout: 5000 });
    try {
      return { name: upload.name, bytes: await readFile(upload.path) };
    } finally {
      await upload.release();
    }
  }

  it('an upload in several PATCHes completes (204) and is delivered byte-identical', async () => {
    const data = randomBytes(3 * 1024 * 1024 + 7);
    const { res, id } = await createUpload(s, data.length, {
      headers: { 'Upload-Metadata': `filename ${Buffer.from('a.bin').toString('base64')}` },
    });
    expect(res.status).toBe(201);
    expect((await patchUpload(s, id, 0, data.subarray(0, 1_000_000))).status).toBe(204);
    const last = await patchUpload(s, id, 1_000_000, data.subarray(1_000_000));
    expect(last.status).toBe(204);
    expect(last.headers['upload-offset']).toBe(String(data.length));
    // Finished: HEAD answers from the queue, the storage holds nothing of it any more.
    expect((await headUpload(s, id)).offset).toBe(data.length);
    expect(storage.files.has(id)).toBe(false);
    const delivered = await deliver();
    expect(delivered.name).toBe(id);
    expect(sha256(delivered.bytes)).toBe(sha256(data));
    expect(s.logged.errors).toEqual([]);
  });

  it('creation-with-upload, a zero-length upload and a concatenated final are delivered too', async () => {
    const whole = randomBytes(5000);
    const created = await s.request({
      method: 'POST',
      path: '/files',
      headers: {
        'Tus-Resumable': '1.0.0',
        'Upload-Length': String(whole.length),
        'Content-Type': 'application/offset+octet-stream',
      },
      body: whole,
    });
    expect(created.status).toBe(201);
    expect(sha256((await deliver()).bytes)).toBe(sha256(whole));

    expect((await createUpload(s, 0)).res.status).toBe(201);
    expect((await deliver()).bytes.length).toBe(0);

    const parts = [randomBytes(1000), randomBytes(2000)];
    const ids: string[] = [];
    for (const part of parts) {
      const { id } = await createUpload(s, part.length, {
        headers: { 'Upload-Concat': 'partial' },
      });
      expect((await patchUpload(s, id, 0, part)).status).toBe(204);
      ids.push(id);
    }
    const final = await s.request({
      method: 'POST',
      path: '/files',
      headers: {
        'Tus-Resumable': '1.0.0',
        'Upload-Concat': `final;${ids.map((id) => `/files/${id}`).join(' ')}`,
      },
    });
    expect(final.status).toBe(201);
    const delivered = await deliver();
    expect(delivered.name).toBe(idOf(String(final.headers.location)));
    expect(sha256(delivered.bytes)).toBe(sha256(Buffer.concat(parts)));
    // Nothing left: no temp file in the queue, nothing in the storage.
    expect((await readdir(s.completedDir)).filter((n) => n.endsWith('.tmp'))).toEqual([]);
    expect(storage.files.size).toBe(0);
    expect(s.logged.errors).toEqual([]);
  });
});
