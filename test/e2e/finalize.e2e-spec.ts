import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  CompletedUploadQueue,
  TimeoutError,
  TusEvents,
  decodeRecordFile,
  type CompletedUpload,
  type TusEvent,
} from '../../src/index.js';
import {
  completedPaths,
  createTestApp,
  createUpload,
  entriesOf,
  headUpload,
  patchUpload,
  tempDirs,
  type TestApp,
  type TestAppOptions,
  uploadEntries,
} from '../support/app.js';
import { chunksOf, pollUntil, sha256, sha256File } from '../support/http.js';

const KiB = 1024;
const b64 = (s: string) => Buffer.from(s).toString('base64');
/** The on-disk record fields, tussi's names. */
const RECORD_FIELDS = [
  'created_at',
  'duration',
  'finished_at',
  'last_write',
  'length',
  'metadata',
  'offset',
  'server_metadata',
];

interface RecordJson {
  length: number | null;
  offset: number;
  metadata: Record<string, string>;
  server_metadata: Record<string, string>;
  created_at: number;
  last_write: number;
  finished_at: string | null;
  duration: number | null;
}

async function readRecord(path: string): Promise<RecordJson> {
  // A staging record's newest slot, or a completed record's JSON (see slotted-record.ts).
  return JSON.parse(decodeRecordFile(await readFile(path, 'utf8'))!.json) as RecordJson;
}

function queueOf(app: TestApp): CompletedUploadQueue {
  return app.app.get(CompletedUploadQueue);
}

/** Creates an upload of `data` (with `metadata`) and sends it in `pieces` PATCHes. */
async function upload(
  app: TestApp,
  data: Buffer,
  { metadata = {}, pieces = 1 }: { metadata?: Record<string, string>; pieces?: number } = {},
): Promise<string> {
  const header = Object.entries(metadata)
    .map(([key, value]) => `${key} ${b64(value)}`)
    .join(',');
  const { res, id } = await createUpload(app, data.length, {
    headers: header ? { 'Upload-Metadata': header } : {},
  });
  expect(res.status).toBe(201);
  const step = Math.ceil(data.length / pieces);
  for (let at = 0; at < data.length; at += step) {
    const patch = await patchUpload(app, id, at, data.subarray(at, at + step));
    expect(patch.status).toBe(204);
    expect(patch.headers['upload-offset']).toBe(String(Math.min(at + step, data.length)));
  }
  return id;
}

/** Claims every finished upload the queue has (holding all claims), until it has none. */
async function claimAll(queue: CompletedUploadQueue): Promise<CompletedUpload[]> {
  const claimed: CompletedUpload[] = [];
  for (;;) {
    try {
      claimed.push(await queue.waitForFile({ timeout: 400 }));
    } catch (e) {
      if (e instanceof TimeoutError) return claimed;
      throw e;
    }
  }
}

