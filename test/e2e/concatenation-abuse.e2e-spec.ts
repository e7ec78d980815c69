import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import {
  CompletedUploadQueue,
  TimeoutError,
  TusHandler,
  type CompletedUpload,
} from '../../src/index.js';
import {
  createTestApp,
  createUpload,
  headUpload,
  idOf,
  patchUpload,
  type TestApp,
  uploadEntries,
} from '../support/app.js';

/**
 * Concatenation as an attacker uses it, over real HTTP against the module's default stack:
 * one upload turned into many deliveries, finals raced on one partial, partials deleted under
 * a final, finals left waiting. Each is refused or delivered correctly, never a 5xx, and
 * nothing is left behind.
 */
/** Waits (bounded: 5 s) until `condition` holds. */
async function until(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !condition(); i++) await new Promise((r) => setTimeout(r, 10));
  expect(condition()).toBe(true);
}

describe('concatenation under abuse', () => {
  let s: TestApp;
  let queue: CompletedUploadQueue;

  beforeAll(async () => {
    s = await createTestApp({ maxSize: 1024 * 1024, lockWaitMs: 500 });
    queue = s.app.get(CompletedUploadQueue);
  });
  afterAll(() => s.close());

  async function partial(data: Buffer): Promise<string> {
    const { res, id } = await createUpload(s, data.length, {
      headers: { 'Upload-Concat': 'partial' },
    });
    expect(res.status).toBe(201);
    if (data.length > 0) expect((await patchUpload(s, id, 0, data)).status).toBe(204);
    return id;
  }

  function final(...parts: string[]) {
    return s.request({
      method: 'POST',
      path: '/files',
      headers: {
        'Tus-Resumable': '1.0.0',
        'Upload-Concat': `final;${parts.map((p) => `/files/${p}`).join(' ')}`,
      },
    });
  }

  /** Every upload the queue holds now, each released (its files deleted). */
  async function drain(): Promise<Map<string, number>> {
    const delivered = new Map<string, number>();
    for (;;) {
      let upload: CompletedUpload;
      try {
        upload = await queue.waitForFile({ timeout: 300 });
      } catch (e) {
        if (e instanceof TimeoutError) return delivered;
        throw e;
      }
      delivered.set(upload.name, upload.record.length ?? -1);
      await upload.release();
    }
  }

  it('a final of zero bytes is delivered at once', async () => {
    await drain();
    const empty = await partial(Buffer.alloc(0));
    const res = await final(empty);
    expect(res.status).toBe(201);
    await s.app.get(TusHandler).settled();
    const delivered = await drain();
    expect([...delivered]).toEqual([[idOf(String(res.headers.location)), 0]]);
  });

  it('20 finals raced on one partial: two delivered, the rest 409, no 5xx', async () => {
    await drain();
    const part = await partial(randomBytes(64 * 1024));
    const answers = await Promise.all(Array.from({ length: 20 }, () => final(part)));
    const statuses = answers.map((r) => r.status).sort();
    expect(statuses.filter((st) => st >= 500)).toEqual([]);
    const created = answers.filter((r) => r.status === 201);
    // Assembled finals remove their partial: later ones find it gone (404) or in use (409).
    expect(created.length).toBeGreaterThanOrEqual(1);
    expect(created.length).toBeLessThanOrEqual(2);
    for (const r of answers.filter((a) => a.status !== 201)) expect([404, 409]).toContain(r.status);
    await s.app.get(TusHandler).settled();
    const delivered = await drain();
    expect(delivered.size).toBe(created.length);
    // Nothing left in staging: the partial was removed with the last final assembled.
    expect(await uploadEntries(s.uploadDir)).toEqual([]);
  });

  it('a final naming one partial twice is 400; 100 times each in two finals delivers nothing', async () => {
    await drain();
    const part = await partial(randomBytes(1024));
    const twice = await final(part, part);
    expect(twice.status).toBe(400);
    const hundred = await final(...Array.from({ length: 100 }, () => part));
    expect(hundred.status).toBe(400);
    expect((await drain()).size).toBe(0);
    const removed = await s.request({
      method: 'DELETE',
      path: `/files/${part}`,
      headers: { 'Tus-Resumable': '1.0.0' },
    });
    expect(removed.status).toBe(204);
  });

  it('a DELETE of the partial during assembly: the final is delivered whole or refused (410), never a 500', async () => {
    await drain();
    const part = await partial(randomBytes(1024 * 1024));
    const [created, deleted] = await Promise.all([
      final(part),
      s.request({
        method: 'DELETE',
        path: `/files/${part}`,
        headers: { 'Tus-Resumable': '1.0.0' },
      }),
    ]);
    expect([201, 404, 410]).toContain(created.status);
    expect([204, 404, 423]).toContain(deleted.status);
    await s.app.get(TusHandler).settled();
    const delivered = await drain();
    if (created.status === 201) {
      expect([...delivered.values()]).toEqual([1024 * 1024]);
    } else {
      expect(delivered.size).toBe(0);
    }
    expect(await uploadEntries(s.uploadDir)).toEqual([]);
    expect(s.logged.errors).toEqual([]);
  });

  it('a final waiting for a partial being written starts no timer; a DELETE of the partial fails it', async () => {
    await drain();
    const { id: part } = await createUpload(s, 10, { headers: { 'Upload-Concat': 'partial' } });
    // A PATCH that sends 3 bytes and stalls: it holds the partial's lock.
    const stalled = patchUpload(s, part, 0, Buffer.from('abcdefghij'), {
      stallAfterBytes: 3,
      timeoutMs: 3000,
    }).catch(() => null);
    await until(() => s.app.get(TusHandler).context.activeWrites.has(part));
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const before = timers();
    const waiting = await final(part);
    expect(waiting.status).toBe(201);
    const finalId = idOf(String(waiting.headers.location));
    expect(timers()).toBeLessThanOrEqual(before);
    await stalled;
    // The stalled body is cut by the client; its 3 bytes are kept, and the final recorded.
    const del = await s.request({
      method: 'DELETE',
      path: `/files/${part}`,
      headers: { 'Tus-Resumable': '1.0.0' },
    });
    expect(del.status).toBe(204);
    await s.app.get(TusHandler).settled();
    expect((await headUpload(s, finalId)).res.status).toBe(404);
    expect(await uploadEntries(s.uploadDir)).toEqual([]);
  });
});

