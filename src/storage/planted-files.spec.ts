import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { closeSync, constants, fstatSync, openSync, readSync, unlinkSync } from 'node:fs';
import {
  chmod,
  link,
  lstat,
  mkdir,
  mkdtemp,
  readFile,
  readdir,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { isUploadId } from '../protocol/headers.js';
import { UploadRecord } from '../core/upload-record.js';
import { TimeoutError } from '../queue/completed-upload.queue.js';
import { FilesystemCompletedQueue } from '../queue/filesystem-completed.queue.js';
import { moveFile, moveFilePortable } from '../queue/move-file.js';

/** Both ways of moving a file: the addon's one job (where built) and the fs calls. */
const MOVES = [
  ['moveFile', moveFile],
  ['moveFilePortable', moveFilePortable],
] as const;
import {
  mountTmpfs,
  probeMount,
  skipRootRequested,
  unmountQuietly,
} from '../../test/support/robust-http.js';
import {
  fingerprint,
  plantOutsideSecrets,
  type OutsideSecrets,
} from '../../test/support/planted.js';
import {
  TEMP_FILE,
  portable,
  readSmallFile,
  syncDirectory,
  writeFileAtomic,
} from './durable-file.js';
import { createReserved, createReservedPortable } from './fallocate.js';
import { portableLockAttempt, tryLockFile } from './file-lock.js';
import { FileUploadLocker } from './file-upload.locker.js';
import { FilesystemRecordStore } from './filesystem-record.store.js';
import { writeBody } from '../protocol/body-pump.js';
import { FilesystemStorage } from './filesystem.storage.js';
import { nativeAddon } from './native.js';
import {
  QUARANTINED,
  checkRegularFile,
  openRegularFile,
  openRegularFilePortable,
  quarantineFile,
} from './safe-file.js';
import { LockTargetMissingError, UnsafeFileError } from './storage.interfaces.js';

/**
 * Whoever can write to the upload or completed directory plants things where the server
 * expects its own files: a symlink to a file elsewhere, a FIFO, a directory, a hard link to a
 * file elsewhere, a socket. Each must be refused (never followed, never waited on), the file
 * elsewhere left exactly as it was, and the entry moved aside with one log line.
 */

let root: string;
/** Outside every directory the server works in: secrets the server must never read or write. */
let planted: OutsideSecrets;
let secret: string;
let secretRecord: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'tussi-planted-'));
  planted = await plantOutsideSecrets('tussi-outside-');
  ({ secret, secretRecord } = planted);
});
afterAll(async () => {
  await releaseFifos(root);
  await rm(root, { recursive: true, force: true });
  await planted.dispose();
});

const servers: Server[] = [];
afterEach(async () => {
  for (const server of servers.splice(0)) await new Promise((done) => server.close(done));
});

/** What an attacker plants under a name, and the code an open of it is refused with. */
const PLANTS: [string, (path: string) => Promise<void>, string][] = [
  ['a symlink to a file outside', (p) => symlink(secret, p), 'ELOOP'],
  ['a FIFO', async (p) => void execFileSync('mkfifo', [p]), 'EFTYPE'],
  ['a directory', (p) => mkdir(p), 'EISDIR'],
  ['a hard link to a file outside', (p) => link(secret, p), 'EMLINK'],
  [
    'a unix socket',
    (p) =>
      new Promise<void>((resolve, reject) => {
        const server = createServer();
        servers.push(server);
        server.once('error', reject);
        server.listen(p, resolve);
      }),
    'ENXIO',
  ],
];

/**
 * Opens every FIFO under `dir` for reading and writing without blocking, and closes it: an
 * open of one blocked in the threadpool (the bug these tests catch) returns, so a failing test
 * fails instead of holding the process.
 */
async function releaseFifos(dir: string): Promise<void> {
  for (const entry of await readdir(dir, { recursive: true }).catch(() => [] as string[])) {
    const path = join(dir, entry);
    if ((await lstat(path).catch(() => null))?.isFIFO()) {
      closeSync(openSync(path, constants.O_RDWR | constants.O_NONBLOCK));
    }
  }
}

/** `work`, or a failure if it has not settled within `ms` (a FIFO waited on). */
async function bounded<T>(work: Promise<T>, ms = 3000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      void releaseFifos(root);
      reject(new Error(`no answer within ${ms} ms: something waited on a FIFO`));
    }, ms);
  });
  try {
    return await Promise.race([work, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** The entries of `dir` moved aside as quarantined. */
async function quarantined(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((name) => QUARANTINED.test(name));
}

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(root, 'case-'));
});