describe('finalize over real HTTP', () => {
  let app: TestApp;
  let events: TusEvent[];

  async function start(options: TestAppOptions = {}): Promise<TestApp> {
    events = [];
    app = await createTestApp({
      onCreate: () => ({ user: 'u1' }),
      onEvent: (event) => {
        events.push(event);
      },
      ...options,
    });
    return app;
  }

  beforeEach(async () => {
    await start();
  });
  afterEach(async () => {
    const errors = app.logged.errors;
    await app?.close();
    expect(errors).toEqual([]);
  });

  it('the last PATCH moves data and record to completedDir and empties staging', async () => {
    const data = randomBytes(300 * KiB + 7);
    const { id } = await createUpload(app, data.length, {
      headers: { 'Upload-Metadata': `filename ${b64('a.bin')},flag` },
    });
    const created = await readRecord(join(app.uploadDir, `${id}.meta`));

    const first = await patchUpload(app, id, 0, data.subarray(0, 100 * KiB));
    expect(first.status).toBe(204);
    // Not complete yet: still in staging, nothing in completedDir.
    expect(await entriesOf(app.uploadDir, id)).toEqual([id, `${id}.meta`].sort());
    expect(await entriesOf(app.completedDir, id)).toEqual([]);

    const before = Date.now();
    const last = await patchUpload(app, id, 100 * KiB, data.subarray(100 * KiB));
    const after = Date.now();
    expect(last.status).toBe(204);
    expect(last.headers['upload-offset']).toBe(String(data.length));

    const paths = completedPaths(app, id);
    expect(await entriesOf(app.completedDir, id)).toEqual([id, `${id}.meta`].sort());
    expect(await entriesOf(app.uploadDir, id)).toEqual([]);
    expect(await sha256File(paths.data)).toBe(sha256(data));
    expect((await stat(paths.data)).size).toBe(data.length);

    const record = await readRecord(paths.record);
    expect(Object.keys(record).sort()).toEqual(RECORD_FIELDS);
    expect(record).toMatchObject({
      length: data.length,
      offset: data.length,
      metadata: { filename: 'a.bin', flag: '' },
      server_metadata: { user: 'u1' },
      created_at: created.created_at,
    });
    expect(typeof record.finished_at).toBe('string');
    expect(new Date(record.finished_at!).toISOString()).toBe(record.finished_at);
    const finished = Date.parse(record.finished_at!);
    expect(finished).toBeGreaterThanOrEqual(before - 1);
    expect(finished).toBeLessThanOrEqual(after + 1);
    expect(typeof record.duration).toBe('number');
    expect(record.duration).toBeGreaterThanOrEqual(0);
    // duration is finished_at - created_at, in seconds.
    expect(record.duration).toBeCloseTo(finished / 1000 - record.created_at, 1);
    expect(record.last_write).toBeGreaterThanOrEqual(record.created_at);

    // One completion event for the upload, with the finalized record.
    const completed = await pollUntil(
      async () => events.filter((e) => e.name === TusEvents.Completed),
      (list) => list.length > 0,
      { what: 'the completion event' },
    );
    expect(completed).toHaveLength(1);
    expect(completed[0]).toMatchObject({ uploadId: id });
  });

  it('HEAD on a finished upload: 200, Upload-Offset == Upload-Length, no-store', async () => {
    const data = randomBytes(10 * KiB);
    const id = await upload(app, data, { metadata: { filename: 'h.txt' }, pieces: 3 });
    const { res, offset } = await headUpload(app, id);
    expect(res.status).toBe(200);
    expect(offset).toBe(data.length);
    expect(res.headers['upload-length']).toBe(String(data.length));
    expect(res.headers['cache-control']).toBe('no-store');
    expect(res.headers['tus-resumable']).toBe('1.0.0');
    expect(res.headers['upload-metadata']).toBe(`filename ${b64('h.txt')}`);
    expect(res.body.length).toBe(0);
  });

  it('a repeated final PATCH: 204 at the length, 409 elsewhere, 413 with bytes; never written', async () => {
    const data = randomBytes(64 * KiB + 1);
    const id = await upload(app, data);
    const paths = completedPaths(app, id);
    const dataHash = await sha256File(paths.data);
    const recordText = await readFile(paths.record, 'utf8');
    const length = String(data.length);

    // A client that lost the last response sends it again, without bytes (Content-Length: 0,
    // or an empty chunked body).
    for (const body of [Buffer.alloc(0), chunksOf(Buffer.alloc(0), 1)]) {
      const again = await patchUpload(app, id, data.length, body);
      expect(again.status).toBe(204);
      expect(again.headers['upload-offset']).toBe(length);
      expect(again.headers['tus-resumable']).toBe('1.0.0');
    }

    for (const [offset, body] of [
      [0, Buffer.alloc(0)],
      [0, randomBytes(16)],
      [data.length - 1, randomBytes(1)],
      [data.length + 1, Buffer.alloc(0)],
    ] as const) {
      const wrong = await patchUpload(app, id, offset, body);
      expect({ offset, status: wrong.status }).toEqual({ offset, status: 409 });
      expect(wrong.headers['upload-offset']).toBe(length);
      expect(wrong.headers['tus-resumable']).toBe('1.0.0');
    }

    const withBytes = await patchUpload(app, id, data.length, randomBytes(5));
    expect(withBytes.status).toBe(413);
    expect(withBytes.headers['tus-resumable']).toBe('1.0.0');
    // The same bytes sent chunked (no Content-Length) are refused alike, never acknowledged.
    const chunked = await patchUpload(app, id, data.length, chunksOf(randomBytes(5), 5));
    expect(chunked.status).toBe(413);

    expect(await sha256File(paths.data)).toBe(dataHash);
    expect(await sha256File(paths.data)).toBe(sha256(data));
    expect(await readFile(paths.record, 'utf8')).toBe(recordText);
    expect(await entriesOf(app.completedDir, id)).toEqual([id, `${id}.meta`].sort());
    expect(await entriesOf(app.uploadDir, id)).toEqual([]);
    const head = await headUpload(app, id);
    expect(head.res.status).toBe(200);
    expect(head.offset).toBe(data.length);
    // No second completion.
    expect(events.filter((e) => e.name === TusEvents.Completed)).toHaveLength(1);
  });

  it('a consumer takes it (waitForFile, save, release); HEAD and the final PATCH still answer', async () => {
    const data = randomBytes(200 * KiB + 3);
    const id = await upload(app, data, { metadata: { filename: 'taken.bin' }, pieces: 2 });
    const dest = join(app.completedDir, '..', 'dest');
    await mkdir(dest);

    const queue = queueOf(app);
    const taken = await queue.waitForFile({ timeout: 5000 });
    expect(taken.name).toBe(id);
    expect(taken.record.metadata).toEqual({ filename: 'taken.bin' });
    expect(taken.record.serverMetadata).toEqual({ user: 'u1' });
    expect(taken.record.length).toBe(data.length);
    expect(taken.record.finishedAt).toBeInstanceOf(Date);
    // While held, nobody else gets it.
    await expect(queue.waitForFile({ timeout: 300 })).rejects.toBeInstanceOf(TimeoutError);
    await taken.save(join(dest, 'taken.bin'));
    await taken.release();

    expect(await sha256File(join(dest, 'taken.bin'))).toBe(sha256(data));
    // Only the receipt is left: no data, no record.
    expect(await entriesOf(app.completedDir, id)).toEqual([`${id}.done`]);
    expect(await entriesOf(app.uploadDir, id)).toEqual([]);
    await expect(queue.waitForFile({ timeout: 300 })).rejects.toBeInstanceOf(TimeoutError);

    const head = await headUpload(app, id);
    expect(head.res.status).toBe(200);
    expect(head.offset).toBe(data.length);
    expect(head.res.headers['upload-length']).toBe(String(data.length));
    expect(head.res.headers['cache-control']).toBe('no-store');
    expect(head.res.headers['upload-metadata']).toBe(`filename ${b64('taken.bin')}`);

    const again = await patchUpload(app, id, data.length, Buffer.alloc(0));
    expect(again.status).toBe(204);
    expect(again.headers['upload-offset']).toBe(String(data.length));
    const wrong = await patchUpload(app, id, 0, randomBytes(8));
    expect(wrong.status).toBe(409);
    expect(wrong.headers['upload-offset']).toBe(String(data.length));
    // Nothing came back to life in either directory.
    expect(await entriesOf(app.completedDir, id)).toEqual([`${id}.done`]);
    expect(await entriesOf(app.uploadDir, id)).toEqual([]);
  });

  it('HEAD and the final PATCH still answer while a consumer holds it, data and record saved', async () => {
    // The sample's consumer does save + saveRecord, then releases: a client asking in between
    // must still learn that its upload is complete, never get a 404.
    const data = randomBytes(3 * KiB);
    const id = await upload(app, data, { metadata: { filename: 'held.bin' } });
    const dest = join(app.completedDir, '..', 'dest');
    await mkdir(dest);
    const taken = await queueOf(app).waitForFile({ timeout: 5000 });
    expect(taken.name).toBe(id);
    try {
      await taken.save(join(dest, 'held.bin'));
      const afterSave = await headUpload(app, id);
      expect({ status: afterSave.res.status, offset: afterSave.offset }).toEqual({
        status: 200,
        offset: data.length,
      });
      await taken.saveRecord(join(dest, 'held.bin.meta'));
      const afterRecord = await headUpload(app, id);
      expect({ status: afterRecord.res.status, offset: afterRecord.offset }).toEqual({
        status: 200,
        offset: data.length,
      });
      const again = await patchUpload(app, id, data.length, Buffer.alloc(0));
      expect({ status: again.status, offset: again.headers['upload-offset'] }).toEqual({
        status: 204,
        offset: String(data.length),
      });
    } finally {
      await taken.release();
    }
    expect((await headUpload(app, id)).offset).toBe(data.length);
  });

  it('an empty upload (Upload-Length: 0) is finalized by its POST', async () => {
    const { res, id } = await createUpload(app, 0, {
      headers: { 'Upload-Metadata': `filename ${b64('empty.txt')}` },
    });
    expect(res.status).toBe(201);
    const paths = completedPaths(app, id);
    expect(await entriesOf(app.uploadDir, id)).toEqual([]);
    expect(await entriesOf(app.completedDir, id)).toEqual([id, `${id}.meta`].sort());
    expect((await stat(paths.data)).size).toBe(0);
    const record = await readRecord(paths.record);
    expect(Object.keys(record).sort()).toEqual(RECORD_FIELDS);
    expect(record).toMatchObject({
      length: 0,
      offset: 0,
      metadata: { filename: 'empty.txt' },
      server_metadata: { user: 'u1' },
    });
    expect(new Date(record.finished_at!).toISOString()).toBe(record.finished_at);
    expect(record.duration).toBeGreaterThanOrEqual(0);

    const head = await headUpload(app, id);
    expect(head.res.status).toBe(200);
    expect(head.offset).toBe(0);
    expect(head.res.headers['upload-length']).toBe('0');

    const again = await patchUpload(app, id, 0, Buffer.alloc(0));
    expect(again.status).toBe(204);
    expect(again.headers['upload-offset']).toBe('0');

    const taken = await queueOf(app).waitForFile({ timeout: 5000 });
    expect(taken.name).toBe(id);
    expect(taken.record.length).toBe(0);
    await taken.release();
  });

  it('two uploads with the same filename never collide', async () => {
    const a = randomBytes(5 * KiB);
    const b = randomBytes(7 * KiB);
    const idA = await upload(app, a, { metadata: { filename: 'same.txt' } });
    const idB = await upload(app, b, { metadata: { filename: 'same.txt' } });
    expect(idA).not.toBe(idB);
    expect(await sha256File(completedPaths(app, idA).data)).toBe(sha256(a));
    expect(await sha256File(completedPaths(app, idB).data)).toBe(sha256(b));

    const dest = join(app.completedDir, '..', 'dest');
    await mkdir(dest);
    const claimed = await claimAll(queueOf(app));
    expect(claimed.map((u) => u.name).sort()).toEqual([idA, idB].sort());
    for (const taken of claimed) {
      expect(taken.record.metadata.filename).toBe('same.txt');
      await taken.save(join(dest, `${taken.name}-${taken.record.metadata.filename}`));
      await taken.release();
    }
    expect((await readdir(dest)).sort()).toEqual([`${idA}-same.txt`, `${idB}-same.txt`].sort());
    expect(await sha256File(join(dest, `${idA}-same.txt`))).toBe(sha256(a));
    expect(await sha256File(join(dest, `${idB}-same.txt`))).toBe(sha256(b));
  });
});

