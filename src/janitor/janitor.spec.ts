import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TusHandler } from '../protocol/tus-handler.js';
import { UploadRecord } from '../core/upload-record.js';
import { FilesystemCompletedQueue } from '../queue/filesystem-completed.queue.js';
import { FileUploadLocker } from '../storage/file-upload.locker.js';
import { FilesystemRecordStore } from '../storage/filesystem-record.store.js';
import { FilesystemStorage } from '../storage/filesystem.storage.js';
import { UploadStorageService } from '../storage/upload-storage.service.js';
import { Janitor, type JanitorSummary } from './janitor.js';

/** Ages the janitor is built with, in seconds. */
const STALE = 3600;
const COMPLETED = 7200;
const ORPHAN = 600;
const NOTHING: JanitorSummary = {
  finalized: 0,
  stale: 0,
  orphanedRecords: 0,
  orphanedData: 0,
  expiredCompleted: 0,
  tempFiles: 0,
  lapsedPromises: 0,
};

let root: string;
let uploadDir: string;
let completedDir: string;
let store: UploadStorageService;
let queue: FilesystemCompletedQueue;
let janitor: Janitor;
let errors: string[];

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'tussi-janitor-'));
  uploadDir = join(root, 'uploads');
  completedDir = join(root, 'completed');
  const storage = new FilesystemStorage({ directory: uploadDir, fsync: false, log: () => {} });
  const records = new FilesystemRecordStore(uploadDir, false);
  store = new UploadStorageService(
    storage,
    records,
    new FileUploadLocker((id) => storage.pathOf(id)),
  );
  queue = new FilesystemCompletedQueue({
    directory: completedDir,
    stagingDirectory: uploadDir,
    fsync: false,
    pollIntervalMs: 100,
    log: () => {},
  });
  errors = [];
  const handler = new TusHandler({
    options: { maxMetadataSize: 4096, lockWaitMs: 1000, bodyIdleTimeoutMs: 0 },
    store,
    queue,
    logger: { error: (m, e) => errors.push(`${m}: ${String(e)}`), warn: () => {} },
  });
  janitor = new Janitor(handler.context, {
    staleUploadAge: STALE,
    completedFileAge: COMPLETED,
    orphanAge: ORPHAN,
    // Promises lapse in the space-accounting e2e; these cases are about deletions.
    promiseLapseAge: Number.POSITIVE_INFINITY,
  });
});

afterEach(async () => {
  await queue.close();
  await rm(root, { recursive: true, force: true });
  expect(errors).toEqual([]);
});

const nowSeconds = () => Date.now() / 1000;

/** Sets a file's mtime (and atime) `ageSeconds` into the past. */
async function age(path: string, ageSeconds: number): Promise<void> {
  const when = new Date(Date.now() - ageSeconds * 1000);
  await utimes(path, when, when);
}

/**
 * An upload in staging as the server leaves it: `{id}` data (`offset` bytes of `length`) and
 * `{id}.meta`, created and last written `ageSeconds` ago (record and data mtime).
 */
async function staged(
  length: number,
  offset: number,
  ageSeconds: number,
  { record = true, data = true } = {},
): Promise<string> {
  const id = randomUUID();
  const at = nowSeconds() - ageSeconds;
  if (data) {
    await writeFile(join(uploadDir, id), Buffer.alloc(length, 7));
    await age(join(uploadDir, id), ageSeconds);
  }
  if (record) {
    const rec = new UploadRecord(length, offset, { filename: `${id}.bin` }, {}, at, at);
    await writeFile(join(uploadDir, `${id}.meta`), JSON.stringify(rec));
    await age(join(uploadDir, `${id}.meta`), ageSeconds);
  }
  return id;
}

/** A finished upload handed to the queue, its files in completedDir `ageSeconds` old. */
async function completed(content: string, ageSeconds: number): Promise<string> {
  const id = randomUUID();
  await writeFile(join(uploadDir, id), content);
  const record = new UploadRecord(content.length, content.length, { filename: 'c.txt' });
  record.finishedAt = new Date();
  record.duration = 1;
  await queue.enqueue(id, record);
  await age(join(completedDir, id), ageSeconds);
  await age(join(completedDir, `${id}.meta`), ageSeconds);
  return id;
}

const stagingEntries = async (id: string) =>
  (await readdir(uploadDir)).filter((n) => n.includes(id)).sort();
const completedEntries = async (id: string) =>
  (await readdir(completedDir)).filter((n) => n.includes(id)).sort();