describe('a partial another final still waits for', () => {
  let s: TestApp;
  beforeAll(async () => {
    s = await createTestApp();
  });
  afterAll(() => s.close());

  it('counts the finals already assembled from it: at most maxFinalsPerPartial deliveries', async () => {
    const handler = s.app.get(TusHandler);
    const partial = async (data: Buffer, sent: number) => {
      const { id } = await createUpload(s, data.length, {
        headers: { 'Upload-Concat': 'partial' },
      });
      if (sent > 0) expect((await patchUpload(s, id, 0, data.subarray(0, sent))).status).toBe(204);
      return id;
    };
    const final = (...ids: string[]) =>
      s.request({
        method: 'POST',
        path: '/files',
        headers: {
          'Tus-Resumable': '1.0.0',
          'Upload-Concat': `final;${ids.map((id) => `/files/${id}`).join(' ')}`,
        },
      });
    const pData = randomBytes(1000);
    const qData = randomBytes(500);
    const p = await partial(pData, pData.length);
    const q = await partial(qData, 100);
    // B waits for q; A is assembled from p at once, and p is kept for B.
    expect((await final(p, q)).status).toBe(201);
    expect((await final(p)).status).toBe(201);
    await handler.settled();
    // A third final of p would be a third delivery of its bytes.
    expect((await final(p)).status).toBe(409);
    expect((await patchUpload(s, q, 100, qData.subarray(100))).status).toBe(204);
    await handler.settled();
    const queue = s.app.get(CompletedUploadQueue);
    let delivered = 0;
    for (;;) {
      const upload = await queue.waitForFile({ timeout: 300 }).catch(() => null);
      if (!upload) break;
      delivered++;
      await upload.release();
    }
    expect(delivered).toBe(2);
    expect(await uploadEntries(s.uploadDir)).toEqual([]);
  });
});

describe('1,000 finals waiting on a locked partial', () => {
  let s: TestApp;
  beforeAll(async () => {
    // No rate cut: the stalled body holds the lock for as long as the test needs.
    s = await createTestApp({ maxFinalsPerPartial: 1000, lockWaitMs: 100, minBytesPerSecond: 0 });
  });
  afterAll(() => s.close());

  it('start no timer and no background work, and all go when the partial is deleted', async () => {
    const { id: part } = await createUpload(s, 10, { headers: { 'Upload-Concat': 'partial' } });
    // Stalled: it holds the partial's lock until the partial is deleted.
    const stalled = patchUpload(s, part, 0, Buffer.from('abcdefghij'), {
      stallAfterBytes: 3,
      timeoutMs: 60_000,
    }).catch(() => null);
    const handler = s.app.get(TusHandler);
    await until(() => handler.context.activeWrites.has(part));
    const timers = () => process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    const before = timers();
    const finals: string[] = [];
    for (let batch = 0; batch < 10; batch++) {
      const answers = await Promise.all(
        Array.from({ length: 100 }, () =>
          s.request({
            method: 'POST',
            path: '/files',
            headers: { 'Tus-Resumable': '1.0.0', 'Upload-Concat': `final;/files/${part}` },
          }),
        ),
      );
      for (const res of answers) {
        expect(res.status).toBe(201);
        finals.push(idOf(String(res.headers.location)));
      }
    }
    // Their clients are gone: nothing of theirs runs (no poller, no background task); each is
    // held to be recorded with the stalled body's bytes.
    expect(timers()).toBeLessThanOrEqual(before);
    expect(handler.context.background.size).toBe(0);
    expect(handler.context.pendingFinals.get(part)?.size).toBe(1000);
    // The partial is deleted under the stalled body (which stops): every final fails with it.
    const del = await s.request({
      method: 'DELETE',
      path: `/files/${part}`,
      headers: { 'Tus-Resumable': '1.0.0' },
    });
    expect(del.status).toBe(204);
    await stalled;
    await handler.settled();
    expect(handler.context.pendingFinals.has(part)).toBe(false);
    for (const id of finals.slice(0, 20)) {
      expect((await headUpload(s, id)).res.status).toBe(404);
    }
    expect(await uploadEntries(s.uploadDir)).toEqual([]);
    expect(s.logged.errors).toEqual([]);
  }, 60_000);
});

