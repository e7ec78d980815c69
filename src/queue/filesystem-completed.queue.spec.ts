import { afterEach, beforeEach, describe, expect, it } from '@jest/globals';
import { getEventListeners } from 'node:events';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { UploadRecord } from '../core/upload-record.js';
import { tryLockFile } from '../storage/file-lock.js';
import { FileUploadLocker } from '../storage/file-upload.locker.js';
import { UnsafeFileError } from '../storage/storage.interfaces.js';
import { AbortError, TimeoutError } from './completed-upload.queue.js';
import { FilesystemCompletedQueue } from './filesystem-completed.queue.js';

let root: string;
let staging: string;
let completed: string;
let queue: FilesystemCompletedQueue;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'tussi-queue-'));
  staging = join(root, 'uploads');
  completed = join(root, 'completed');
  queue = new FilesystemCompletedQueue({
    directory: completed,
    stagingDirectory: staging,
    pollIntervalMs: 200,
    log: () => {},
  });
});

afterEach(async () => {
  await queue.close();
  await rm(root, { recursive: true, force: true });
});

/** A finished upload in staging, handed to the queue as the server does. */
async function finish(content: string, metadata: Record<string, string> = {}): Promise<string> {
  const id = randomUUID();
  await writeFile(join(staging, id), content);
  const record = new UploadRecord(content.length, content.length, metadata, { user: 'u1' });
  record.finishedAt = new Date();
  record.duration = 1.5;
  await queue.enqueue(id, record);
  return id;
}