it('the native addon is the one tested beside the pure-Node path', () => {
  expect(nativeAddon).not.toBeNull();
});

// The native addon (one threadpool job) and the pure-Node path must refuse alike, errors included.
describe.each([
  [
    'native',
    {
      open: openRegularFile,
      readSmallFile,
      lockAttempt: undefined,
      create: createReserved,
      writeFileAtomic,
    },
  ],
  [
    'portable',
    {
      open: openRegularFilePortable,
      readSmallFile: portable.readSmallFile,
      lockAttempt: portableLockAttempt,
      create: createReservedPortable,
      writeFileAtomic: portable.writeFileAtomic,
    },
  ],
])('%s', (_label, impl) => {
  describe.each(PLANTS)('%s planted', (_name, plant, code) => {
    let path: string;
    let before: Awaited<ReturnType<typeof fingerprint>>;
    beforeEach(async () => {
      path = join(dir, randomUUID());
      await plant(path);
      before = await fingerprint(secret);
    });
    afterEach(async () => {
      expect(await fingerprint(secret)).toEqual(before);
    });

    it(`is refused by an open for reading or writing (${code}), at once`, async () => {
      for (const writable of [false, true]) {
        // A directory opened for writing is EISDIR from open(2) itself.
        await expect(bounded(impl.open(path, writable))).rejects.toMatchObject({
          code,
          syscall: 'open',
          path,
        });
      }
    });

    it(`is not read as a record (${code})`, async () => {
      await expect(bounded(impl.readSmallFile(path))).rejects.toMatchObject({ code, path });
    });

    it('is never locked: moved aside with one log line, and reported missing', async () => {
      const log: string[] = [];
      await expect(
        bounded(tryLockFile(path, impl.lockAttempt, (m) => log.push(m))),
      ).rejects.toBeInstanceOf(LockTargetMissingError);
      expect(log).toHaveLength(1);
      expect(log[0]).toContain(path);
      expect(log[0]).toContain(code);
      const aside = await quarantined(dir);
      expect(aside).toHaveLength(1);
      await expect(lstat(path)).rejects.toMatchObject({ code: 'ENOENT' });
    });

    it('is never replaced by a creation (EEXIST)', async () => {
      await expect(bounded(impl.create(path, dir, 10, false, () => {}))).rejects.toMatchObject({
        code: 'EEXIST',
      });
    });

    it('is replaced, never followed, by an atomic write (a directory only with a log)', async () => {
      const log: string[] = [];
      if (code === 'EISDIR') {
        await expect(impl.writeFileAtomic(path, 'record', false)).rejects.toMatchObject({
          code: expect.stringMatching(/^(EISDIR|ENOTEMPTY|EEXIST)$/),
        });
        expect(await quarantined(dir)).toEqual([]);
      }
      await bounded(impl.writeFileAtomic(path, 'record', false, { log: (m) => log.push(m) }));
      const info = await lstat(path);
      expect(info.isFile()).toBe(true);
      expect(info.nlink).toBe(1);
      expect(info.mode & 0o777).toBe(0o600);
      expect(await readFile(path, 'utf8')).toBe('record');
      expect(log).toHaveLength(code === 'EISDIR' ? 1 : 0);
    });
  });

  it('errors are those of the other implementation', async () => {
    // Compared with the native addon's in the 'native' run, on fresh plants.
    for (const [, plant] of PLANTS) {
      const path = join(dir, randomUUID());
      await plant(path);
      const shape = (e: unknown) => {
        const { code, errno, syscall, path: where } = e as NodeJS.ErrnoException;
        return { code, errno, syscall, path: where, message: (e as Error).message };
      };
      const mine = await bounded(impl.open(path, false)).then(() => null, shape);
      const other = await bounded(
        (impl.open === openRegularFile ? openRegularFilePortable : openRegularFile)(path, false),
      ).then(() => null, shape);
      expect(mine).not.toBeNull();
      expect(mine).toEqual(other);
    }
  });

  it('opens a regular file of its own, with O_NONBLOCK of no consequence to its I/O', async () => {
    const path = join(dir, 'regular');
    await writeFile(path, 'data');
    const fd = await impl.open(path, true);
    try {
      expect((await stat(path)).nlink).toBe(1);
      expect(readFileSyncFd(fd)).toBe('data');
    } finally {
      closeSync(fd);
    }
  });

  it('creates files 0600 by default, and with the mode asked', async () => {
    await impl.create(join(dir, 'default'), dir, 10, false, () => {});
    await impl.create(join(dir, 'widened'), dir, 10, false, () => {}, 0o640);
    await impl.writeFileAtomic(join(dir, 'record-default'), 'x', false);
    await impl.writeFileAtomic(join(dir, 'record-widened'), 'x', false, { mode: 0o640 });
    const mode = async (name: string) => (await stat(join(dir, name))).mode & 0o777;
    expect(await mode('default')).toBe(0o600);
    expect(await mode('record-default')).toBe(0o600);
    // Under the usual umask (022) the asked mode is kept whole.
    expect(await mode('widened')).toBe(0o640 & ~process.umask());
    expect(await mode('record-widened')).toBe(0o640 & ~process.umask());
  });
});