describe('finalize after a crash', () => {
  let dirs: Awaited<ReturnType<typeof tempDirs>>;
  let app: TestApp | undefined;

  beforeEach(async () => {
    dirs = await tempDirs('tussi-recover-');
  });
  afterEach(async () => {
    await app?.close();
    app = undefined;
    await rm(dirs.root, { recursive: true, force: true });
  });

  /**
   * Through a real server: an upload of `data` with all bytes but the last one sent. The server
   * is then stopped, and the last byte and an offset == length record are written as the
   * crashed request would have left them, before its finalize ran.
   */
  async function uploadAllButFinalize(server: TestApp, data: Buffer, filename: string) {
    const { id } = await createUpload(server, data.length, {
      headers: { 'Upload-Metadata': `filename ${b64(filename)}` },
    });
    const patch = await patchUpload(server, id, 0, data.subarray(0, data.length - 1));
    expect(patch.status).toBe(204);
    return id;
  }

  async function writeLastByte(id: string, data: Buffer): Promise<RecordJson> {
    const staged = join(dirs.uploadDir, id);
    // The staged data holds the bytes written so far (nothing is reserved past them).
    const bytes = await readFile(staged);
    await writeFile(staged, Buffer.concat([bytes.subarray(0, data.length - 1), data.subarray(-1)]));
    const recordPath = join(dirs.uploadDir, `${id}.meta`);
    const record = await readRecord(recordPath);
    expect(record.offset).toBe(data.length - 1);
    record.offset = data.length;
    record.last_write = Date.now() / 1000;
    await writeFile(recordPath, JSON.stringify(record));
    return record;
  }

  it('finishes every finalize a crash interrupted at start-up; each is claimable exactly once', async () => {
    const first = await createTestApp({
      uploadDir: dirs.uploadDir,
      completedDir: dirs.completedDir,
      janitor: false,
    });
    app = first;
    const payloads = {
      // (1) offset == length in staging, finalize never ran.
      neverRan: randomBytes(20 * KiB + 1),
      // (2) record and data already in completedDir, the staging record still there.
      afterRename: randomBytes(30 * KiB + 2),
      // (3) completed record written, data not yet renamed (crash inside the hand-over).
      beforeRename: randomBytes(40 * KiB + 3),
      // (4) like (2), and a consumer of another process already took it (a receipt is left).
      alreadyTaken: randomBytes(1 * KiB),
    };
    const ids = {} as Record<keyof typeof payloads, string>;
    for (const [name, data] of Object.entries(payloads) as [keyof typeof payloads, Buffer][]) {
      ids[name] = await uploadAllButFinalize(first, data, `${name}.bin`);
    }
    // An upload that is not complete must stay as it is.
    const partial = randomBytes(8 * KiB);
    const { id: partialId } = await createUpload(first, partial.length);
    expect((await patchUpload(first, partialId, 0, partial.subarray(0, 1000))).status).toBe(204);
    await first.close();
    app = undefined;

    const records = {} as Record<keyof typeof payloads, RecordJson>;
    for (const [name, data] of Object.entries(payloads) as [keyof typeof payloads, Buffer][]) {
      records[name] = await writeLastByte(ids[name], data);
    }
    const finishedRecord = (record: RecordJson) =>
      JSON.stringify({ ...record, finished_at: new Date().toISOString(), duration: 1.25 });
    for (const name of ['afterRename', 'beforeRename', 'alreadyTaken'] as const) {
      await writeFile(completedPaths(dirs, ids[name]).record, finishedRecord(records[name]));
    }
    for (const name of ['afterRename', 'alreadyTaken'] as const) {
      await rename(join(dirs.uploadDir, ids[name]), completedPaths(dirs, ids[name]).data);
    }
    // (4): the consumer saved the data elsewhere and released: only its receipt is left.
    const taken = completedPaths(dirs, ids.alreadyTaken);
    await rm(taken.data);
    await rename(taken.record, taken.receipt);

    // A new server on the same directories.
    app = await createTestApp({
      uploadDir: dirs.uploadDir,
      completedDir: dirs.completedDir,
      janitor: false,
    });

    // Staging holds only the unfinished upload, untouched.
    expect((await uploadEntries(dirs.uploadDir)).sort()).toEqual(
      [partialId, `${partialId}.meta`].sort(),
    );
    expect((await readRecord(join(dirs.uploadDir, `${partialId}.meta`))).offset).toBe(1000);
    expect((await headUpload(app, partialId)).offset).toBe(1000);

    for (const name of Object.keys(payloads) as (keyof typeof payloads)[]) {
      const head = await headUpload(app, ids[name]);
      expect({ name, status: head.res.status, offset: head.offset }).toEqual({
        name,
        status: 200,
        offset: payloads[name].length,
      });
    }
    // (1) got a finished record at recovery.
    const recovered = await readRecord(completedPaths(dirs, ids.neverRan).record);
    expect(recovered).toMatchObject({
      length: payloads.neverRan.length,
      offset: payloads.neverRan.length,
      metadata: { filename: 'neverRan.bin' },
    });
    expect(new Date(recovered.finished_at!).toISOString()).toBe(recovered.finished_at);
    expect(recovered.duration).toBeGreaterThanOrEqual(0);

    // Each of (1)-(3) is handed out once; (4) was already taken and is not handed out again.
    const queue = queueOf(app);
    const claimed = await claimAll(queue);
    const expected = [ids.neverRan, ids.afterRename, ids.beforeRename];
    expect(claimed.map((u) => u.name).sort()).toEqual([...expected].sort());
    for (const upload of claimed) {
      const name = (Object.keys(ids) as (keyof typeof ids)[]).find((k) => ids[k] === upload.name)!;
      expect(await sha256File(upload.path)).toBe(sha256(payloads[name]));
      expect(upload.record.metadata.filename).toBe(`${name}.bin`);
      expect(upload.record.isComplete).toBe(true);
      await upload.release();
    }
    await expect(queue.waitForFile({ timeout: 400 })).rejects.toBeInstanceOf(TimeoutError);
    // Only receipts are left in completedDir.
    expect((await readdir(dirs.completedDir)).sort()).toEqual(
      [...expected, ids.alreadyTaken].map((id) => `${id}.done`).sort(),
    );
    expect(app.logged.errors).toEqual([]);
  });
});