describe('FilesystemCompletedQueue', () => {
  it('moves record then data into the completed directory and hands it to a waiter', async () => {
    const id = await finish('hello', { filename: 'a.txt' });
    expect(existsSync(join(staging, id))).toBe(false);
    expect(JSON.parse(await readFile(join(completed, `${id}.meta`), 'utf8'))).toMatchObject({
      length: 5,
      offset: 5,
      metadata: { filename: 'a.txt' },
      server_metadata: { user: 'u1' },
      duration: 1.5,
    });
    const upload = await queue.waitForFile({ timeout: 1000 });
    expect(upload.name).toBe(id);
    expect(upload.record.metadata.filename).toBe('a.txt');
    expect(upload.record.serverMetadata.user).toBe('u1');
    expect(upload.record.finishedAt).toBeInstanceOf(Date);
    expect(await readFile(upload.path, 'utf8')).toBe('hello');
    await upload.release();
  });

  it('wakes a waiter that was already waiting when the upload finishes', async () => {
    const waiting = queue.waitForFile({ timeout: 5000 });
    const id = await finish('late');
    expect((await waiting).name).toBe(id);
    await (await waiting).release();
  });

  it('hands each upload to one claimer only while it is held', async () => {
    const id = await finish('once');
    const first = await queue.waitForFile({ timeout: 1000 });
    expect(first.name).toBe(id);
    await expect(queue.waitForFile({ timeout: 300 })).rejects.toBeInstanceOf(TimeoutError);
    await first.release();
    await expect(queue.waitForFile({ timeout: 300 })).rejects.toBeInstanceOf(TimeoutError);
  });

  it('says where its bytes are and streams them without moving them; never a planted symlink', async () => {
    const id = await finish('streamed bytes');
    const upload = await queue.waitForFile({ timeout: 1000 });
    expect(upload.location).toEqual({ kind: 'file', path: join(completed, id) });
    const read = async () => {
      const chunks: Buffer[] = [];
      for await (const chunk of await upload.stream()) chunks.push(chunk as Buffer);
      return Buffer.concat(chunks).toString();
    };
    expect(await read()).toBe('streamed bytes');
    expect(await read()).toBe('streamed bytes');
    // Something planted in its place is never followed.
    await writeFile(join(root, 'secret'), 'outside');
    await rm(join(completed, id));
    await symlink(join(root, 'secret'), join(completed, id));
    await expect(upload.stream()).rejects.toBeInstanceOf(UnsafeFileError);
    await rm(join(completed, id));
    await upload.release();
    await expect(upload.stream()).rejects.toThrow(/released/);
  });

  it('save moves the data file, saveRecord the record; each only once', async () => {
    await finish('payload');
    const dest = join(root, 'dest');
    await mkdir(dest);
    const upload = await queue.waitForFile({ timeout: 1000 });
    await upload.save(join(dest, 'file.bin'));
    await upload.saveRecord(join(dest, 'file.bin.meta'));
    await expect(upload.save(join(dest, 'again'))).rejects.toThrow(/already/);
    await expect(upload.saveRecord(join(dest, 'again'))).rejects.toThrow(/already/);
    expect(await readFile(join(dest, 'file.bin'), 'utf8')).toBe('payload');
    const saved = await UploadRecord.fromFile(join(dest, 'file.bin.meta'));
    expect(saved.length).toBe(7);
    expect(saved.duration).toBe(1.5);
    await upload.release();
    await expect(upload.save(join(dest, 'x'))).rejects.toThrow(/released/);
  });

  it('release deletes what is left and keeps a receipt that lookup reads', async () => {
    const id = await finish('bytes');
    {
      await using upload = await queue.waitForFile({ timeout: 1000 });
      expect(upload.name).toBe(id);
    }
    const left = await readdir(completed);
    expect(left).not.toContain(id);
    expect(left).not.toContain(`${id}.meta`);
    const receipt = await queue.lookup(id);
    expect(receipt?.offset).toBe(5);
    expect(receipt?.length).toBe(5);
    expect(await queue.lookup(randomUUID())).toBeNull();
  });

  it('a waiter is woken by the directory watch when another process enqueues (no poll)', async () => {
    // `queue` stands for the server that finishes uploads; this one for a consumer elsewhere,
    // whose poll is far too slow to be what delivers.
    const consumer = new FilesystemCompletedQueue({
      directory: completed,
      stagingDirectory: staging,
      pollIntervalMs: 60_000,
      log: () => {},
    });
    try {
      const started = Date.now();
      const waiting = consumer.waitForFile({ timeout: 20_000 });
      await new Promise((r) => setTimeout(r, 100));
      const id = await finish('from elsewhere');
      await using upload = await waiting;
      expect(upload.name).toBe(id);
      expect(Date.now() - started).toBeLessThan(10_000);
    } finally {
      await consumer.close();
    }
  });

  it('release removes only what the consumer did not move out (a failed move stays)', async () => {
    const id = await finish('moved');
    const dest = join(root, 'dest-left');
    await mkdir(dest, { recursive: true });
    {
      await using upload = await queue.waitForFile({ timeout: 1000 });
      expect(upload.leftInQueue).toEqual([upload.path, upload.recordPath]);
      await expect(upload.save(join(root, 'no-such-dir', id))).rejects.toMatchObject({
        code: 'ENOENT',
      });
      expect(upload.leftInQueue).toEqual([upload.path, upload.recordPath]);
      await upload.saveRecord(join(dest, `${id}.meta`));
      expect(upload.leftInQueue).toEqual([upload.path]);
    }
    expect(await readdir(dest)).toEqual([`${id}.meta`]);
    const left = await readdir(completed);
    expect(left).not.toContain(id);
    expect(left).not.toContain(`${id}.meta`);
  });

  it('the receipt keeps client metadata (values kept as sent too) and drops server metadata', async () => {
    const id = randomUUID();
    await writeFile(join(staging, id), 'abc');
    const record = new UploadRecord(3, 3, { filename: 'k.bin', key: '\ufffd' }, { user: 'u1' });
    record.encodedMetadata = { key: '/w==' };
    record.finishedAt = new Date();
    await queue.enqueue(id, record);
    {
      await using upload = await queue.waitForFile({ timeout: 1000 });
      expect(upload.record.encodedMetadata).toEqual({ key: '/w==' });
    }
    const receipt = await queue.lookup(id);
    expect(receipt?.metadata).toEqual({ filename: 'k.bin', key: '\ufffd' });
    expect(receipt?.encodedMetadata).toEqual({ key: '/w==' });
    expect(receipt?.serverMetadata).toEqual({});
    expect(receipt?.finishedAt?.getTime()).toBe(record.finishedAt.getTime());
  });

  it('withFile releases even when the work throws', async () => {
    const id = await finish('x');
    await expect(
      queue.withFile(async () => Promise.reject(new Error('boom')), { timeout: 1000 }),
    ).rejects.toThrow('boom');
    expect(existsSync(join(completed, id))).toBe(false);
  });

  it('rejects with TimeoutError after the timeout', async () => {
    const started = Date.now();
    await expect(queue.waitForFile({ timeout: 250 })).rejects.toBeInstanceOf(TimeoutError);
    expect(Date.now() - started).toBeGreaterThanOrEqual(240);
  });

  it('rejects with AbortError when the signal fires or the queue closes', async () => {
    const controller = new AbortController();
    const aborted = queue.waitForFile({ signal: controller.signal });
    controller.abort();
    await expect(aborted).rejects.toBeInstanceOf(AbortError);
    const closed = queue.waitForFile();
    await queue.close();
    await expect(closed).rejects.toBeInstanceOf(AbortError);
  });

  it("leaves nothing behind on a consumer's long-lived signal, however many waits end", async () => {
    const stop = new AbortController();
    for (let i = 0; i < 200; i++) {
      await expect(queue.waitForFile({ signal: stop.signal, timeout: 0 })).rejects.toBeInstanceOf(
        TimeoutError,
      );
    }
    expect(getEventListeners(stop.signal, 'abort')).toHaveLength(0);
    // Nor in Node's own bookkeeping of signals that follow it (AbortSignal.any keeps a WeakRef
    // per follower there for as long as the source lives).
    const sets = Object.getOwnPropertySymbols(stop.signal)
      .map((key) => (stop.signal as unknown as Record<symbol, unknown>)[key])
      .filter(
        (value): value is Set<unknown> =>
          typeof (value as Set<unknown> | null)?.size === 'number' &&
          typeof (value as Set<unknown>).has === 'function',
      );
    for (const set of sets) expect(set.size).toBeLessThan(10);
    // Still stops a wait under way.
    const waiting = queue.waitForFile({ signal: stop.signal });
    stop.abort();
    await expect(waiting).rejects.toBeInstanceOf(AbortError);
  });

  it('quarantines an unreadable record instead of deleting it', async () => {
    const id = randomUUID();
    await writeFile(join(completed, id), 'data');
    await writeFile(join(completed, `${id}.meta`), '{ not json');
    await expect(queue.waitForFile({ timeout: 300 })).rejects.toBeInstanceOf(TimeoutError);
    const quarantined = await readdir(join(completed, '.quarantine'));
    expect(quarantined.sort()).toEqual([id, `${id}.meta`].sort());
  });

  it('skips an upload another holder has locked, and never a data file without its record', async () => {
    const held = await finish('held');
    const lock = await tryLockFile(join(completed, held));
    const orphan = randomUUID();
    await writeFile(join(completed, orphan), 'no record yet');
    await expect(queue.waitForFile({ timeout: 300 })).rejects.toBeInstanceOf(TimeoutError);
    await lock!.release();
    const upload = await queue.waitForFile({ timeout: 1000 });
    expect(upload.name).toBe(held);
    await upload.release();
  });
});