function readFileSyncFd(fd: number): string {
  const buffer = Buffer.alloc(64);
  const n = readSync(fd, buffer, 0, buffer.length, 0);
  return buffer.toString('utf8', 0, n);
}

it('a file with no link left (replaced by a rename after it was opened) is still accepted', async () => {
  // A HEAD that opened a record a PATCH replaces right after must still read it, not refuse it.
  const path = join(dir, 'record.meta');
  await writeFile(path, 'old');
  const fd = openSync(path, 'r');
  try {
    unlinkSync(path);
    expect(() => checkRegularFile(fstatSync(fd), path)).not.toThrow();
  } finally {
    closeSync(fd);
  }
});

it('a symlink to a record-shaped file outside is not answered from', async () => {
  const log: string[] = [];
  const records = new FilesystemRecordStore(dir, false, { log: (m) => log.push(m) });
  const id = randomUUID();
  await symlink(secretRecord, records.pathOf(id));
  // Followed, it would be an upload of 100 bytes at offset 42.
  expect(await records.get(id)).toBeNull();
  expect(log).toEqual([expect.stringContaining(secretRecord)]);
});

describe('quarantineFile', () => {
  it('moves the entry aside under a name no sweep of the server matches, with one line', async () => {
    const path = join(dir, randomUUID());
    await symlink(secret, path);
    const log: string[] = [];
    await quarantineFile(path, Object.assign(new Error('x'), { code: 'ELOOP' }), (m) =>
      log.push(m),
    );
    const [aside] = await quarantined(dir);
    expect((await lstat(join(dir, aside))).isSymbolicLink()).toBe(true);
    expect(isUploadId(aside)).toBe(false);
    expect(TEMP_FILE.test(aside)).toBe(false);
    expect(aside.endsWith('.meta')).toBe(false);
    expect(log).toEqual([expect.stringContaining(`a symbolic link to ${secret}`)]);
    // Gone already (another request moved it aside): nothing more to say.
    await quarantineFile(path, new Error('x'), (m) => log.push(m));
    expect(log).toHaveLength(1);
  });
});