describe('a trickling PATCH never keeps the rightful client out', () => {
  let s: TestApp;
  beforeAll(async () => {
    s = await createTestApp({ lockWaitMs: 1000 });
  });
  afterAll(() => s.close());

  it('a newer PATCH takes the lock over a body silent for 2 s; the silent one keeps its bytes', async () => {
    const data = randomBytes(1000);
    const { id } = await createUpload(s, data.length);
    const trickler = patchUpload(s, id, 0, data, { stallAfterBytes: 100, timeoutMs: 8000 });
    await new Promise((r) => setTimeout(r, 2300));
    // The rightful client resumes: the trickler gives way, its 100 bytes are kept.
    const first = await patchUpload(s, id, 0, data);
    expect(first.status).toBe(409);
    expect(first.headers['upload-offset']).toBe('100');
    const rest = await patchUpload(s, id, 100, data.subarray(100));
    expect(rest.status).toBe(204);
    expect(rest.headers['upload-offset']).toBe('1000');
    const answered = await trickler.catch(() => null);
    if (answered) expect(answered.status).toBe(423);
  });

  it('a body slower than minBytesPerSecond is cut after 10 s even when the rightful client is on another process', async () => {
    // Two servers on one directory, as two worker processes: neither sees the other's writes,
    // only the upload's lock.
    const other = await createTestApp({
      uploadDir: s.uploadDir,
      completedDir: s.completedDir,
      lockWaitMs: 1000,
    });
    try {
      const data = randomBytes(100_000);
      const { id } = await createUpload(s, data.length);
      let sent = 0;
      async function* dribble(): AsyncGenerator<Buffer> {
        // Never silent for 2 s, but about 20 bytes a second; bounded at 20 s.
        for (let i = 0; i < 40 && sent < data.length; i++) {
          const size = i === 0 ? 100 : 10;
          yield data.subarray(sent, sent + size);
          sent += size;
          await new Promise((r) => setTimeout(r, 500));
        }
      }
      const started = Date.now();
      const trickler = patchUpload(s, id, 0, dribble(), {
        headers: { 'Content-Length': String(data.length) },
        timeoutMs: 25_000,
      }).catch(() => null);
      await new Promise((r) => setTimeout(r, 1000));
      // The rightful client, on the other server, resumes until it gets through.
      let done = false;
      while (!done && Date.now() - started < 20_000) {
        const offset = (await headUpload(other, id)).offset;
        const res = await patchUpload(other, id, offset, data.subarray(offset));
        if (res.status === 204) done = true;
        else expect([409, 423]).toContain(res.status);
      }
      expect(done).toBe(true);
      // Cut by its own process after 10 s of dribbling, its bytes kept.
      expect(Date.now() - started).toBeGreaterThanOrEqual(10_000);
      const answered = await trickler;
      if (answered) expect(answered.status).toBe(423);
      expect(sent).toBeLessThan(data.length);
      expect((await headUpload(other, id)).offset).toBe(data.length);
    } finally {
      await other.close();
    }
  }, 30_000);

  it('a body that streams keeps the lock: the newer PATCH waits, then 409', async () => {
    const data = randomBytes(256 * 1024);
    const { id } = await createUpload(s, data.length);
    async function* steady(): AsyncGenerator<Buffer> {
      for (let at = 0; at < data.length; at += 16 * 1024) {
        yield data.subarray(at, at + 16 * 1024);
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    const streaming = patchUpload(s, id, 0, steady(), {
      headers: { 'Content-Length': String(data.length) },
    });
    await new Promise((r) => setTimeout(r, 100));
    const contender = await patchUpload(s, id, 0, data);
    expect([409, 423]).toContain(contender.status);
    expect((await streaming).status).toBe(204);
  });
});