describe('Janitor', () => {
  it('finalizes a complete upload a crash left in staging, even an old one (never deletes it)', async () => {
    const id = await staged(10, 10, STALE * 10);
    expect(await janitor.run()).toEqual({ ...NOTHING, finalized: 1 });
    expect(await stagingEntries(id)).toEqual([]);
    expect(await completedEntries(id)).toEqual([id, `${id}.meta`].sort());
    const record = await UploadRecord.fromFile(join(completedDir, `${id}.meta`));
    expect(record.isComplete).toBe(true);
    expect(record.finishedAt).toBeInstanceOf(Date);
    expect(record.duration).toBeGreaterThanOrEqual(0);
    const upload = await queue.waitForFile({ timeout: 1000 });
    expect(upload.name).toBe(id);
    expect(await readFile(upload.path)).toEqual(Buffer.alloc(10, 7));
    await upload.release();
  });

  it('drops the staging record of an upload whose data already reached the queue', async () => {
    // A crash after finalize renamed the data, before it removed the staging record.
    const id = await staged(4, 4, 10);
    const record = (await store.getRecord(id))!;
    record.finishedAt = new Date();
    await queue.enqueue(id, record);
    expect(await stagingEntries(id)).toEqual([`${id}.meta`]);
    expect(await janitor.run()).toEqual({ ...NOTHING, finalized: 1 });
    expect(await stagingEntries(id)).toEqual([]);
    expect(await completedEntries(id)).toEqual([id, `${id}.meta`].sort());
  });

  it('deletes an unfinished upload with no write for staleUploadAge, keeps a recent one', async () => {
    const stale = await staged(100, 40, STALE + 60);
    const recent = await staged(100, 40, STALE - 60);
    expect(await janitor.run()).toEqual({ ...NOTHING, stale: 1 });
    expect(await stagingEntries(stale)).toEqual([]);
    expect(await stagingEntries(recent)).toEqual([recent, `${recent}.meta`].sort());
    expect(await completedEntries(stale)).toEqual([]);
  });

  it.each([
    ['deletes a stale upload', 100, 40, 'stale'],
    ['finalizes a complete upload', 10, 10, 'finalized'],
  ] as const)(
    'never %s whose lock is held (a request has it); does once it is free',
    async (_what, length, offset, outcome) => {
      const id = await staged(length, offset, STALE + 60);
      const lock = await store.locker.acquire(id, 0);
      try {
        expect(await janitor.run()).toEqual(NOTHING);
        expect(await stagingEntries(id)).toEqual([id, `${id}.meta`].sort());
      } finally {
        await lock.release();
      }
      expect(await janitor.run()).toEqual({ ...NOTHING, [outcome]: 1 });
      expect(await stagingEntries(id)).toEqual([]);
      expect(await completedEntries(id)).toEqual(
        outcome === 'finalized' ? [id, `${id}.meta`].sort() : [],
      );
    },
  );

  it('removes a record whose data is gone, but not one young enough to be a creation', async () => {
    const orphan = await staged(100, 40, 120, { data: false });
    const young = await staged(100, 0, 0, { data: false });
    expect(await janitor.run()).toEqual({ ...NOTHING, orphanedRecords: 1 });
    expect(await stagingEntries(orphan)).toEqual([]);
    expect(await stagingEntries(young)).toEqual([`${young}.meta`]);
  });

  it('removes data without a record older than orphanAge, keeps a young one', async () => {
    const old = await staged(100, 0, ORPHAN + 60, { record: false });
    const young = await staged(100, 0, ORPHAN - 60, { record: false });
    expect(await janitor.run()).toEqual({ ...NOTHING, orphanedData: 1 });
    expect(await stagingEntries(old)).toEqual([]);
    expect(await stagingEntries(young)).toEqual([young]);
  });

  it('deletes a finished upload older than completedFileAge unless a consumer holds it', async () => {
    const held = await completed('held', COMPLETED + 60);
    const claim = await queue.waitForFile({ timeout: 1000 });
    expect(claim.name).toBe(held);
    const unclaimed = await completed('nobody', COMPLETED + 60);
    const recent = await completed('recent', COMPLETED - 60);
    try {
      expect(await janitor.run()).toEqual({ ...NOTHING, expiredCompleted: 1 });
      expect(await completedEntries(unclaimed)).toEqual([]);
      // The held upload keeps its data and record (a receipt beside them does not matter).
      expect((await completedEntries(held)).filter((n) => !n.endsWith('.done'))).toEqual(
        [held, `${held}.meta`].sort(),
      );
      expect(await completedEntries(recent)).toEqual([recent, `${recent}.meta`].sort());
      expect(await readFile(claim.path, 'utf8')).toBe('held');
    } finally {
      await claim.release();
    }
    expect(await queue.lookup(unclaimed)).toBeNull();
    // The consumer released it: only its receipt is left, young, so it stays.
    expect(await completedEntries(held)).toEqual([`${held}.done`]);
    expect(await janitor.run()).toEqual(NOTHING);
    expect(await completedEntries(held)).toEqual([`${held}.done`]);
  });

  it('lets receipts of taken uploads expire after completedFileAge', async () => {
    const old = await completed('old', 0);
    const young = await completed('young', 0);
    for (let i = 0; i < 2; i++) {
      const upload = await queue.waitForFile({ timeout: 1000 });
      await upload.release();
    }
    await age(join(completedDir, `${old}.done`), COMPLETED + 60);
    await age(join(completedDir, `${young}.done`), COMPLETED - 60);
    expect(await queue.lookup(old)).not.toBeNull();
    await janitor.run();
    expect(await completedEntries(old)).toEqual([]);
    expect(await queue.lookup(old)).toBeNull();
    expect(await completedEntries(young)).toEqual([`${young}.done`]);
    expect((await queue.lookup(young))?.offset).toBe(5);
  });

  it('removes temp files a crash left in the completed directory (a record, copied bytes)', async () => {
    const oldCopy = join(completedDir, `.${randomUUID()}.0123456789ab.tmp`);
    const youngCopy = join(completedDir, `.${randomUUID()}.ba9876543210.tmp`);
    await mkdir(completedDir, { recursive: true });
    await writeFile(oldCopy, 'half of an upload');
    await writeFile(youngCopy, 'being copied now');
    await age(oldCopy, ORPHAN + 60);
    await age(youngCopy, ORPHAN - 60);
    expect(await janitor.run()).toEqual({ ...NOTHING, tempFiles: 1 });
    expect(existsSync(oldCopy)).toBe(false);
    expect(existsSync(youngCopy)).toBe(true);
  });

  it('removes temp files of interrupted record writes older than orphanAge, keeps young ones', async () => {
    const oldTemp = join(uploadDir, '.x.meta.0123456789ab.tmp');
    const youngTemp = join(uploadDir, '.y.meta.ba9876543210.tmp');
    await writeFile(oldTemp, '{"length":');
    await writeFile(youngTemp, '{"length":');
    await age(oldTemp, ORPHAN + 60);
    await age(youngTemp, ORPHAN - 60);
    expect(await janitor.run()).toEqual({ ...NOTHING, tempFiles: 1 });
    expect(existsSync(oldTemp)).toBe(false);
    expect(existsSync(youngTemp)).toBe(true);
  });

  it('returns the counts of one run over every case at once', async () => {
    const zombie = await staged(3, 3, 10);
    const stale = await staged(9, 2, STALE + 60);
    const live = await staged(9, 2, 10);
    const orphanRecord = await staged(9, 2, 120, { data: false });
    const orphanData = await staged(9, 0, ORPHAN + 60, { record: false });
    const expired = await completed('gone', COMPLETED + 60);
    const temp = join(uploadDir, '.z.meta.00112233aabb.tmp');
    await writeFile(temp, '');
    await age(temp, ORPHAN + 60);

    expect(await janitor.run()).toEqual({
      finalized: 1,
      stale: 1,
      orphanedRecords: 1,
      orphanedData: 1,
      expiredCompleted: 1,
      tempFiles: 1,
      lapsedPromises: 0,
    });
    expect((await readdir(uploadDir)).sort()).toEqual([live, `${live}.meta`].sort());
    expect((await readdir(completedDir)).sort()).toEqual([zombie, `${zombie}.meta`].sort());
    for (const id of [stale, orphanRecord, orphanData, expired]) {
      expect(await queue.lookup(id)).toBeNull();
    }
    // Nothing left to do.
    expect(await janitor.run()).toEqual(NOTHING);
  });

  it('joins a run already under way: two calls, one run, one result', async () => {
    const stale = await staged(9, 2, STALE + 60);
    await staged(3, 3, 10);
    const first = janitor.run();
    const second = janitor.run();
    expect(second).toBe(first);
    const [a, b] = await Promise.all([first, second]);
    expect(a).toBe(b);
    expect(a).toEqual({ ...NOTHING, stale: 1, finalized: 1 });
    expect(await stagingEntries(stale)).toEqual([]);
    // Once it ended, the next call is a new run.
    const third = janitor.run();
    expect(third).not.toBe(first);
    expect(await third).toEqual(NOTHING);
  });
});