describe('FilesystemCompletedQueue: uploads finished by this process', () => {
  /** Finishes an upload as a request does: under its file lock, offered to the queue. */
  async function finishUnderLock(content: string): Promise<string> {
    const id = randomUUID();
    await writeFile(join(staging, id), content);
    const locker = new FileUploadLocker((name) => join(staging, name));
    const lock = await locker.acquire(id, 1000);
    const record = new UploadRecord(content.length, content.length, { filename: 'f.txt' });
    record.finishedAt = new Date();
    await queue.enqueue(id, record, { path: join(staging, id) }, () => lock.detachFile!());
    await lock.release();
    return id;
  }
  /** Another process's view of the queue (flock is per open file: its own descriptors). */
  const otherProcess = () =>
    new FilesystemCompletedQueue({ directory: completed, pollIntervalMs: 50, log: () => {} });
  /** A consumer of this process that just finished a delivery (or waited in vain). */
  const consumerHere = () =>
    expect(queue.waitForFile({ timeout: 1 })).rejects.toBeInstanceOf(TimeoutError);

  it("goes to this process's consumer with the request's lock as its claim: nobody else can take it between", async () => {
    await consumerHere();
    const id = await finishUnderLock('mine');
    // The request let go of its lock; the file is still held, for this process's consumer.
    expect(await tryLockFile(join(completed, id))).toBeNull();
    const other = otherProcess();
    try {
      await expect(other.waitForFile({ timeout: 200 })).rejects.toBeInstanceOf(TimeoutError);
      const upload = await queue.waitForFile({ timeout: 1000 });
      expect(upload.name).toBe(id);
      expect(upload.record.metadata.filename).toBe('f.txt');
      expect(await readFile(upload.path, 'utf8')).toBe('mine');
      await upload.release();
      expect(await readdir(completed)).toEqual([`${id}.done`]);
      await expect(other.waitForFile({ timeout: 200 })).rejects.toBeInstanceOf(TimeoutError);
    } finally {
      await other.close();
    }
  });

  it('with no consumer in this process the lock goes with the request, and any consumer takes it', async () => {
    const id = await finishUnderLock('theirs');
    const other = otherProcess();
    try {
      const upload = await other.waitForFile({ timeout: 1000 });
      expect(upload.name).toBe(id);
      await upload.release();
    } finally {
      await other.close();
    }
  });

  it('one this process does not take within a second is let go for any consumer', async () => {
    await consumerHere();
    const id = await finishUnderLock('late');
    const other = otherProcess();
    try {
      const started = Date.now();
      const upload = await other.waitForFile({ timeout: 5000 });
      expect(upload.name).toBe(id);
      expect(Date.now() - started).toBeGreaterThanOrEqual(800);
      await upload.release();
    } finally {
      await other.close();
    }
  });

  it("a backlog in the directory is not starved by a steady flow of this process's own", async () => {
    await consumerHere();
    const backlog = [await finish('old 1'), await finish('old 2'), await finish('old 3')];
    const claimed: string[] = [];
    for (let i = 0; i < 6; i++) {
      await finishUnderLock(`new ${i}`);
      const upload = await queue.waitForFile({ timeout: 1000 });
      claimed.push(upload.name);
      await upload.release();
    }
    expect(claimed.slice(0, 6)).toEqual(expect.arrayContaining(backlog));
  });

  it('a DELETE (remove) takes it with the claim this process holds; close lets go of the rest', async () => {
    await consumerHere();
    const removed = await finishUnderLock('gone');
    const kept = await finishUnderLock('kept');
    expect(await queue.remove(removed)).toBe('removed');
    expect(existsSync(join(completed, removed))).toBe(false);
    await queue.close();
    const lock = await tryLockFile(join(completed, kept));
    expect(lock).not.toBeNull();
    await lock!.release();
  });
});