describe.each(PLANTS)('the filesystem components with %s planted', (_name, plant, code) => {
  let before: Awaited<ReturnType<typeof fingerprint>>;
  let log: string[];
  let storage: FilesystemStorage;
  let id: string;
  beforeEach(async () => {
    log = [];
    storage = new FilesystemStorage({ directory: dir, fsync: false, log: (m) => log.push(m) });
    id = randomUUID();
  });
  const planted = async (path: string) => {
    await plant(path);
    before = await fingerprint(secret);
  };
  afterEach(async () => {
    expect(await fingerprint(secret)).toEqual(before);
  });

  it('storage: a write, a read, an allocation, a truncation are refused and the entry moved aside', async () => {
    const operations: [string, () => Promise<unknown>][] = [
      [
        'write',
        () =>
          writeBody(storage, id, 0, Readable.from([Buffer.from('overwrite')]), {
            limit: 9,
            idleTimeoutMs: 0,
          }),
      ],
      [
        'read',
        () =>
          new Promise((resolve, reject) =>
            storage.read(id, 0, 5).on('error', reject).on('data', resolve).on('end', resolve),
          ),
      ],
      ['truncate', () => storage.truncate(id, 0)],
    ];
    for (const [operation, run] of operations) {
      await planted(storage.pathOf(id));
      log.length = 0;
      await expect(bounded(run())).rejects.toBeInstanceOf(UnsafeFileError);
      expect({ operation, log }).toEqual({
        operation,
        log: [expect.stringContaining(`refused ${storage.pathOf(id)}`)],
      });
      await expect(lstat(storage.pathOf(id))).rejects.toMatchObject({ code: 'ENOENT' });
    }
    expect(await quarantined(dir)).toHaveLength(operations.length);
  });

  it('records: the record is taken as missing and moved aside', async () => {
    const records = new FilesystemRecordStore(dir, false, { log: (m) => log.push(m) });
    await planted(records.pathOf(id));
    expect(await bounded(records.get(id))).toBeNull();
    expect(log).toEqual([expect.stringContaining(code)]);
    expect(await quarantined(dir)).toHaveLength(1);
    // A new record is written as a file of its own.
    await records.put(id, new UploadRecord(5, 0));
    expect((await records.get(id))?.length).toBe(5);
    expect((await stat(records.pathOf(id))).mode & 0o777).toBe(0o600);
  });

  it('locker: the upload is reported missing, never locked', async () => {
    const locker = new FileUploadLocker((key) => join(dir, key), { log: (m) => log.push(m) });
    await planted(join(dir, id));
    await expect(bounded(locker.acquire(id, 100))).rejects.toBeInstanceOf(LockTargetMissingError);
    expect(log).toHaveLength(1);
    // The in-process part of the lock was given back.
    await storage.create(id, 1);
    await (await locker.acquire(id, 100)).release();
  });

  it.each(MOVES)(
    '%s: a planted source is refused and nothing reaches the destination',
    async (_label, move) => {
      const source = join(dir, 'source');
      await planted(source);
      const dest = join(dir, 'saved');
      await expect(bounded(move(source, dest, false))).rejects.toBeInstanceOf(UnsafeFileError);
      await expect(lstat(dest)).rejects.toMatchObject({ code: 'ENOENT' });
    },
  );

  it.each(MOVES)(
    '%s: whatever is planted at the destination is replaced (a directory refuses)',
    async (_label, move) => {
      const source = join(dir, 'source');
      await writeFile(source, 'the upload', { mode: 0o600 });
      const dest = join(dir, 'saved');
      await planted(dest);
      const moving = bounded(move(source, dest, false));
      if (code === 'EISDIR') {
        await expect(moving).rejects.toMatchObject({ code: expect.stringMatching(/^E/) });
        return;
      }
      await moving;
      expect(await readFile(dest, 'utf8')).toBe('the upload');
      expect((await lstat(dest)).isFile()).toBe(true);
    },
  );

  describe('completed queue', () => {
    let staging: string;
    let completed: string;
    let queue: FilesystemCompletedQueue;
    beforeEach(async () => {
      staging = join(dir, 'uploads');
      completed = join(dir, 'completed');
      queue = new FilesystemCompletedQueue({
        directory: completed,
        stagingDirectory: staging,
        fsync: false,
        pollIntervalMs: 50,
        log: (m) => log.push(m),
      });
    });
    afterEach(async () => {
      await queue.close();
    });

    it('enqueue refuses planted staging data: nothing is handed out, the record taken back', async () => {
      await planted(join(staging, id));
      await expect(bounded(queue.enqueue(id, new UploadRecord(3, 3)))).rejects.toBeInstanceOf(
        UnsafeFileError,
      );
      expect(await readdir(completed)).toEqual([]);
      expect(log).toHaveLength(1);
      expect(await queue.lookup(id)).toBeNull();
    });

    it('enqueue replaces what is planted where the data and record go', async () => {
      await plant(join(completed, id));
      await planted(join(completed, `${id}.meta`));
      await writeFile(join(staging, id), 'abc', { mode: 0o600 });
      await bounded(queue.enqueue(id, new UploadRecord(3, 3)));
      expect(await readFile(join(completed, id), 'utf8')).toBe('abc');
      expect((await queue.lookup(id))?.length).toBe(3);
      await using upload = await queue.waitForFile({ timeout: 2000 });
      expect(upload.name).toBe(id);
    });

    it('a data file planted in the completed directory is never claimed, and moved aside', async () => {
      await writeFile(join(completed, `${id}.meta`), JSON.stringify(new UploadRecord(3, 3)));
      await planted(join(completed, id));
      await expect(bounded(queue.waitForFile({ timeout: 300 }))).rejects.toBeInstanceOf(
        TimeoutError,
      );
      expect(log).toEqual([expect.stringContaining(`refused ${join(completed, id)}`)]);
    });

    it('a planted record is not answered from, and moved aside', async () => {
      await planted(join(completed, `${id}.meta`));
      expect(await bounded(queue.lookup(id))).toBeNull();
      expect(log).toHaveLength(1);
    });
  });
});

describe('modes', () => {
  it('directories are created 0700 and files 0600 by default', async () => {
    const staging = join(dir, 'a', 'uploads');
    const completed = join(dir, 'a', 'completed');
    const storage = new FilesystemStorage({ directory: staging, fsync: false, log: () => {} });
    const records = new FilesystemRecordStore(staging, false);
    const queue = new FilesystemCompletedQueue({
      directory: completed,
      stagingDirectory: staging,
      fsync: false,
    });
    const id = randomUUID();
    await storage.create(id, 3);
    await records.put(id, new UploadRecord(3, 3));
    await queue.enqueue(id, new UploadRecord(3, 3));
    const upload = await queue.waitForFile({ timeout: 2000 });
    const saved = join(dir, 'saved');
    await upload.save(saved);
    await upload.saveRecord(`${saved}.meta`);
    await upload.release();
    await queue.close();
    const mode = async (path: string) => (await stat(path)).mode & 0o777;
    expect(await mode(join(dir, 'a'))).toBe(0o700);
    expect(await mode(staging)).toBe(0o700);
    expect(await mode(completed)).toBe(0o700);
    expect(await mode(records.pathOf(id))).toBe(0o600);
    expect(await mode(saved)).toBe(0o600);
    expect(await mode(`${saved}.meta`)).toBe(0o600);
    expect(await mode(join(completed, `${id}.done`))).toBe(0o600);
  });

  it.each(MOVES)('%s: save(dest, { mode }) sets the mode asked exactly', async (_label, move) => {
    const source = join(dir, 'source');
    await writeFile(source, 'x', { mode: 0o600 });
    await move(source, join(dir, 'saved'), false, { mode: 0o644 });
    expect((await stat(join(dir, 'saved'))).mode & 0o777).toBe(0o644);
  });
});

/** Why a tmpfs cannot be mounted here (null when it can). */
const noMount = await probeMount();

// Skipped (and counted as skipped) only when TUS_SKIP_ROOT_TESTS=1 asks; otherwise a missing
// mount fails the tests.
(noMount && skipRootRequested ? describe.skip : describe)(
  'moveFile across filesystems (a copy)',
  () => {
    let mount = '';
    beforeAll(async () => {
      if (noMount) throw new Error(`${noMount}: set TUS_SKIP_ROOT_TESTS=1 to skip these tests`);
      mount = await mountTmpfs('4m');
    });
    afterAll(async () => {
      if (mount) await unmountQuietly(mount);
    });

    it('copies the checked file into a new file of its own, mode kept, source removed', async () => {
      const source = join(dir, 'source');
      await writeFile(source, 'the upload', { mode: 0o600 });
      await chmod(source, 0o640);
      const dest = join(mount, 'saved');
      // A symlink planted at the destination is replaced, never written through.
      await symlink(secret, dest);
      const before = await fingerprint(secret);
      await moveFile(source, dest, true);
      expect(await fingerprint(secret)).toEqual(before);
      const info = await lstat(dest);
      expect(info.isFile()).toBe(true);
      expect(info.mode & 0o777).toBe(0o640);
      expect(await readFile(dest, 'utf8')).toBe('the upload');
      await expect(lstat(source)).rejects.toMatchObject({ code: 'ENOENT' });
      expect((await readdir(mount)).filter((n) => n.endsWith('.tmp'))).toEqual([]);
    });

    it('never copies a planted source', async () => {
      const source = join(dir, 'source');
      await symlink(secret, source);
      await expect(moveFile(source, join(mount, 'stolen'), true)).rejects.toBeInstanceOf(
        UnsafeFileError,
      );
      expect(await readdir(mount)).not.toContain('stolen');
    });

    it('syncDirectory refuses what is not a directory without waiting on it', async () => {
      const fifo = join(dir, 'fifo');
      execFileSync('mkfifo', [fifo]);
      await expect(bounded(syncDirectory(fifo))).rejects.toMatchObject({ code: 'ENOTDIR' });
      await expect(bounded(portable.syncDirectory(fifo))).rejects.toMatchObject({
        code: 'ENOTDIR',
      });
    });
  },
);
